"""RunStore on real files: events round trip, finding runs, crash recovery of
``events.jsonl`` and atomic ``state.json`` under a concurrent reader."""

from __future__ import annotations

import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import RunNotFound
from orchestrator.record.store import RunStore, runs_dir
from tests import workers_for_tests as targets

# ---- events ----------------------------------------------------------------------


def test_events_round_trip_in_order_with_consecutive_seq(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-1")
    written = [
        store.append_event("run_started", mission="m", workers={"w1": "dev"}),
        store.append_event("task_assigned", task="t1", attempt=1, note="line\nbreak ü"),
        store.append_event("run_finished", status="finished", counts={"merged": 1}),
    ]
    store.close()

    read = list(RunStore.open("run-1", home=tmp_path).raw_events())
    assert read == written
    assert [e["seq"] for e in read] == [1, 2, 3]
    assert [e["kind"] for e in read] == ["run_started", "task_assigned", "run_finished"]
    assert read[1]["note"] == "line\nbreak ü"
    lines = store.events_path.read_bytes().splitlines()
    assert len(lines) == 3, "one event per line, newlines inside values escaped"


def test_events_of_a_run_without_events_is_empty(tmp_path: Path) -> None:
    assert list(RunStore.create(tmp_path, "run-1").raw_events()) == []


def test_events_are_readable_while_the_writer_keeps_appending(tmp_path: Path) -> None:
    writer = RunStore.create(tmp_path, "run-1")
    reader = RunStore(writer.dir)
    writer.append_event("a")
    assert [e["kind"] for e in reader.raw_events()] == ["a"]
    writer.append_event("b")
    assert [e["kind"] for e in reader.raw_events()] == ["a", "b"]
    writer.close()


def test_torn_last_line_is_skipped_by_readers_and_cut_before_the_next_append(
    tmp_path: Path,
) -> None:
    store = RunStore.create(tmp_path, "run-1")
    for kind in ("a", "b", "c"):
        store.append_event(kind)
    store.close()
    with open(store.events_path, "ab") as handle:
        handle.write(b'{"seq":4,"at":1.0,"kind":"to')  # the crash hit mid-write

    assert [e["kind"] for e in RunStore(store.dir).raw_events()] == ["a", "b", "c"]

    reopened = RunStore.open("run-1", home=tmp_path)
    event = reopened.append_event("d")
    reopened.close()
    assert event["seq"] == 4
    lines = store.events_path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file ends with a newline"
    assert [json.loads(line)["kind"] for line in lines[:-1]] == ["a", "b", "c", "d"]
    assert [e["seq"] for e in reopened.raw_events()] == [1, 2, 3, 4]


def test_events_appended_after_a_corrupt_complete_last_line_are_readable(
    tmp_path: Path,
) -> None:
    store = RunStore.create(tmp_path, "run-1")
    store.append_event("a")
    store.close()
    with open(store.events_path, "ab") as handle:
        handle.write(b"\x00" * 20 + b',"kind":"b"}\n')

    reopened = RunStore(store.dir)
    reopened.append_event("c")
    reopened.close()
    assert [e["kind"] for e in reopened.raw_events()] == ["a", "c"]


# A value that survives a JSON round trip unchanged (no NaN: NaN != NaN; integers within
# 64 bits, as the log's reader keeps them).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
# Event fields as the coordinator passes them: keyword names, never the store's own.
field_names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda name: name not in ("seq", "at", "kind")
)
events_strategy = st.tuples(
    st.text(min_size=1, max_size=12), st.dictionaries(field_names, json_values, max_size=4)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(events_strategy, max_size=8),
    after=st.lists(events_strategy, min_size=1, max_size=4),  # the repair comes with a write
    cut_at=st.floats(min_value=0.0, max_value=1.0),
    junk=st.binary(max_size=12).map(lambda raw: raw.replace(b"\n", b"")),
)
def test_any_crash_point_leaves_a_readable_prefix_that_appends_continue(
    before: list[tuple[str, dict[str, Any]]],
    after: list[tuple[str, dict[str, Any]]],
    cut_at: float,
    junk: bytes,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        store = RunStore.create(home, "run")
        written = [store.append_event(kind, **data) for kind, data in before]
        store.close()

        # The crash: the file ends at any byte, maybe followed by garbage of a torn write.
        raw = store.events_path.read_bytes() if written else b""
        cut = round(cut_at * len(raw))
        store.events_path.write_bytes(raw[:cut] + junk)
        complete = raw[:cut].count(b"\n")

        assert list(RunStore(store.dir).raw_events()) == written[:complete]

        reopened = RunStore.open("run", home=home)
        added = [reopened.append_event(kind, **data) for kind, data in after]
        reopened.close()

        assert [e["seq"] for e in added] == list(range(complete + 1, complete + 1 + len(after)))
        assert list(RunStore(store.dir).raw_events()) == written[:complete] + added
        text = store.events_path.read_bytes()
        assert text == b"" or text.endswith(b"\n")
        lines = text.splitlines()
        assert [json.loads(line) for line in lines] == written[:complete] + added


# ---- finding runs ----------------------------------------------------------------


def _make_runs(home: Path, *run_ids: str) -> None:
    for run_id in run_ids:
        RunStore.create(home, run_id)


def test_open_without_id_gives_the_newest_run(tmp_path: Path) -> None:
    _make_runs(tmp_path, "20240101-090000-abcd", "20240301-120000-0001", "20240201-080000-ffff")
    assert RunStore.open(home=tmp_path).run_id == "20240301-120000-0001"


def test_open_uses_pd_home_by_default() -> None:
    store = RunStore.create()
    assert store.dir.parent == runs_dir()
    assert "pd-home" in store.dir.parts  # the autouse fixture's PD_HOME
    assert RunStore.open().dir == store.dir


def test_open_without_id_prefers_the_later_of_two_runs_in_the_same_second(
    tmp_path: Path,
) -> None:
    _make_runs(tmp_path, "20240101-120000-ffff")
    time.sleep(0.05)
    _make_runs(tmp_path, "20240101-120000-0000")  # started later in the same second
    assert RunStore.open(home=tmp_path).run_id == "20240101-120000-0000"


def test_open_by_unique_prefix_and_exact_id(tmp_path: Path) -> None:
    _make_runs(tmp_path, "20240101-090000-abcd", "20240101-090000-abce", "20240201-080000-ffff")
    assert RunStore.open("202402", home=tmp_path).run_id == "20240201-080000-ffff"
    assert RunStore.open("20240101-090000-abcd", home=tmp_path).run_id == ("20240101-090000-abcd")
    opened = RunStore.open("20240101-090000-abce", home=tmp_path)
    assert opened.dir == tmp_path / ".pd" / "runs" / "20240101-090000-abce"


def test_an_exact_id_wins_over_longer_ids_it_prefixes(tmp_path: Path) -> None:
    _make_runs(tmp_path, "run-1", "run-10", "run-11")
    assert RunStore.open("run-1", home=tmp_path).run_id == "run-1"


@pytest.mark.parametrize(
    ("run_id", "problem"),
    [("20240101", "ambiguous run id '20240101'"), ("2023", "no such run '2023'")],
)
def test_open_ambiguous_or_missing_id_is_bad_input(
    tmp_path: Path, run_id: str, problem: str
) -> None:
    _make_runs(tmp_path, "20240101-090000-abcd", "20240101-100000-abce")
    with pytest.raises(RunNotFound) as caught:
        RunStore.open(run_id, home=tmp_path)
    assert caught.value.exit_code == 2
    assert caught.value.problem == problem
    assert "20240101-090000-abcd" in caught.value.fix  # says which ids exist


@pytest.mark.parametrize("run_id", [None, "x"])
def test_open_with_no_runs_at_all_is_bad_input(tmp_path: Path, run_id: str | None) -> None:
    with pytest.raises(RunNotFound) as caught:
        RunStore.open(run_id, home=tmp_path)
    assert caught.value.exit_code == 2
    assert "pd run" in caught.value.fix


# ---- state snapshot --------------------------------------------------------------


def test_state_round_trip_and_missing_state(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-1")
    assert store.read_state() is None
    store.write_state({"status": "running", "counts": {"merged": 2}})
    store.write_state({"status": "finished", "counts": {"merged": 3}})
    assert RunStore(store.dir).read_state() == {"status": "finished", "counts": {"merged": 3}}
    assert sorted(p.name for p in store.dir.iterdir() if p.is_file()) == ["created", "state.json"]


def test_write_state_never_shows_a_partial_file_to_a_concurrent_reader(
    tmp_path: Path,
) -> None:
    size, versions = 400_000, 150
    store = RunStore.create(tmp_path, "run-1")
    store.write_state(targets.state_version(0, size))
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    reader = ctx.Process(
        target=targets.read_states, args=(theirs, "reader", str(store.dir), size), daemon=True
    )
    reader.start()
    try:
        assert mine.poll(30), "reader did not start"
        mine.recv_bytes()  # started
        for version in range(1, versions + 1):
            store.write_state(targets.state_version(version, size))
        mine.send_bytes(b"stop")
        assert mine.poll(30), "reader did not report"
        report = json.loads(json.loads(mine.recv_bytes())["text"])
    finally:
        reader.join(5)
        if reader.is_alive():
            reader.kill()

    assert report["bad"] == []
    assert report["reads"] >= 20
    assert len(report["versions"]) >= 5, "reads must overlap many rewrites"
    assert set(report["versions"]) <= set(range(versions + 1))
