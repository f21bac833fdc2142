"""Shared by the examples: the broker URL from ``--url`` or ``$JOBWIRE_URL``."""

from __future__ import annotations

import argparse
import os

DEFAULT_URL = "jobwire://127.0.0.1:7400"  # where `make serve` listens


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default=os.environ.get("JOBWIRE_URL") or DEFAULT_URL,
                        help=f"broker URL (default: $JOBWIRE_URL or {DEFAULT_URL})")
    return parser.parse_args()
