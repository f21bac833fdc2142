"""``python -m jobwire``: the ``jobwire`` console script."""

from __future__ import annotations

import sys

from jobwire.cli import main

if __name__ == "__main__":
    sys.exit(main())
