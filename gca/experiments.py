"""``python -m gca.experiments`` — the study's command line (:func:`gca.study.runner.main`).

The study itself lives in :mod:`gca.study`; this module only keeps the documented command working.
"""

import sys

from gca.study.runner import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
