"""The JSON of the hot paths (``wire.fastjson``): events and messages are written from
their fields by orjson, and what orjson cannot write or read still goes through."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from orchestrator.record import events as ev
from orchestrator.record.store import RunStore
from orchestrator.wire.fastjson import dumps, loads, tagged
from orchestrator.wire.messages import (
    Heartbeat,
    MergeBatch,
    Shutdown,
    TaskJob,
    from_bytes,
    from_dict,
)


def test_a_message_crosses_as_its_dict_and_comes_back_equal() -> None:
    job = TaskJob(
        task_id="t1",
        attempt=2,
        title="ünïcode ✓",
        description="line\nbreak",
        branch="pd/r/t1/work",
        target_head="0" * 40,
        dependencies={"t0": "did the thing"},
        session=["a", "b"],
    )
    batch = MergeBatch(3, [{"task_id": "t1", "commit": "c"}])
    for message in (job, batch, Heartbeat(worker_id="w1"), Shutdown()):
        raw = message.to_bytes()
        assert json.loads(raw) == message.to_dict()
        assert from_bytes(raw) == message


def test_a_message_from_a_newer_peer_keeps_what_this_version_knows() -> None:
    sent = {"type": "Heartbeat", "worker_id": "w1", "at": 1.5, "battery": 0.5}
    assert from_bytes(json.dumps(sent).encode()) == Heartbeat(worker_id="w1", at=1.5)
    assert from_dict(sent) == Heartbeat(worker_id="w1", at=1.5) and "type" in sent


def test_a_record_with_no_fields_is_just_its_head() -> None:
    @dataclass
    class Empty:
        pass

    assert tagged(b'"type":"Empty"', Empty(), dict) == b'{"type":"Empty"}'


def test_what_orjson_refuses_to_write_the_standard_library_writes() -> None:
    big, surrogate = 2**70, "\ud800"
    assert json.loads(dumps({"n": big})) == {"n": big}
    assert json.loads(dumps({"s": surrogate})) == {"s": surrogate}
    event = ev.TaskAssigned(task=surrogate, worker="w1", branch="b", base="h")
    assert json.loads(event.line()) == event.to_json()


def test_keys_that_are_not_strings_become_strings_as_with_json() -> None:
    keys = {1: "a", 2.5: "b", None: "c"}
    assert loads(dumps(keys)) == json.loads(json.dumps(keys))


def test_a_log_written_by_the_standard_library_still_reads(tmp_path: Path) -> None:
    """Earlier versions wrote the log with ``json``, which writes NaN as a bare token."""
    store = RunStore.create(tmp_path, "run-1")
    old = {"kind": "usage", "v": 1, "seq": 1, "at": 1.0, "cost": float("nan"), "note": "é"}
    store.events_path.write_text(json.dumps(old) + "\n")
    [read] = list(store.raw_events())
    assert math.isnan(read["cost"]) and read["note"] == "é"
    store.append_event("after")  # and appends go on after it
    assert [e["kind"] for e in RunStore(store.dir).raw_events()] == ["usage", "after"]
