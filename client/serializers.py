"""Job data and result serializers: msgpack by default, JSON, or your own.

The broker never decodes payloads; producer and worker must agree on the serializer. A serializer
is any object with ``dumps(value) -> bytes`` and ``loads(bytes) -> value``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

import msgpack


@runtime_checkable
class Serializer(Protocol):
    """Turns job data and results into bytes and back."""

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode what ``dumps`` produced."""
        ...


class MsgpackSerializer:
    """msgpack with bin for bytes and str for text; lists decode as lists (the default)."""

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as msgpack."""
        data: bytes = msgpack.packb(value, use_bin_type=True)
        return data

    def loads(self, data: bytes) -> Any:
        """Decode msgpack bytes."""
        return msgpack.unpackb(data, raw=False, strict_map_key=False)


class JsonSerializer:
    """UTF-8 JSON: readable payloads, interoperable with any language (no bytes values)."""

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as compact JSON."""
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        """Decode JSON bytes."""
        return json.loads(data)


class RawSerializer:
    """Payloads are ``bytes`` already: passed through untouched."""

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        """Return ``value``, which must be bytes-like."""
        if type(value) is bytes:  # the common case: bytes(value) would return it as well
            return value
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"RawSerializer needs bytes, got {type(value).__name__}")
        return bytes(value)

    def loads(self, data: bytes) -> Any:
        """Return ``data`` unchanged."""
        return data


MSGPACK = MsgpackSerializer()
JSON = JsonSerializer()
RAW = RawSerializer()

_NAMED: dict[str, Serializer] = {"msgpack": MSGPACK, "json": JSON, "raw": RAW}


def get_serializer(spec: Serializer | str | None) -> Serializer:
    """Resolve a serializer argument.

    Args:
        spec: ``None`` (msgpack), a name (``"msgpack"``, ``"json"``, ``"raw"``) or an object with
            ``dumps`` and ``loads``.

    Returns:
        The serializer.

    Raises:
        ValueError: an unknown name.
        TypeError: an object without ``dumps``/``loads``.
    """
    if spec is None:
        return MSGPACK
    if isinstance(spec, str):
        try:
            return _NAMED[spec]
        except KeyError:
            raise ValueError(
                f"unknown serializer {spec!r}; expected one of {', '.join(_NAMED)}"
            ) from None
    if not isinstance(spec, Serializer):
        raise TypeError("a serializer needs dumps(value) -> bytes and loads(bytes) -> value")
    return spec
