"""Job rows of the journal (schema 7, ``broker.schema``): ``Job`` -> ``(seq, record, crc)`` and
back.

A row's ``record`` is the job as one msgpack array of ``RECORD_FIELDS`` and its ``crc`` the
CRC-32 of those bytes. ``RowEncoder`` builds rows from live jobs (once per changed job per
commit: the journal's hot path); ``RowDecoder`` turns the rows of ``SELECT_JOBS`` back into jobs
at start-up, setting aside rows that fail a checksum; ``decode_record`` reads one record (for
tools and tests that look inside a journal).

Invariants: the encoder and the decoder use the ``RECORD_FIELDS`` order; a record's first field
is its row's ``seq``, so a record found under another rowid is damage like a failed checksum.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgpack

from broker.jobs import NO_OPTIONS, Job, JobOptions
from broker.schema import (
    RECORD_FIELDS,
    STATE_CODES,
    STATES,
    SchemaError,
    decode_options,
    encode_options,
)

_FIELDS: Final = len(RECORD_FIELDS)
_SEQ: Final = struct.Struct("<q")  # as ``broker.schema.payload_checksum`` packs the seq
_crc32 = zlib.crc32
_packb = msgpack.packb
_unpackb = msgpack.unpackb


def decode_record(record: bytes) -> dict[str, Any]:
    """A ``jobs`` row's ``record`` as ``{field: value}`` (``RECORD_FIELDS``; ``options`` and
    ``progress`` stay the msgpack bytes they are stored as).

    Raises:
        SchemaError: the bytes are not a record.
    """
    try:
        fields = _unpackb(record, raw=False, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SchemaError(f"not a job record: {exc}") from exc
    if not isinstance(fields, tuple) or len(fields) != _FIELDS:
        raise SchemaError(f"not a job record: {fields!r:.80}")
    return dict(zip(RECORD_FIELDS, fields, strict=True))


def _record_id(record: Any) -> Any:
    """The job id in a damaged record, if it can still be read (``None`` otherwise)."""
    try:
        fields = _unpackb(record, raw=False, use_list=False)
        return fields[1] if isinstance(fields, tuple) and isinstance(fields[1], str) else None
    except Exception:  # damage can make the bytes anything at all
        return None


class RowEncoder:
    """Builds ``jobs`` rows from live ``Job`` objects, caching the encoding of shared options.

    Jobs with equal overrides usually share one ``JobOptions`` instance, so the cache (bounded by
    ``max_cached``) turns option encoding into one dict lookup per job.
    """

    __slots__ = ("_cache", "_max_cached", "_pack")

    def __init__(self, max_cached: int = 1024) -> None:
        self._cache: dict[JobOptions, bytes | None] = {}
        self._max_cached = max_cached
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def _options(self, options: JobOptions) -> bytes | None:
        if options is NO_OPTIONS:
            return None
        try:
            return self._cache[options]
        except KeyError:
            encoded = encode_options(options)
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[options] = encoded
            return encoded

    def job_row(self, job: Job) -> tuple[int, bytearray, int]:
        """The row for ``job`` as it is now: ``(seq, record, crc)``."""
        progress = job.progress
        options = job.options
        seq = job.seq
        record: bytes = self._pack((
            seq,
            job.id,
            job.queue,
            job.name,
            job.priority,
            job.run_at,
            job.max_attempts,
            None if options is NO_OPTIONS else self._options(options),
            STATE_CODES[job.state],
            job.created_at,
            job.attempts,
            job.started_at,
            job.finished_at,
            None if progress is None else _packb(progress, use_bin_type=True),
            job.result,
            job.error,
        ))
        return seq, bytearray(record), _crc32(record)  # bytearray: see ``payload_row``

    @staticmethod
    def payload_row(job: Job) -> tuple[int, bytearray, int]:
        """The ``payloads`` row of ``job``: ``(seq, payload, crc)``.

        Blobs go to SQLite as ``bytearray``: ``sqlite3`` binds ``int``, ``float``, ``str`` and
        ``bytearray`` directly but sends every ``bytes`` value through its adaptation protocol
        first (a key tuple, a dict lookup, and a failed ``__adapt__`` lookup whose
        ``AttributeError`` message is formatted and dropped: ~2,500 instructions a value, measured
        with cachegrind), where the copy costs a few hundred.
        """
        seq = job.seq
        payload = job.payload
        return seq, bytearray(payload), _crc32(payload, _crc32(_SEQ.pack(seq)))


class RowDecoder:
    """Turns ``jobs`` rows back into ``Job`` objects, as fast as Python allows.

    Queue and handler names are shared (one ``str`` per distinct name, interned), and equal stored
    options decode to one shared ``JobOptions``, so a million loaded jobs cost no more memory than
    a million enqueued ones.

    Attributes:
        damaged: ``(seq, id)`` of each row that fails its checksum, whose record sits under
            another seq, or whose payload is missing or fails its own checksum (``id`` is
            ``None`` when the damaged record no longer says); such rows are not turned into
            jobs.
    """

    __slots__ = ("_names", "_options", "damaged")

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._options: dict[bytes, JobOptions] = {}
        self.damaged: list[tuple[Any, Any]] = []

    def _name(self, text: str) -> str:
        shared = sys.intern(text)
        self._names[shared] = shared
        return shared

    def _decode_options(self, data: bytes) -> JobOptions:
        options = self._options.get(data)
        if options is None:
            options = self._options[data] = decode_options(data)
        return options

    def jobs_from_rows(self, rows: Iterable[Sequence[Any]], out: list[Job]) -> None:
        """Append one ``Job`` per row (``SELECT_JOBS``: seq, record, crc, payload, payload crc)
        to ``out``; a damaged row goes to ``damaged`` instead.

        Raises:
            SchemaError: a record that passes its checksum is not a valid job (an unknown state
                code, unreadable options or progress, fields missing): written wrongly, not
                damaged.
        """
        names = self._names
        intern_name = self._name
        decode_options = self._decode_options
        states = STATES
        no_options = NO_OPTIONS
        unpackb = _unpackb
        append = out.append
        crc32 = _crc32
        seq_bytes = _SEQ.pack
        damaged = self.damaged
        # Jobs of one enqueue batch share their timestamps; share the int objects too, as the
        # core does for a batch it enqueues (64 bytes a job otherwise).
        last_created = last_run_at = -1
        for row_seq, record, crc, payload, payload_crc in rows:
            try:
                intact = crc32(record) == crc and payload is not None and (
                    crc32(payload, crc32(seq_bytes(row_seq))) == payload_crc)  # payload_checksum
            except TypeError:  # a record or payload that is not a BLOB
                intact = False
            if intact:
                try:
                    fields = unpackb(record, raw=False, use_list=False)
                except (ValueError, msgpack.UnpackException) as exc:
                    raise SchemaError(f"stored job {row_seq} is not a record: {exc}") from exc
                intact = type(fields) is tuple and len(fields) == _FIELDS and (
                    fields[0] == row_seq)
            if not intact:
                damaged.append((row_seq, _record_id(record)))
                continue
            (
                seq,
                job_id,
                queue,
                name,
                priority,
                run_at,
                max_attempts,
                options,
                state,
                created_at,
                attempts,
                started_at,
                finished_at,
                progress,
                result,
                error,
            ) = fields
            if created_at == last_created:
                created_at = last_created
            else:
                last_created = created_at
            if run_at == created_at:
                run_at = created_at
            elif run_at == last_run_at:
                run_at = last_run_at
            else:
                last_run_at = run_at
            try:
                shared_queue = names.get(queue)
                if shared_queue is None:
                    shared_queue = intern_name(queue)
                shared_name = names.get(name)
                if shared_name is None:
                    shared_name = intern_name(name)
                job = Job(
                    seq,
                    job_id,
                    shared_queue,
                    shared_name,
                    payload,
                    priority=priority,
                    run_at=run_at,
                    max_attempts=max_attempts,
                    options=no_options if options is None else decode_options(options),
                    state=states[state],
                    created_at=created_at,
                    attempts=attempts,
                    started_at=started_at,
                    finished_at=finished_at,
                    progress=None
                    if progress is None
                    else unpackb(progress, raw=False, use_list=False, strict_map_key=False),
                    result=result,
                    error=error,
                )
            except (IndexError, TypeError, ValueError, msgpack.UnpackException) as exc:
                raise SchemaError(f"stored job {job_id!r} is not valid: {exc}") from exc
            append(job)
