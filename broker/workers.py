"""Who is connected and what each connection does with jobs: the ``workers`` operation's table.

Theory of operation
-------------------
Each connection gets one ``WorkerInfo`` when its handshake succeeds (``WorkerTable.open``) and
loses it when it closes (``close``). The session keeps a reference to its own ``WorkerInfo`` and
updates it in place from the operations it handles (``reserve`` names queues, ``ack`` and
``fail`` count outcomes, every request moves ``last_seen``), so the per-request cost is an
attribute store, and the per-``reserve`` cost is one tuple comparison when a worker asks for the
same queues as last time (the usual long-poll loop). Jobs held are not counted here: the core
knows them (its owner map), and the caller passes them in when listing.

Invariants:

1. A connection is in the table from its successful handshake to its close, exactly once;
   listing order is the order connections were opened (oldest first).
2. ``queues`` keeps the most recently named queues, at most ``MAX_QUEUES`` (64, as many as one
   ``reserve`` may name), so a worker cycling through queue names cannot grow it.
3. Nothing here reads a clock: every update takes ``now`` (ms).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

MAX_QUEUES: Final = 64


class WorkerInfo:
    """One connection as the ``workers`` operation shows it (``docs/metrics-and-events.md``)."""

    __slots__ = ("_last_asked", "client", "completed", "conn_id", "connected_at", "failed",
                 "host", "last_seen", "queues", "reserved")

    def __init__(self, conn_id: int, client: str, host: str, now: int) -> None:
        self.conn_id = conn_id
        self.client = client
        self.host = host
        self.connected_at = now
        self.last_seen = now
        self.queues: dict[str, None] = {}
        """Queues named by its reserves, least recent first (an ordered set)."""
        self._last_asked: Sequence[str] = ()
        self.reserved = False
        """Whether it ever sent a ``reserve``: what makes a connection a worker."""
        self.completed = 0
        self.failed = 0

    def asked(self, queues: Sequence[str], now: int) -> None:
        """It sent a ``reserve`` naming ``queues`` (most preferred first)."""
        self.last_seen = now
        self.reserved = True
        if queues == self._last_asked:
            return
        self._last_asked = queues
        known = self.queues
        for queue in reversed(queues):  # the most preferred ends up most recent
            known.pop(queue, None)
            known[queue] = None
        while len(known) > MAX_QUEUES:
            del known[next(iter(known))]

    def to_wire(self, held: int) -> dict[str, Any]:
        """The Worker map; ``held`` is how many jobs are leased to it now."""
        return {
            "conn": self.conn_id,
            "client": self.client,
            "host": self.host,
            "queues": list(reversed(self.queues)),
            "held": held,
            "completed": self.completed,
            "failed": self.failed,
            "connected_at": self.connected_at,
            "last_seen": self.last_seen,
        }


class WorkerTable:
    """Every open connection's ``WorkerInfo``, in the order they opened."""

    __slots__ = ("_by_conn",)

    def __init__(self) -> None:
        self._by_conn: dict[int, WorkerInfo] = {}

    def __len__(self) -> int:
        return len(self._by_conn)

    def open(self, conn_id: int, client: str, host: str, now: int) -> WorkerInfo:
        """A connection finished its handshake.

        Raises:
            ValueError: ``conn_id`` is already open (a bug in the caller).
        """
        if conn_id in self._by_conn:
            raise ValueError(f"connection {conn_id} is already open")
        info = self._by_conn[conn_id] = WorkerInfo(conn_id, client, host, now)
        return info

    def close(self, conn_id: int) -> None:
        """A connection closed (idempotent)."""
        self._by_conn.pop(conn_id, None)

    def owner(self, conn_id: int) -> dict[str, Any]:
        """A lease holder as ``get`` shows it (SPEC §9.6 ``owner``): ``{conn, client, host}``,
        the last two ``None`` if the connection is no longer open."""
        info = self._by_conn.get(conn_id)
        if info is None:
            return {"conn": conn_id, "client": None, "host": None}
        return {"conn": conn_id, "client": info.client, "host": info.host}

    def page(
        self, *, include_all: bool, offset: int, limit: int, held: Callable[[int], int],
        max_bytes: int | None = None, size: Callable[[dict[str, Any]], int] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of Worker maps, oldest connection first, and how many match in all.

        Args:
            include_all: every connection, not only those that sent a ``reserve``.
            offset: matching connections to skip.
            limit: the most to return.
            held: jobs leased to a connection id now (the core's count).
            max_bytes: with ``size``, stop before the map that would pass this many bytes
                (always returning one).
            size: the encoded size of one map.
        """
        matching = [info for info in self._by_conn.values() if include_all or info.reserved]
        out: list[dict[str, Any]] = []
        used = 0
        for info in matching[offset:offset + limit]:
            body = info.to_wire(held(info.conn_id))
            if max_bytes is not None and size is not None:
                used += size(body)
                if out and used > max_bytes:
                    break
            out.append(body)
        return out, len(matching)
