"""What every message that crosses a process boundary is: a small dataclass that
serialises to one JSON object with a ``type`` field, registered by class name so the
other side rebuilds it. Pipes carry the JSON bytes, never pickles.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from orchestrator.wire.fastjson import loads, tagged

_REGISTRY: dict[str, type[Message]] = {}
_NAMES: dict[type, tuple[str, ...]] = {}  # a message class's field names, looked up once


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass
class Message:
    """Base of every wire message; subclasses register themselves by class name."""

    type_name: ClassVar[str] = "Message"
    _head: ClassVar[bytes] = b'"type":"Message"'

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = cls.__name__
        cls._head = f'"type":"{cls.__name__}"'.encode()
        _REGISTRY[cls.__name__] = cls

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: fields are JSON values already, and asdict's deep copy was
        # the largest per-message cost on the coordinator's side.
        return {"type": self.type_name, **{n: getattr(self, n) for n in _names(type(self))}}

    def to_bytes(self) -> bytes:
        """``to_dict`` as compact JSON, encoded straight from the fields."""
        return tagged(self._head, self, self.to_dict)


def from_dict(data: dict[str, Any]) -> Message:
    """Rebuild a message from its dict form; unknown keys are dropped (newer peer)."""
    return _rebuild(dict(data))


def from_bytes(raw: bytes) -> Message:
    return _rebuild(loads(raw))


def _rebuild(data: dict[str, Any]) -> Message:
    """``from_dict`` of a dict it may take apart: the fields go to the class as they
    are, filtered only when a newer peer sent one this version does not know."""
    cls = _REGISTRY[data.pop("type")]
    try:
        return cls(**data)
    except TypeError:
        return cls(**{n: data[n] for n in _names(cls) if n in data})
