"""`python -m app` is the same as the `camelid` command."""

from app.cli import main

raise SystemExit(main())
