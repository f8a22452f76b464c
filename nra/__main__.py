from nra import lazy_pyroute2

lazy_pyroute2.install()  # before anything imports pyroute2: a faster start

from nra.cli import main  # noqa: E402

raise SystemExit(main())
