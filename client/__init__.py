"""jobwire's Python client: producers, the worker runtime, and admin calls.

::

    from client import Client, Worker

    async with Client("jobwire://127.0.0.1:7400") as client:
        job = await client.queue("emails").add("send", {"to": "ada@example.com"})

    async def send(job):                      # job.data == {"to": "ada@example.com"}
        ...
    await Worker("jobwire://127.0.0.1:7400", "emails", {"send": send}, concurrency=50).run()

The client speaks only the wire protocol (``protocol/``); it never touches broker internals.
"""

from client.connection import Connection
from client.context import JobContext
from client.endpoint import (
    DEFAULT_URL,
    ConnectionState,
    ConnectionStatistics,
    ServerInfo,
    parse_url,
)
from client.errors import (
    AmbiguousIdError,
    AuthenticationError,
    BrokerError,
    ConflictError,
    ConnectionClosedError,
    ConnectionLostError,
    DrainingError,
    JobFailed,
    JobwireError,
    JournalFailureError,
    NotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    RateLimited,
    RequestTimeoutError,
    Retry,
    StaleLeaseError,
    UnrecoverableError,
    WaitTimeoutError,
)
from client.events import WorkerStatistics
from client.job import Job, JobRecord
from client.operations import QueueLimits
from client.options import exponential, fixed
from client.queue import Client, Queue
from client.schedules import Scheduler
from client.serializers import JSON, MSGPACK, RAW, JsonSerializer, MsgpackSerializer, Serializer
from client.sync import SyncClient, SyncJob, SyncQueue
from client.watch import EventStream, JobEvent, QueueEvents
from client.worker import Worker
from protocol.model import JobState
from protocol.replies import JobInfo, JobPage, QueueStats

__all__ = [
    "DEFAULT_URL", "JSON", "MSGPACK", "RAW", "AmbiguousIdError", "AuthenticationError",
    "BrokerError", "Client",
    "ConflictError", "Connection", "ConnectionClosedError", "ConnectionLostError",
    "ConnectionState", "ConnectionStatistics", "DrainingError", "EventStream", "Job", "JobContext",
    "JobEvent", "JobFailed", "JobInfo", "JobPage", "JobRecord", "JobState", "JobwireError",
    "JournalFailureError", "JsonSerializer", "MsgpackSerializer", "NotFoundError",
    "PayloadTooLargeError", "Queue", "QueueEvents", "QueueFullError", "QueueLimits", "QueueStats",
    "RateLimited", "RequestTimeoutError", "Retry", "Scheduler", "Serializer", "ServerInfo",
    "StaleLeaseError",
    "SyncClient", "SyncJob", "SyncQueue", "UnrecoverableError", "WaitTimeoutError", "Worker",
    "WorkerStatistics", "exponential", "fixed", "parse_url",
]
