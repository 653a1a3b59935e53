"""The typed event log: every kind round-trips through the store, a kind or a field from a
newer pd is kept and skipped (never a crash), and no code names a kind by a string."""

from __future__ import annotations

import ast
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest

import orchestrator
from orchestrator.engine.resume import rebuild
from orchestrator.record import events as ev
from orchestrator.record.eventtext import FORMATS, format_event
from orchestrator.record.report import build_report
from orchestrator.record.store import RunStore
from orchestrator.tasks.taskgraph import TaskGraph, TaskState
from orchestrator.tasks.transitions import replay

ROOT = Path(orchestrator.__file__).parent
SAMPLES = {str: "s", int: 3, float: 1.5, bool: True}


def sample(cls: type[ev.Event]) -> ev.Event:
    """An instance of ``cls`` with every field set to a value of its declared type."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in ("at", "seq"):
            continue
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        if origin is list:
            values[f.name] = ["x", "y"] if typing.get_args(hint)[0] is str else [{"id": "x"}]
        elif origin is dict:
            values[f.name] = {"k": 1}
        else:
            options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
            values[f.name] = SAMPLES[options[0]]
    return cls(**values)


@pytest.mark.parametrize("cls", sorted(ev.KINDS.values(), key=lambda c: c.kind))
def test_every_kind_round_trips_through_the_store(tmp_path: Path, cls: type[ev.Event]) -> None:
    store = RunStore.create(tmp_path, "run-1")
    written = store.append(sample(cls))
    [read] = list(RunStore(store.dir).events())
    assert read == written and type(read) is cls and read.seq == 1 and read.at > 0
    [raw] = list(store.raw_events())
    assert raw["kind"] == cls.kind and raw["v"] == ev.VERSION
    assert raw == written.to_json()  # the line, written from the fields, is the same object


def test_every_kind_but_the_silent_ones_reads_as_a_line() -> None:
    silent = {ev.TaskStarted, ev.SkillsUsed}  # summed by pd report, not worth a line each
    assert set(ev.KINDS.values()) - set(FORMATS) == silent
    for cls in FORMATS:
        assert format_event(sample(cls)), cls.kind


def test_a_log_from_a_newer_pd_is_read_not_crashed_on(tmp_path: Path) -> None:
    """A kind this version does not know is kept and skipped; a field it does not know is
    ignored; a field an older pd did not write takes its default."""
    store = RunStore.create(tmp_path, "run-1")
    lines = [
        {"kind": "run_started", "v": 2, "seq": 1, "at": 1.0, "mission": "m", "shiny": [1]},
        {"kind": "task_teleported", "v": 2, "seq": 2, "at": 2.0, "task": "a", "to": "mars"},
        {"kind": "task_assigned", "v": 2, "seq": 3, "at": 3, "task": "a", "attempt": 1},
        {"kind": "task_submitted", "seq": 4, "at": 4, "task": "a", "worker": "w1", "attempt": 1}
        | {"commit": "h", "files": [], "summary": "", "branch": "b", "state": "merging"},
        {"kind": "task_merged", "seq": 5, "at": 5, "task": "a", "attempt": 1, "head": "h"},
        {"kind": "run_finished", "v": 2, "seq": 6, "at": 6.0, "status": "completed"},
    ]
    store.events_path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    started, future, _, _, merged, _ = RunStore(store.dir).events()
    assert isinstance(started, ev.RunStarted) and started.mission == "m" and started.workers == {}
    assert isinstance(future, ev.Unknown) and future.to_json() == lines[1]
    assert isinstance(merged, ev.TaskMerged) and merged.recovered is False
    assert format_event(future) is None
    graph = TaskGraph([{"id": "a", "title": "a"}])
    assert rebuild(graph, store.events(), tmp_path, "h") == 1
    assert graph.get("a").state is TaskState.MERGED
    report = build_report(store)
    assert report["mission"] == "m" and report["status"] == "completed"
    # A newer log's unknown line stays in the file for the newer pd that wrote it.
    store.append(ev.RunStalled(reason="r"))
    assert [e["kind"] for e in store.raw_events()][1] == "task_teleported"


def test_a_log_from_an_older_pd_still_replays(tmp_path: Path) -> None:
    """Logs before ``batch_started`` have one ``merge_started`` per task: still read,
    still shown, and a resume of such a run replays them like any other."""
    store = RunStore.create(tmp_path, "run-1")
    lines = [
        {"kind": "task_assigned", "v": 1, "seq": 1, "at": 1, "task": "a", "worker": "w1"}
        | {"branch": "b", "base": "h0", "attempt": 1},
        {"kind": "task_submitted", "v": 1, "seq": 2, "at": 2, "task": "a", "worker": "w1"}
        | {"attempt": 1, "commit": "c", "files": [], "summary": "", "branch": "b"}
        | {"state": "merging"},
        {"kind": "merge_started", "v": 1, "seq": 3, "at": 3, "task": "a", "commit": "c"}
        | {"batch": 1},
    ]
    store.events_path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    *_, started = RunStore(store.dir).events()
    assert isinstance(started, ev.MergeStarted) and started.batch == 1
    assert format_event(started) == "merge ⇢ a"
    graph = TaskGraph([{"id": "a", "title": "a"}])
    replay(graph, store.events())
    assert graph.get("a").state is TaskState.MERGING and graph.get("a").commit == "c"


# Words that are event kinds and also, elsewhere, plain keys of other records (a model
# answer's "usage", a transcript's "skills_used", the run's "control" folder).
SHARED_WORDS = {"usage", "skills_used", "control"}


def test_no_code_names_an_event_kind_by_a_string() -> None:
    """The kinds live in ``record/events.py`` alone: writers build typed events and
    readers match on types, so a renamed or removed kind fails here, not in production."""
    named = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "events.py" or "testing" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            kind = node.value if isinstance(node, ast.Constant) else None
            if kind in ev.KINDS and kind not in SHARED_WORDS:
                named.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.value}")
    assert named == []
