"""``pd run --record``: every model exchange of a run, written as a replayable cassette.

Each worker appends its exchanges to its own part file (one writer per file, no locks);
when the run ends the parts are assembled into one cassette in the scripted provider's
format, so ``--provider scripted --cassette FILE`` replays the run through the same loop.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.providers.base import ModelRequest, ModelResponse, Provider
from orchestrator.record.store import write_atomic

PARTS = "cassette-parts"
CASSETTE = "recorded.cassette.json"


class RecordingProvider:
    """Passes calls through to ``inner`` and appends each reply to ``part``."""

    def __init__(self, inner: Provider, part: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.part = part
        # The SDK's request hook, for the meter: the limiter hears when the call went out.
        self.gate = getattr(inner, "gate", None)
        part.parent.mkdir(parents=True, exist_ok=True)

    def count_input_tokens(self, request: ModelRequest) -> int | None:
        """The inner provider's count, when it counts (not an exchange: not recorded)."""
        count = getattr(self.inner, "count_input_tokens", None)
        return count(request) if count is not None else None

    def complete(self, request: ModelRequest) -> ModelResponse:
        response = self.inner.complete(request)
        turn = sum(1 for m in request.messages if m.get("role") == "assistant")
        entry = {
            "task": request.task_id,
            "attempt": request.attempt,
            "turn": turn,
            "reply": as_turn(response),
        }
        with open(self.part, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        return response


def as_turn(response: ModelResponse) -> dict[str, Any]:
    """A reply in the scripted provider's turn format."""
    turn: dict[str, Any] = {
        "text": response.text,
        "tool_calls": [asdict(call) for call in response.tool_calls],
        "usage": response.usage.to_dict(),
    }
    if response.stop_reason:
        turn["stop_reason"] = response.stop_reason
    return turn


def assemble(run_dir: Path) -> Path | None:
    """Merge the workers' parts into ``recorded.cassette.json``; None if nothing was recorded.

    Attempts are numbered per task in the order they happened; a retried call (same
    task, attempt and turn) keeps its last reply, the one the loop went on with.
    """
    turns: dict[str, dict[int, dict[int, dict[str, Any]]]] = {}
    for part in sorted((run_dir / PARTS).glob("*.jsonl")):
        for line in part.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line from a killed worker
            attempts = turns.setdefault(entry["task"], {})
            attempts.setdefault(entry["attempt"], {})[entry["turn"]] = entry["reply"]
    if not turns:
        return None
    tasks = {task: _by_position(attempts) for task, attempts in turns.items()}
    path = run_dir / CASSETTE
    write_atomic(path, json.dumps({"version": 1, "tasks": tasks}, indent=1))
    return path


def _by_position(attempts: dict[int, dict[int, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Replay indexes attempts by number: an attempt that made no call (its worker died
    first) replays the next recorded one."""
    out = []
    for number in range(1, max(attempts) + 1):
        source = min(n for n in attempts if n >= number)
        out.append([attempts[source][t] for t in sorted(attempts[source])])
    return out
