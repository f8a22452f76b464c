from nra.cli import main

raise SystemExit(main())
