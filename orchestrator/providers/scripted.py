"""Replay a cassette of model answers: offline, deterministic, same path as a real model.

The provider is stateless on purpose: the turn to replay is the number of assistant
messages already in the request, so a retried or re-sent request gets the same answer
and a worker restarted mid-task picks up where the conversation says it is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import ProviderError
from orchestrator.providers.base import ModelRequest, ModelResponse, ToolCall, Usage

_TURN_KEYS = {"text", "tool_calls", "usage", "delay", "stop_reason"}
_CALL_KEYS = {"id", "name", "input"}
_USAGE_KEYS = set(Usage().to_dict())


class ScriptedProvider:
    """Answers from ``tasks[task_id][attempt-1][turn]``, falling back to ``tasks["*"]``."""

    name = "scripted"

    def __init__(self, cassette_path: str | Path) -> None:
        path = Path(cassette_path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ProviderError(f"cassette {path}: cannot read it ({exc.strerror})") from exc
        except json.JSONDecodeError as exc:
            raise ProviderError(f"cassette {path}: not valid JSON ({exc})") from exc
        self._init(data, str(path))

    @classmethod
    def from_data(
        cls, data: dict[str, Any], source: str = "<in-memory cassette>"
    ) -> ScriptedProvider:
        """Build from an already-loaded cassette (tests, the demo)."""
        self = cls.__new__(cls)
        self._init(data, source)
        return self

    def _init(self, data: Any, source: str) -> None:
        self.source = source
        self.tasks: dict[str, list[list[dict[str, Any]]]] = _validate(data, source)

    def complete(self, request: ModelRequest) -> ModelResponse:
        key = request.task_id if request.task_id in self.tasks else "*"
        if key not in self.tasks:
            raise ProviderError(
                f"cassette {self.source}: no entry for task {request.task_id!r} and no '*' "
                f'fallback (add one under "tasks")'
            )
        if request.attempt < 1:
            raise ProviderError(
                f"cassette {self.source}: attempt must be >= 1, got {request.attempt}"
            )
        attempts = self.tasks[key]
        turns = attempts[min(request.attempt, len(attempts)) - 1]
        index = sum(1 for m in request.messages if m.get("role") == "assistant")
        if index >= len(turns):
            raise ProviderError(
                f"cassette {self.source}: task {request.task_id!r} attempt {request.attempt} "
                f"(entry {key!r}) has {len(turns)} turns; turn {index + 1} was requested"
            )
        turn = turns[index]
        if turn.get("delay"):
            time.sleep(float(turn["delay"]))
        calls = [
            ToolCall(
                id=c.get("id") or f"toolu_{request.task_id}_{request.attempt}_{index}_{i}",
                name=c["name"],
                input=dict(c.get("input", {})),
            )
            for i, c in enumerate(turn.get("tool_calls", []))
        ]
        return ModelResponse(
            text=turn.get("text", ""),
            tool_calls=calls,
            stop_reason=turn.get("stop_reason") or ("tool_use" if calls else "end_turn"),
            usage=Usage.from_dict(turn.get("usage", {})),
            model=request.model,
        )


def _validate(data: Any, source: str) -> dict[str, list[list[dict[str, Any]]]]:
    """Check the whole cassette at load, so a typo fails before any worker starts."""

    def bad(where: str, problem: str) -> ProviderError:
        return ProviderError(f"cassette {source}: {where}: {problem}")

    if not isinstance(data, dict):
        raise bad("top level", "must be a JSON object")
    if data.get("version") != 1:
        raise bad("version", f"must be 1, got {data.get('version')!r}")
    tasks = data.get("tasks")
    if not isinstance(tasks, dict):
        raise bad("tasks", "must be an object mapping task ids to lists of attempts")
    for task, attempts in tasks.items():
        if not isinstance(attempts, list) or not attempts:
            raise bad(f"tasks.{task}", "must be a non-empty list of attempts")
        for a, turns in enumerate(attempts, 1):
            if not isinstance(turns, list) or not turns:
                raise bad(f"tasks.{task} attempt {a}", "must be a non-empty list of turns")
            for t, turn in enumerate(turns, 1):
                _validate_turn(turn, lambda p, w=f"tasks.{task} attempt {a} turn {t}": bad(w, p))
    return tasks


def _validate_turn(turn: Any, bad: Any) -> None:
    if not isinstance(turn, dict):
        raise bad("must be an object")
    if extra := set(turn) - _TURN_KEYS:
        raise bad(f"unknown keys {sorted(extra)} (allowed: {sorted(_TURN_KEYS)})")
    if not isinstance(turn.get("text", ""), str):
        raise bad("text must be a string")
    delay = turn.get("delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise bad("delay must be a number of seconds >= 0")
    usage = turn.get("usage", {})
    if not isinstance(usage, dict) or set(usage) - _USAGE_KEYS:
        raise bad(f"usage must be an object with keys from {sorted(_USAGE_KEYS)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in usage.values()):
        raise bad("usage values must be non-negative integers")
    calls = turn.get("tool_calls", [])
    if not isinstance(calls, list):
        raise bad("tool_calls must be a list")
    for i, call in enumerate(calls, 1):
        if not isinstance(call, dict) or set(call) - _CALL_KEYS:
            raise bad(f"tool call {i} must be an object with keys from {sorted(_CALL_KEYS)}")
        if not isinstance(call.get("name"), str) or not call["name"]:
            raise bad(f'tool call {i} needs a "name" string')
        if not isinstance(call.get("input", {}), dict):
            raise bad(f"tool call {i}: input must be an object")
