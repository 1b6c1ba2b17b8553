"""``python -m gca`` — the same command line as the ``gca`` console script (:mod:`gca.cli`)."""

import sys

from gca.cli import main

if __name__ == "__main__":
    sys.exit(main())
