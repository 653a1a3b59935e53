"""What every event is: a frozen record with a kind, a version and the store's stamps.

The kinds themselves are all in ``events.py``; this module is the machinery they share:
the base class, the ``kind`` decorator that registers one, and ``decode``, which turns a
log line back into its type, or into ``Unknown`` for a kind this pd does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from orchestrator.wire.fastjson import dumps, tagged

VERSION = 1
KINDS: dict[str, type[Event]] = {}
_STORE_FIELDS = ("at", "seq")  # set by the run store when it appends the event

E = TypeVar("E", bound="Event")


@dataclass(frozen=True, kw_only=True)
class Event:
    """One thing that happened in a run. ``at`` (wall clock) and ``seq`` (position in the
    log) are the store's to set; everything else is the event's own."""

    kind: ClassVar[str] = ""
    seq: int = 0
    at: float = 0.0

    def data(self) -> dict[str, Any]:
        """The event's own fields, as JSON-ready values."""
        return {name: getattr(self, name) for name in _own_fields(type(self))}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "v": VERSION, "seq": self.seq, "at": self.at, **self.data()}

    def line(self) -> bytes:
        """The event as one line of the log: ``to_json`` as compact JSON, encoded
        straight from the fields (the loop writes five of these per task)."""
        head = _HEADS.get(self.kind)
        if head is None:
            head = _HEADS[self.kind] = f'"kind":"{self.kind}","v":{VERSION}'.encode()
        return tagged(head, self, self.to_json) + b"\n"

    def stamped(self: E, seq: int, at: float) -> E:
        """A copy with the store's stamps (``but`` for the two fields every appended
        event gets, without its checks)."""
        copy = object.__new__(type(self))
        fields = copy.__dict__
        fields.update(self.__dict__)
        fields["seq"], fields["at"] = seq, at
        return copy

    def but(self: E, **changes: Any) -> E:
        """A copy with ``changes``: ``dataclasses.replace`` without running ``__init__``
        again, which cost the loop's path (several copies per task) the most."""
        fields = self.__dict__
        if not changes.keys() <= fields.keys():
            unknown = sorted(changes.keys() - fields.keys())
            raise TypeError(f"{type(self).__name__} has no field {unknown}")
        copy = object.__new__(type(self))
        copy.__dict__.update(fields, **changes)
        return copy


_OWN_FIELDS: dict[type, tuple[str, ...]] = {}
_HEADS: dict[str, bytes] = {}  # a kind's first members in the log, built once


def _own_fields(cls: type) -> tuple[str, ...]:
    """The names of a kind's own fields, looked up once per kind."""
    names = _OWN_FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in fields(cls) if f.name not in _STORE_FIELDS)
        _OWN_FIELDS[cls] = names
    return names


def kind(name: str) -> Any:
    """Class decorator: a frozen, keyword-only dataclass registered under ``name``."""

    def register(cls: type[E]) -> type[E]:
        if name in KINDS:
            raise TypeError(f"event kind {name!r} defined twice")
        cls.kind = name
        KINDS[name] = cls
        return dataclass(frozen=True, kw_only=True)(cls)

    return register


@dataclass(frozen=True, kw_only=True)
class Unknown(Event):
    """A kind this version of pd does not know: kept whole, skipped by every reader."""

    name: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return self.raw

    def line(self) -> bytes:
        return dumps(self.raw) + b"\n"


def decode(raw: dict[str, Any]) -> Event:
    """The typed event of one log line (a dict), or ``Unknown`` for a kind not known here."""
    cls = KINDS.get(raw.get("kind", ""))
    if cls is None:
        return Unknown(
            name=str(raw.get("kind")), raw=raw, seq=raw.get("seq", 0), at=raw.get("at", 0.0)
        )
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in known})
