"""Python producer for the Node interoperability tests.

``python produce.py URL QUEUE`` enqueues one ``inspect`` job whose data holds the Python values
of the mapping table in node/README.md, waits for a (Node) worker to finish it, and writes the
result's ``repr`` and the job id as JSON on stdout.
"""

from __future__ import annotations

import json
import sys

from client import SyncClient

DATA = {
    "int": 7,
    "big": 2**40,
    "huge": 2**60,
    "negative": -(2**40),
    "float": 1.5,
    "text": "héllo",
    "raw": b"\x00\x01\xff",
    "none": None,
    "flag": True,
    "items": [1, "two", 3.0],
    "nested": {"a": {"b": [None]}},
}


def main() -> int:
    url, queue = sys.argv[1], sys.argv[2]
    with SyncClient(url) as client:
        job = client.queue(queue).add("inspect", DATA, attempts=1)
        result = job.wait(timeout=30)
    sys.stdout.write(json.dumps({"id": job.id, "result": repr(result)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
