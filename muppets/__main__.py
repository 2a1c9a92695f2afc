"""`python -m muppets` is the `muppets` command."""

from muppets.cli.main import main

raise SystemExit(main())
