"""Python handlers for the Node interoperability tests (run by ``jobwire worker``).

``describe`` answers with the Python type of every value in the job's data, so the Node test can
check how JavaScript values arrive in Python, and echoes the data back so the return trip is
checked too.
"""

from __future__ import annotations

from typing import Any

from client import JobContext


def _type_names(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _type_names(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_type_names(item) for item in value]
    return type(value).__name__


async def describe(job: JobContext) -> dict[str, Any]:
    """Return the type names of the data's values and the data itself."""
    data = job.data
    echo = {key: item for key, item in data.items() if type(item).__name__ != "Timestamp"}
    return {"types": _type_names(data), "echo": echo, "attempt": job.attempt}


handlers = {"describe": describe}
