"""The limits of protocol version 1 and the field checks that enforce them. Sans-I/O.

A check takes a decoded value and the dotted path of its field (``"jobs[3].priority"``) and
returns the value, or raises ``BAD_ARGUMENT`` whose ``field`` is that path and whose message
starts with it. The broker parses strictly with these; the client trusts what the broker sends.
The broker may impose tighter limits than these; it says so in its ``hello`` reply.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final, TypeVar

from protocol.errors import bad_argument

_E = TypeVar("_E", bound=StrEnum)

Check = Callable[[Any, str], Any]
"""``check(value, field) -> value``: a field's strict check, raising ``BAD_ARGUMENT``."""

MAX_BATCH: Final = 10_000
"""Most items in one enqueue, ack, fail, extend or release request."""
MAX_NAME_LEN: Final = 200
"""Longest queue name, job name or job id, in characters."""
MAX_RESERVE_QUEUES: Final = 64
MAX_RESERVE_JOBS: Final = 1_000
MAX_WAIT_MS: Final = 600_000
MIN_LEASE_MS: Final = 100
MAX_LEASE_MS: Final = 86_400_000
MAX_DELAY_MS: Final = 10 * 365 * 86_400_000
MIN_TIMEOUT_MS: Final = 1
MAX_TIMEOUT_MS: Final = 7 * 86_400_000
"""A job's ``timeout_ms`` (one attempt's run time): 1 ms .. 7 days."""
MAX_ATTEMPTS: Final = 1_000_000
MAX_ERROR_LEN: Final = 65_536
"""Longest error text in a fail item, in characters."""
MAX_LIST_LIMIT: Final = 1_000
MAX_STATS_LIMIT: Final = 1_000
"""Most queues in one ``stats`` page (and its default)."""
MAX_VALUE_DEPTH: Final = 32
"""Deepest nesting allowed in a progress value."""
MAX_AUTH_TOKEN_LEN: Final = 4096
"""Longest auth token a ``hello`` carries (characters); the broker refuses a longer one at start."""
PRIORITY_MIN: Final = -(2**31)
PRIORITY_MAX: Final = 2**31 - 1
MAX_REQUEST_ID: Final = 2**32 - 1
MAX_TOKEN: Final = 2**64 - 1
MAX_TIME_MS: Final = 2**53
MAX_COUNT: Final = 2**31
"""Largest count a request may name (limits, offsets, retention counts)."""
MAX_RATE: Final = 1_000_000
"""Most job starts a queue's rate limit may allow per period."""
MIN_RATE_PERIOD_MS: Final = 1
MAX_RATE_PERIOD_MS: Final = 31 * 86_400_000
"""Longest rate-limit period: 31 days."""
MAX_CONCURRENCY: Final = 1_000_000
"""Largest concurrency limit of a queue."""
MIN_EVERY_MS: Final = 1
MAX_EVERY_MS: Final = 366 * 86_400_000
"""Longest period of a repeatable job (``every``): a leap year; longer is more likely a unit
mistake (use a cron pattern for yearly runs)."""
MAX_SCHEDULE_KEY_LEN: Final = 160
"""Longest scheduler key: its jobs' ids, ``repeat:<key>:<ms>``, stay within ``MAX_NAME_LEN``."""


def check_name(value: Any, field: str) -> str:
    """A queue name or job id: a str of 1..``MAX_NAME_LEN`` characters."""
    if type(value) is not str or not 0 < len(value) <= MAX_NAME_LEN:
        raise bad_argument(field, f"str of 1..{MAX_NAME_LEN} characters")
    return value


def check_token(value: Any, field: str) -> int:
    """A lease token: a uint64."""
    if type(value) is not int or not 0 <= value <= MAX_TOKEN:
        raise bad_argument(field, "uint64 lease token")
    return value


def text(max_len: int) -> Check:
    """A str of 0..``max_len`` characters."""

    def check(value: Any, field: str) -> str:
        if type(value) is not str or len(value) > max_len:
            raise bad_argument(field, f"str of 0..{max_len} characters")
        return value

    return check


def check_int(value: Any, field: str, low: int, high: int) -> int:
    """An int (not a bool) in ``low..high``."""
    if type(value) is not int or not low <= value <= high:
        raise bad_argument(field, f"int in {low}..{high}")
    return value


def int_in(low: int, high: int) -> Check:
    """``check_int`` with its bounds fixed, for a field declaration."""

    def check(value: Any, field: str) -> int:
        if type(value) is not int or not low <= value <= high:
            raise bad_argument(field, f"int in {low}..{high}")
        return value

    return check


def check_array(value: Any, field: str, max_items: int = MAX_BATCH) -> tuple[Any, ...]:
    """An array of 1..``max_items`` items (the decoder gives arrays as tuples)."""
    if type(value) is not tuple or not 0 < len(value) <= max_items:
        raise bad_argument(field, f"array of 1..{max_items} items")
    return value


def names(max_items: int = MAX_BATCH) -> Check:
    """An array of 1..``max_items`` names (queue names or job ids), each checked."""

    def check(value: Any, field: str) -> tuple[str, ...]:
        for i, name in enumerate(check_array(value, field, max_items)):
            if type(name) is not str or not 0 < len(name) <= MAX_NAME_LEN:
                check_name(name, f"{field}[{i}]")  # raises, naming the item
        return value  # type: ignore[no-any-return]  # checked item by item above

    return check


def check_enum(enum: type[_E], value: Any, field: str) -> _E:
    """One of ``enum``'s values, as that enum."""
    try:
        return enum(value)
    except ValueError:
        raise bad_argument(field, "one of " + ", ".join(e.value for e in enum)) from None


def check_value(value: Any, field: str, depth: int = 0) -> Any:
    """An arbitrary msgpack value (a progress value): str keys only, bounded depth."""
    if depth > MAX_VALUE_DEPTH:
        raise bad_argument(field, f"value nested at most {MAX_VALUE_DEPTH} deep")
    if type(value) is tuple or type(value) is list:
        for item in value:
            check_value(item, field, depth + 1)
    elif type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise bad_argument(field, "map with str keys")
            check_value(item, field, depth + 1)
    return value
