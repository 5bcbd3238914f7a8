"""Entry point of the frozen app: the same front door as the `camelid` command."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
