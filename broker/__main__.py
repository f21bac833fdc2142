"""``python -m broker``: run the broker daemon, exactly as ``jobwire serve`` does."""

from __future__ import annotations

import sys

from broker.cli import main

if __name__ == "__main__":
    sys.exit(main())
