"""The agent loop end to end: real ScriptedProvider, real cassettes, real files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agent.loop import NUDGE, TEXT_ONLY_LIMIT, build_handoff, run_agent
from orchestrator.errors import ProviderError
from orchestrator.providers import make_provider
from orchestrator.providers.base import ModelRequest, ModelResponse, ToolCall, Usage
from orchestrator.providers.scripted import ScriptedProvider
from orchestrator.team.tools import Toolbox


def write(path: str, content: str) -> dict[str, Any]:
    return {"name": "write_file", "input": {"path": path, "content": content}}


def finish(summary: str) -> dict[str, Any]:
    return {"name": "finish", "input": {"summary": summary}}


def cassette(tmp_path: Path, tasks: dict[str, Any]) -> Path:
    path = tmp_path / "cassette.json"
    path.write_text(json.dumps({"version": 1, "tasks": tasks}))
    return path


def run(provider: ScriptedProvider, root: Path, **kw: Any) -> tuple[Any, list[dict], Toolbox]:
    """Run the loop with defaults and collect the transcript."""
    records: list[dict] = []
    box = Toolbox(root)
    args: dict[str, Any] = {
        "system": "You are a test agent.",
        "prompt": "Do the task.",
        "model": "test-model",
        "max_tokens": 1000,
        "max_turns": 10,
        "task_id": "t1",
        "attempt": 1,
        "record": records.append,
    }
    args.update(kw)
    return run_agent(provider, box, **args), records, box


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "wt"
    path.mkdir()
    return path


def usage(inp: int, out: int) -> dict[str, int]:
    return {"input_tokens": inp, "output_tokens": out}


THREE_TURNS = [
    {"text": "Writing.", "tool_calls": [write("src/x.py", "X = 1\n")], "usage": usage(900, 120)},
    {
        "tool_calls": [{"name": "run_command", "input": {"command": "cat src/x.py"}}],
        "usage": usage(1000, 30),
    },
    {"text": "Done.", "tool_calls": [finish("added x")], "usage": usage(1100, 10)},
]


def test_multi_turn_run_writes_a_file_and_finishes(tmp_path: Path, root: Path) -> None:
    provider = ScriptedProvider(cassette(tmp_path, {"t1": [THREE_TURNS]}))
    lines: list[str] = []
    result, records, _ = run(provider, root, on_tool=lines.append)
    assert (root / "src/x.py").read_text() == "X = 1\n"
    assert result.finished and result.summary == "added x" and result.turns == 3
    assert result.usage == Usage(input_tokens=3000, output_tokens=160)
    assert lines == ["write_file src/x.py", "run_command: cat src/x.py", "finish"]
    tool = next(r for r in records if r["kind"] == "tool" and r["name"] == "run_command")
    assert tool["result"] == "exit code: 0\nX = 1\n" and tool["is_error"] is False


def test_transcript_records_are_json_and_complete(tmp_path: Path, root: Path) -> None:
    provider = ScriptedProvider(cassette(tmp_path, {"t1": [THREE_TURNS]}))
    _, records, _ = run(provider, root)
    for record in records:
        assert json.loads(json.dumps(record)) == record
    kinds = [r["kind"] for r in records]
    assert kinds == ["request", "response", "tool"] * 3 + ["end"]
    assert records[0]["system"] == "You are a test agent." and records[0]["tools"]
    # later requests carry only what is new: the previous reply and its tool results
    second = records[3]["new_messages"]
    assert [m["role"] for m in second] == ["assistant", "user"]
    assert second[1]["content"][0]["type"] == "tool_result"


def test_second_attempt_replays_second_entry_and_later_ones_the_last(
    tmp_path: Path, root: Path
) -> None:
    attempts = [[{"tool_calls": [write(f"a{n}.txt", "x"), finish(f"attempt {n}")]}] for n in (1, 2)]
    provider = ScriptedProvider(cassette(tmp_path, {"t1": attempts}))
    assert run(provider, root, attempt=2)[0].summary == "attempt 2"
    assert (root / "a2.txt").exists() and not (root / "a1.txt").exists()
    assert run(provider, root, attempt=5)[0].summary == "attempt 2"


def test_turn_limit_ends_with_a_handoff_naming_touched_files(tmp_path: Path, root: Path) -> None:
    turns = [
        {"text": "first file", "tool_calls": [write("one.py", "1")]},
        {"text": "second file, tests next", "tool_calls": [write("lib/two.py", "2")]},
        {"tool_calls": [finish("never reached")]},
    ]
    provider = ScriptedProvider(cassette(tmp_path, {"t1": [turns]}))
    result, records, _ = run(provider, root, max_turns=2)
    assert not result.finished
    assert result.reason == "turn limit (2) reached" and result.turns == 2
    assert "lib/two.py, one.py" in result.handoff
    assert "second file, tests next" in result.handoff
    assert records[-1]["kind"] == "end" and records[-1]["handoff"] == result.handoff


def test_star_entry_serves_unknown_tasks(tmp_path: Path, root: Path) -> None:
    tasks = {
        "other": [[{"tool_calls": [finish("other")]}]],
        "*": [[{"tool_calls": [finish("star")]}]],
    }
    provider = ScriptedProvider(cassette(tmp_path, tasks))
    assert run(provider, root, task_id="t-unknown")[0].summary == "star"
    assert run(provider, root, task_id="other")[0].summary == "other"


def test_exhausted_cassette_raises_provider_error(tmp_path: Path, root: Path) -> None:
    path = cassette(tmp_path, {"t1": [[{"tool_calls": [write("a.txt", "x")]}]]})
    with pytest.raises(ProviderError, match=r"cassette\.json.*'t1' attempt 1.*1 turns; turn 2"):
        run(ScriptedProvider(path), root)


def test_missing_task_without_star_raises(tmp_path: Path, root: Path) -> None:
    path = cassette(tmp_path, {"t1": [[{"tool_calls": [finish("x")]}]]})
    with pytest.raises(ProviderError, match=r"no entry for task 'zz'"):
        run(ScriptedProvider(path), root, task_id="zz")


def test_should_stop_aborts_between_turns(tmp_path: Path, root: Path) -> None:
    provider = ScriptedProvider(cassette(tmp_path, {"t1": [THREE_TURNS]}))
    seen: list[str] = []
    result, records, _ = run(provider, root, on_tool=seen.append, should_stop=lambda: bool(seen))
    assert not result.finished and result.reason == "aborted" and result.turns == 1
    assert "src/x.py" in result.handoff
    assert sum(r["kind"] == "request" for r in records) == 1


def test_text_only_turn_gets_a_nudge(tmp_path: Path, root: Path) -> None:
    turns = [{"text": "Thinking..."}, {"tool_calls": [finish("ok")]}]
    result, records, _ = run(ScriptedProvider(cassette(tmp_path, {"t1": [turns]})), root)
    assert result.finished and result.turns == 2
    nudge = records[2]["new_messages"][1:]
    assert nudge == [{"role": "user", "content": [{"type": "text", "text": NUDGE}]}]


def test_a_model_that_never_calls_a_tool_ends_the_attempt_saying_so(
    tmp_path: Path, root: Path
) -> None:
    turns = [{"text": f"Let me think ({n})."} for n in range(20)]
    provider = ScriptedProvider(cassette(tmp_path, {"t1": [turns]}))
    result, records, _ = run(provider, root, max_turns=20)
    assert not result.finished and result.turns == TEXT_ONLY_LIMIT
    assert (
        result.reason
        == f"the model answered {TEXT_ONLY_LIMIT} turns in a row without calling a tool"
    )
    assert sum(r["kind"] == "request" for r in records) == TEXT_ONLY_LIMIT
    assert records[-1]["kind"] == "end" and records[-1]["reason"] == result.reason
    assert "without calling a tool" in result.handoff


def test_a_tool_call_between_text_only_turns_resets_the_count(tmp_path: Path, root: Path) -> None:
    talk = [{"text": "Hmm."}] * (TEXT_ONLY_LIMIT - 1)
    turns = [*talk, {"tool_calls": [write("a.txt", "a")]}, *talk, {"tool_calls": [finish("ok")]}]
    result, _, _ = run(ScriptedProvider(cassette(tmp_path, {"t1": [turns]})), root)
    assert result.finished and result.turns == len(turns)


def test_an_unknown_tool_is_refused_and_logged_as_refused(tmp_path: Path, root: Path) -> None:
    unknown = {"name": "delete_everything", "input": {"path": "."}}
    turns = [{"tool_calls": [unknown, write("a.txt", "a")]}, {"tool_calls": [finish("ok")]}]
    lines: list[str] = []
    result, records, box = run(
        ScriptedProvider(cassette(tmp_path, {"t1": [turns]})), root, on_tool=lines.append
    )
    assert result.finished and (root / "a.txt").exists()
    assert lines == ["refused unknown tool 'delete_everything'", "write_file a.txt", "finish"]
    refused, wrote, _ = [r for r in records if r["kind"] == "tool"]
    assert refused["refused"] == "unknown tool" and refused["is_error"] is True
    assert "unknown tool 'delete_everything'" in refused["result"]
    assert "refused" not in wrote and "delete_everything" not in box.used
    assert result.skills_used == ["write_file"]


def test_calls_after_finish_are_skipped_but_answered(tmp_path: Path, root: Path) -> None:
    turns = [{"tool_calls": [finish("ok"), write("late.txt", "x")]}]
    result, records, _ = run(ScriptedProvider(cassette(tmp_path, {"t1": [turns]})), root)
    assert result.finished and not (root / "late.txt").exists()
    tools = [r for r in records if r["kind"] == "tool"]
    assert [t["is_error"] for t in tools] == [False, True]


def test_tool_errors_go_back_to_the_model(tmp_path: Path, root: Path) -> None:
    turns = [{"tool_calls": [write("../escape.txt", "x")]}, {"tool_calls": [finish("ok")]}]
    _, records, _ = run(ScriptedProvider(cassette(tmp_path, {"t1": [turns]})), root)
    block = records[3]["new_messages"][1]["content"][0]
    assert block["is_error"] is True and block["content"].startswith("refused: ")
    assert not (tmp_path / "escape.txt").exists()


# ---- the scripted provider on its own ---------------------------------------------


def request(messages: list[dict], task: str = "t1", attempt: int = 1) -> ModelRequest:
    return ModelRequest("sys", messages, [], 100, "m", task, attempt)


def test_replies_are_stateless_with_deterministic_ids() -> None:
    provider = ScriptedProvider.from_data({"version": 1, "tasks": {"t1": [THREE_TURNS]}})
    asked = [{"role": "user", "content": "go"}, {"role": "assistant", "content": []}]
    first, again = provider.complete(request(asked)), provider.complete(request(asked))
    assert first == again
    assert first.tool_calls[0].id == "toolu_t1_1_1_0"
    assert first.stop_reason == "tool_use" and first.model == "m"
    text_only = ScriptedProvider.from_data({"version": 1, "tasks": {"t1": [[{"text": "hi"}]]}})
    assert text_only.complete(request([])).stop_reason == "end_turn"


def test_delay_sleeps_before_replying() -> None:
    provider = ScriptedProvider.from_data({"version": 1, "tasks": {"*": [[{"delay": 0.3}]]}})
    start = time.monotonic()
    provider.complete(request([]))
    assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "top level"),
        ({"version": 2, "tasks": {}}, "version"),
        ({"version": 1}, "tasks"),
        ({"version": 1, "tasks": {"t": []}}, "tasks.t"),
        ({"version": 1, "tasks": {"t": [[]]}}, "tasks.t attempt 1"),
        ({"version": 1, "tasks": {"t": [["x"]]}}, "turn 1: must be an object"),
        ({"version": 1, "tasks": {"t": [[{"txt": "typo"}]]}}, "unknown keys ['txt']"),
        ({"version": 1, "tasks": {"t": [[{"delay": -1}]]}}, "delay"),
        ({"version": 1, "tasks": {"t": [[{"usage": {"in": 1}}]]}}, "usage"),
        ({"version": 1, "tasks": {"t": [[{"tool_calls": [{"input": {}}]}]]}}, 'needs a "name"'),
        ({"version": 1, "tasks": {"t": [[{"tool_calls": [{"name": "f", "input": 3}]}]]}}, "input"),
    ],
)
def test_malformed_cassette_names_file_and_problem(tmp_path: Path, data: Any, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProviderError) as info:
        ScriptedProvider(path)
    assert str(path) in str(info.value) and problem in str(info.value)


def test_unreadable_cassette_is_a_provider_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="cannot read"):
        ScriptedProvider(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ProviderError, match="not valid JSON"):
        ScriptedProvider(tmp_path / "broken.json")


def test_make_provider(tmp_path: Path) -> None:
    path = cassette(tmp_path, {"*": [[{"text": "hi"}]]})
    assert make_provider("scripted", cassette=path).complete(request([])).text == "hi"
    with pytest.raises(ProviderError, match="unknown provider 'nope'"):
        make_provider("nope")
    with pytest.raises(ProviderError, match="needs a cassette"):
        make_provider("scripted")


def test_response_round_trips_and_builds_the_assistant_message() -> None:
    response = ModelResponse(
        "hi", [ToolCall("id1", "finish", {"summary": "s"})], "tool_use", Usage(1, 2, 3, 4), "m"
    )
    assert ModelResponse.from_dict(json.loads(json.dumps(response.to_dict()))) == response
    assert response.to_message() == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "hi"},
            {"type": "tool_use", "id": "id1", "name": "finish", "input": {"summary": "s"}},
        ],
    }
    assert Usage(1, 2, 3, 4) + Usage(1, 1, 1, 1) == Usage(2, 3, 4, 5)


def test_build_handoff_without_touched_files() -> None:
    note = build_handoff("aborted", 3, [], "")
    assert "aborted" in note and "3 turns" in note and "Files it touched: none" in note


def test_attempt_near_the_context_limit_ends_with_a_handoff(tmp_path: Path) -> None:
    turns = [
        {
            "tool_calls": [{"name": "write_file", "input": {"path": "a.txt", "content": "a"}}],
            "usage": {"input_tokens": 700, "output_tokens": 50},
        },
        {
            "tool_calls": [{"name": "write_file", "input": {"path": "b.txt", "content": "b"}}],
            "usage": {"input_tokens": 900, "output_tokens": 50},
        },
        {"tool_calls": [{"name": "finish", "input": {"summary": "never reached"}}]},
    ]
    provider = ScriptedProvider.from_data({"version": 1, "tasks": {"t": [turns]}})
    result = run_agent(
        provider,
        Toolbox(tmp_path),
        system="s",
        prompt="p",
        model="m",
        max_tokens=100,
        max_turns=10,
        task_id="t",
        attempt=1,
        context_limit=1000,
    )
    assert not result.finished and result.turns == 2
    assert "context window" in result.reason and "b.txt" in result.handoff


def test_live_lines_pass_on_whole_lines_only() -> None:
    from orchestrator.agent.attempt import LiveLines

    shown: list[str] = []
    live = LiveLines(shown.append)
    for delta in ["Hel", "lo\nwor", "ld\n\n", "  tail"]:
        live(delta)
    assert shown == ["model: Hello", "model: world"]
