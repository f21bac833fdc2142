"""How an operation is declared: its fields, and the parser and encoder made from them.

``protocol/operations.py`` declares every operation with ``declare(Operation(...))``; this module
holds the machinery: a ``Field`` per request field (key, check, default, wire form), the
straight-line parser and encoder compiled once per operation (as ``dataclasses`` builds
``__init__``: no reflection per request), and the ``OPERATIONS``/``OPERATION_OF`` tables. Sans-I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, NamedTuple, TypeAlias, TypeVar

from protocol.checks import (
    Check,
)
from protocol.model import (
    new_tuple,
)

R = TypeVar("R")
T = TypeVar("T")

Request: TypeAlias = tuple[Any, ...]
"""Any request type declared below (each is a ``NamedTuple``)."""

REQUIRED: Final[Any] = object()
"""The default of a field that must be present: a missing or nil value goes to its check."""


class Field(NamedTuple):
    """One request field, in the order of the request type's fields."""

    key: str
    """Its key in the ``args`` map (``"id"`` for a field named ``job_id``)."""
    check: Check
    """The broker's strict check: ``check(value, key) -> value``."""
    default: Any = REQUIRED
    """The value a missing or nil key takes (``REQUIRED``: none; the check rejects nil)."""
    to_wire: Callable[[Any], Any] | None = None
    """How the client encodes a non-nil value (``None``: as it is)."""


def _compile(source: list[str], name: str, namespace: dict[str, Any]) -> Any:
    """Define function ``name`` from ``source`` lines, with ``namespace`` as its globals."""
    exec("\n".join(source), namespace)  # source built below from declarations
    return namespace[name]


def _compile_parser(request_type: type[R], fields: tuple[Field, ...]) -> Callable[[Any], R]:
    """The broker's parser of one op's ``args``: straight-line code, one check per field.

    Generated (as ``dataclasses`` generates ``__init__``) so that a declared op parses as fast as
    a hand-written parser: a loop over the fields would cost every request of the hot paths.
    """
    namespace: dict[str, Any] = {"new_tuple": new_tuple, "request_type": request_type}
    source = ["def parse(args):", "    get = args.get"]
    for i, field in enumerate(fields):
        namespace[f"check{i}"], namespace[f"default{i}"] = field.check, field.default
        key = repr(field.key)
        if field.default is REQUIRED:
            source.append(f"    v{i} = check{i}(get({key}), {key})")
        else:
            source += [f"    v{i} = get({key})",
                       f"    v{i} = default{i} if v{i} is None else check{i}(v{i}, {key})"]
    values = "".join(f"v{i}, " for i in range(len(fields)))
    source.append(f"    return new_tuple(request_type, ({values}))")
    return _compile(source, "parse", namespace)  # type: ignore[no-any-return]


def _compile_encoder(fields: tuple[Field, ...]) -> Callable[[Any], dict[str, Any]]:
    """The client's encoder of one op's request into its ``args`` map (generated likewise)."""
    namespace: dict[str, Any] = {}
    items = []
    for i, field in enumerate(fields):
        value = f"request[{i}]"
        if field.to_wire is not None:
            namespace[f"to_wire{i}"] = field.to_wire
            value = (f"to_wire{i}({value})" if field.default is REQUIRED
                     else f"None if {value} is None else to_wire{i}({value})")
        items.append(f"{field.key!r}: {value}")
    source = ["def args(request):", f"    return {{{', '.join(items)}}}"]
    return _compile(source, "args", namespace)  # type: ignore[no-any-return]


class Operation(Generic[R, T]):
    """The declaration of one operation (see the module's theory of operation).

    Args:
        name: the op name on the wire.
        request_type: the request ``NamedTuple``; its fields match ``fields`` one for one.
        fields: the request's fields.
        reply: the client's parser of the reply body.
        after_commit: the broker replies only once the request's changes are committed.
    """

    __slots__ = ("after_commit", "args", "fields", "name", "parse", "reply", "request_type")

    def __init__(
        self,
        name: str,
        request_type: type[R],
        fields: tuple[Field, ...],
        *,
        reply: Callable[[Mapping[str, Any]], T],
        after_commit: bool,
    ) -> None:
        declared = getattr(request_type, "_fields", None)
        if declared is None or len(declared) != len(fields):
            raise TypeError(f"{name}: {request_type.__name__} must have one field per Field")
        self.name = name
        self.request_type = request_type
        self.fields = fields
        self.reply = reply
        self.after_commit = after_commit
        self.parse: Callable[[Mapping[str, Any]], R] = _compile_parser(request_type, fields)
        """The broker's strict parser of an ``args`` map; raises ``BAD_ARGUMENT``."""
        self.args: Callable[[R], dict[str, Any]] = _compile_encoder(fields)
        """The client's encoder of a request into its ``args`` map."""

    def __repr__(self) -> str:
        return f"Operation({self.name!r})"


OPERATIONS: Final[dict[str, Operation[Any, Any]]] = {}
"""Every declared operation by its wire name."""
OPERATION_OF: Final[dict[type[Any], Operation[Any, Any]]] = {}
"""Every declared operation by its request type."""


def declare(operation: Operation[R, T]) -> Operation[R, T]:
    """Add ``operation`` to ``OPERATIONS`` and ``OPERATION_OF``; returns it."""
    if operation.name in OPERATIONS:
        raise ValueError(f"operation {operation.name!r} declared twice")
    OPERATIONS[operation.name] = operation
    OPERATION_OF[operation.request_type] = operation
    return operation
