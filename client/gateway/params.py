"""Path and query parameters of the REST routes, checked as the broker would check them."""

from __future__ import annotations

from starlette.requests import Request

from client.gateway.errors import GatewayError, bad_argument
from client.queue import Client
from protocol.checks import MAX_NAME_LEN
from protocol.errors import ErrorCode


def queue_param(request: Request) -> str:
    name: str = request.path_params["queue"]
    if not 0 < len(name) <= MAX_NAME_LEN:
        raise bad_argument("queue", f"a queue name of 1..{MAX_NAME_LEN} characters")
    return name


def job_param(request: Request) -> str:
    job_id: str = request.path_params["job_id"]
    if not 0 < len(job_id) <= MAX_NAME_LEN:
        raise bad_argument("job_id", f"a job id of 1..{MAX_NAME_LEN} characters")
    return job_id


def query_int(request: Request, key: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``low..high``."""
    text = request.query_params.get(key)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise bad_argument(key, f"an integer in {low}..{high}")
    return int(text)


async def require_queue(client: Client, name: str) -> None:
    """Refuse (404) a queue the broker does not know: a typo must not create a queue."""
    if name not in await client.stats():
        raise unknown_queue(name)


def unknown_queue(name: str) -> GatewayError:
    return GatewayError(ErrorCode.NOT_FOUND, f"no queue {name!r} (queues appear with their "
                        "first job)")
