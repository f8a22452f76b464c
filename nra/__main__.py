import os
import sys

from nra import lazy_imports

lazy_imports.install()  # before anything imports pyroute2: a faster start

from nra.cli import main  # noqa: E402

code = main()
# Every task and thread of the run has ended here. Python's own teardown would free every
# object one by one (0.25 s for a 100,000-prefix intent, a quarter of a ONESHOT at 10,000's
# budget); the kernel frees a process at once. Only the output buffers need flushing.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
