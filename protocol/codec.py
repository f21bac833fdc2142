"""Framing: 4-byte big-endian length + one msgpack message. Sans-I/O.

Theory of operation
-------------------
The decoder owns a byte buffer. ``feed(data)`` appends bytes; ``next_message()`` returns the next
complete decoded message or ``None`` when more bytes are needed. The first two rules keep a hostile
peer from costing much memory:

1. The 4-byte length prefix is checked against ``max_frame`` by the ``feed`` that completes it,
   before any later bytes are accepted. A too-large prefix (``FRAME_TOO_LARGE``) or a zero one
   (``BAD_FRAME``) drops that prefix and every byte after it; the complete frames before it in
   the buffer are kept, and ``next_message`` returns them before it raises the error. From then
   on the decoder is poisoned (the stream cannot be resynchronised): every later call raises the
   same error. So the buffer holds at most one checked frame plus the chunk being fed.
2. Each body is decoded with msgpack limits derived from the body's own length, so a header that
   claims a 4 GiB array inside a 10-byte frame fails instead of allocating. Ext types (including
   the timestamp ext), map keys that are not str (bin keys too), a key repeated within one map,
   more maps than ``MAPS_BASE + size // MAPS_PER_BYTE``, invalid UTF-8 and nesting beyond
   ``MAX_DEPTH`` are rejected as ``BAD_FRAME``. What remains is the cost of Python objects:
   an adversarial frame of tiny arrays or short non-Latin-1 strs still decodes to many times
   its size, so the frame cap is also the memory knob.
3. Every message is a msgpack array; a body that decodes to anything else is ``BAD_FRAME``. So
   ``next_message`` returning ``None`` always means "no complete frame yet", never a nil message.

Any split of the byte stream yields the same messages: the decoder never looks at a frame until
all of its bytes are present.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final, NoReturn

import msgpack

from protocol.errors import ErrorCode, ProtocolError

DEFAULT_MAX_FRAME: Final = 8 * 1024 * 1024
"""Default maximum body size of one frame, in bytes (the prefix is not counted)."""

MAX_ARRAY_ITEMS: Final = 100_000
"""No array in a message may hold more items than this (and never more than the body's bytes)."""

MAX_MAP_ITEMS: Final = 10_000
"""No map in a message may hold more pairs than this (and never more than half the body's bytes)."""

MAPS_BASE: Final = 64
MAPS_PER_BYTE: Final = 8
"""A message may hold at most ``MAPS_BASE + len(body) // MAPS_PER_BYTE`` maps. A decoded dict
costs 64+ bytes, so a frame of one-byte empty maps would otherwise cost 70 times its size."""

MAX_DEPTH: Final = 1023
"""Deepest container nesting the decoder accepts (msgpack's own stack limit). The protocol only
promises 64 levels (``protocol/SPEC.md``); deeper messages are refused when they exceed this."""

_PREFIX = struct.Struct(">I")
_PREFIX_SIZE: Final = 4
_MAX_PREFIX_VALUE: Final = 0xFFFFFFFF


def _reject_ext(code: int, data: bytes) -> NoReturn:
    raise ProtocolError(ErrorCode.BAD_FRAME, f"msgpack ext type {code} is not allowed")


class _MapBuilder:
    """The ``object_pairs_hook`` of one decode: builds each map, refusing non-str keys, repeated
    keys (msgpack lets both by) and more maps than the body's size allows."""

    __slots__ = ("left",)

    def __init__(self, size: int) -> None:
        self.left = MAPS_BASE + size // MAPS_PER_BYTE

    def __call__(self, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
        self.left -= 1
        if self.left < 0:
            raise ProtocolError(ErrorCode.BAD_FRAME, "too many maps for the frame's size")
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ProtocolError(ErrorCode.BAD_FRAME, "a map repeats a key")
        for key in result:
            if type(key) is not str:
                raise ProtocolError(ErrorCode.BAD_FRAME, "map keys must be str")
        return result


def decode_body(body: bytes | memoryview, *, strict: bool = True) -> Any:
    """Decode one frame body into a Python value, with limits derived from its size.

    Arrays decode as tuples, maps as dicts with ``str`` keys, bin as ``bytes``, str as ``str``.

    Args:
        body: exactly one msgpack message (no length prefix).
        strict: enforce the map rules (str keys only, no repeated key, a bounded number of
            maps). The broker always does; a client may trust its broker's maps (``False``
            saves about half the decoding time of a small reply). Every other limit applies.

    Returns:
        The decoded value.

    Raises:
        ProtocolError: ``BAD_FRAME`` for anything that is not exactly one valid message.
    """
    size = len(body)
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            use_list=False,
            strict_map_key=True,
            object_pairs_hook=_MapBuilder(size) if strict else None,
            ext_hook=_reject_ext,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=min(size, MAX_ARRAY_ITEMS),
            max_map_len=min(size // 2, MAX_MAP_ITEMS),
            max_ext_len=0,
        )
    except ProtocolError:
        raise
    except msgpack.ExtraData:
        raise ProtocolError(ErrorCode.BAD_FRAME, "bytes left over after the message") from None
    except msgpack.StackError:
        raise ProtocolError(ErrorCode.BAD_FRAME, "message nested too deeply") from None
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_FRAME, "str is not valid UTF-8") from None
    except (ValueError, TypeError, msgpack.UnpackException, MemoryError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"invalid msgpack: {str(exc)[:200]}") from None


class FrameDecoder:
    """Incremental frame decoder: ``feed(bytes)``, then take messages with ``next_message()``.

    Invariant: every length prefix that is complete in the buffer has been checked against
    ``max_frame``; ``_frame_end`` is the buffer offset where the next unchecked prefix starts.

    Args:
        max_frame: the largest body accepted, in bytes.
        strict: passed to ``decode_body`` (the broker's decoders are strict).
    """

    __slots__ = ("_buffer", "_error", "_failed_at", "_frame_end", "_strict", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, *, strict: bool = True) -> None:
        if not 1 <= max_frame <= _MAX_PREFIX_VALUE:
            raise ValueError(f"max_frame must be in 1..{_MAX_PREFIX_VALUE}, got {max_frame}")
        self.max_frame = max_frame
        self._strict = strict
        self._buffer = bytearray()
        self._frame_end = 0
        self._error: ProtocolError | None = None
        self._failed_at: ProtocolError | None = None
        """A bad prefix met by ``feed``, raised once the frames before it are taken."""

    @property
    def buffered(self) -> int:
        """Bytes held in the buffer (for memory accounting)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes, checking each length prefix as soon as it is complete.

        A bad prefix (above ``max_frame``, or 0) is not raised here: the complete frames before
        it stay available to ``next_message``, which raises the error once they are taken.

        Raises:
            ProtocolError: the decoder was already poisoned (a bad frame was met before).
        """
        if self._error is not None or self._failed_at is not None:
            raise self._error or self._pending()
        buffer = self._buffer
        buffer += data
        end = self._frame_end
        size = len(buffer)
        max_frame = self.max_frame
        while size - end >= _PREFIX_SIZE:  # a complete prefix not yet checked
            (length,) = _PREFIX.unpack_from(buffer, end)
            if length > max_frame or length == 0:
                del buffer[end:]  # the frames before the bad prefix stay, nothing after it
                self._frame_end = end
                self._failed_at = ProtocolError(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"frame of {length} bytes exceeds the maximum of {max_frame}",
                ) if length else ProtocolError(ErrorCode.BAD_FRAME, "frame of length 0")
                return
            end += _PREFIX_SIZE + length
        self._frame_end = end

    def _pending(self) -> ProtocolError:
        """The bad prefix's error, now that the frames before it are taken: poison."""
        assert self._failed_at is not None
        self._error, self._failed_at = self._failed_at, None
        self._buffer.clear()
        self._frame_end = 0
        return self._error

    def next_message(self) -> tuple[Any, ...] | None:
        """Return the next complete decoded message, or ``None`` if more bytes are needed.

        Every message is a msgpack array (decoded as a tuple), so ``None`` is never a message.

        Returns:
            The message, or ``None`` when no complete frame is buffered.

        Raises:
            ProtocolError: ``BAD_FRAME`` if the body is not one valid msgpack array; the decoder
                is then poisoned.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        if len(buffer) < _PREFIX_SIZE:
            if self._failed_at is not None:
                raise self._pending()
            return None
        (length,) = _PREFIX.unpack_from(buffer, 0)
        end = _PREFIX_SIZE + length
        if len(buffer) < end:
            return None
        body = bytes(buffer[_PREFIX_SIZE:end])
        del buffer[:end]  # O(1): bytearray drops a prefix by moving its start
        self._frame_end -= end
        try:
            message = decode_body(body, strict=self._strict)
            if type(message) is not tuple:
                raise ProtocolError(ErrorCode.BAD_FRAME, "a message must be an array")
        except ProtocolError as exc:
            self._error = exc
            buffer.clear()
            self._frame_end = 0
            raise
        return message

    def messages(self) -> list[tuple[Any, ...]]:
        """Take every complete message now buffered (possibly none).

        Raises:
            ProtocolError: as ``next_message``; messages before the bad frame are lost to the
                caller, so a caller that must answer them uses ``next_message``.
        """
        out = []
        while (message := self.next_message()) is not None:
            out.append(message)
        return out


class FrameEncoder:
    """Encodes messages as frames with one reused msgpack ``Packer``.

    ``msgpack.packb`` builds a new ``Packer`` per call, which costs as much as packing a small
    message; a connection's encoder keeps one. Not thread-safe: one per connection (or thread).
    """

    __slots__ = ("_pack",)

    def __init__(self) -> None:
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def frame(self, message: Any) -> bytes:
        """One message as a frame (like ``encode_frame``)."""
        body: bytes = self._pack(message)
        return _PREFIX.pack(len(body)) + body

    def frames(self, messages: Iterable[Any]) -> bytes:
        """Many messages as consecutive frames in one bytes object (like ``encode_frames``)."""
        pack = self._pack
        prefix = _PREFIX.pack
        parts: list[bytes] = []
        append = parts.append
        for message in messages:
            body = pack(message)
            append(prefix(len(body)))
            append(body)
        return b"".join(parts)


def encode_frame(message: Any) -> bytes:
    """Encode one message as a frame (length prefix + msgpack body).

    Args:
        message: a msgpack-encodable value (tuples and lists become arrays, str keys only).

    Returns:
        The frame's bytes.
    """
    return FrameEncoder().frame(message)


def encode_frames(messages: Iterable[Any]) -> bytes:
    """Encode many messages into one bytes object of consecutive frames."""
    return FrameEncoder().frames(messages)
