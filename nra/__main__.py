from nra import lazy_imports

lazy_imports.install()  # before anything imports pyroute2: a faster start

from nra.cli import entry  # noqa: E402

entry()
