"""JSON on the hot paths: the event log's lines and the pipes' messages.

Every task crosses both several times (five events, four messages), and the standard
library's encoder was the largest single cost of the coordinator's loop. orjson writes
the same JSON about twenty times as fast and serialises a dataclass straight from its
``__dict__`` (fields whose names start with ``_`` are left out), so a typed event or
message becomes a line without first becoming a dict.

Differences from ``json`` that matter here: the output is UTF-8 bytes (no ``\\u``
escapes), and NaN or infinity become ``null``. ``loads`` also reads what ``json`` wrote,
including its ``NaN`` tokens, so logs written by earlier versions still read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

# Keys that are not strings (an int, an enum) become strings, as ``json`` does.
_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON (what orjson cannot write, like an integer past 64 bits
    or a lone surrogate, the standard library writes; ``TypeError`` for what neither
    can). An integer past 64 bits reads back as a float."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def dumps_text(value: Any) -> str:
    """``dumps`` as a string, with ``str()`` of any value JSON has no type for."""
    return orjson.dumps(value, default=str, option=_OPTIONS).decode()


def tagged(head: bytes, record: Any, whole: Callable[[], Any]) -> bytes:
    """A dataclass ``record`` as one JSON object whose first members are ``head``
    (already JSON, like ``b'"type":"Ready"'``), then the record's fields; ``whole()``
    is the same object as a dict, for what orjson cannot write."""
    try:
        body = orjson.dumps(record, option=_OPTIONS)
    except TypeError:
        return dumps(whole())
    if body == b"{}":
        return b"{" + head + b"}"
    return b"{" + head + b"," + body[1:]


def loads(raw: bytes | str) -> Any:
    """Parse JSON; ``ValueError`` (``json.JSONDecodeError``'s base) when it is not."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # what orjson refuses and json accepts (NaN), or the error
