from nra import lazy_imports

lazy_imports.install()  # before anything imports pyroute2: a faster start

from nra.cli import main  # noqa: E402

raise SystemExit(main())
