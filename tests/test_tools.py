"""The core tools on real files and real processes, with confinement tested hard."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.team.tools import Toolbox, cap_text, scrub_env


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the worktree that no tool may read or change."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("top secret\n")
    return path


@pytest.fixture
def root(tmp_path: Path, outside: Path) -> Path:
    """A worktree-like folder: a real .git, files, and symlinks pointing outside."""
    path = tmp_path / "wt"
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "src").mkdir()
    (path / "src" / "app.py").write_text("def main():\n    return 1\n")
    (path / "README.md").write_text("hello\nworld\n")
    (path / "link_dir").symlink_to(outside)
    (path / "link_file").symlink_to(outside / "secret.txt")
    (path / "link_passwd").symlink_to("/etc/passwd")
    (path / "dangling").symlink_to(outside / "created.txt")
    return path


@pytest.fixture
def box(root: Path) -> Toolbox:
    return Toolbox(root, env=os.environ, command_timeout=10)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- happy paths -----------------------------------------------------------------


def test_read_file_shows_range_header_and_text(box: Toolbox) -> None:
    res = box.call("read_file", {"path": "README.md"})
    assert not res.is_error
    assert res.content == "[README.md: lines 1-2 of 2]\nhello\nworld\n"
    part = box.call("read_file", {"path": "README.md", "offset": 2, "limit": 1})
    assert part.content == "[README.md: lines 2-2 of 2]\nworld\n"


def test_read_file_caps_output_and_says_where_to_continue(root: Path) -> None:
    (root / "big.txt").write_text("".join(f"line {i}\n" for i in range(1, 1001)))
    res = Toolbox(root, output_cap=100).call("read_file", {"path": "big.txt"})
    assert len(res.content) < 200
    assert "continue with offset=" in res.content.splitlines()[0]


def test_read_file_limit_and_empty_file(root: Path) -> None:
    (root / "ten.txt").write_text("".join(f"{i}\n" for i in range(1, 11)))
    (root / "empty.txt").write_text("")
    box = Toolbox(root)
    res = box.call("read_file", {"path": "ten.txt", "offset": 3, "limit": 2})
    assert res.content == "[ten.txt: lines 3-4 of 10; continue with offset=5]\n3\n4\n"
    assert box.call("read_file", {"path": "empty.txt"}).content == "[empty.txt: empty file]"


def test_symlink_loop_is_an_error_not_a_crash(box: Toolbox, root: Path) -> None:
    (root / "loop").symlink_to("loop")
    assert box.call("read_file", {"path": "loop/x"}).content.startswith("refused: ")
    assert box.call("search_files", {"pattern": "return"}).content == "src/app.py:2:     return 1"


def test_read_file_errors_are_actionable(box: Toolbox) -> None:
    assert "does not exist" in box.call("read_file", {"path": "nope.txt"}).content
    assert "not a file" in box.call("read_file", {"path": "src"}).content
    past = box.call("read_file", {"path": "README.md", "offset": 9})
    assert past.is_error and "has 2 lines" in past.content


def test_write_file_creates_parents_and_records_touched(box: Toolbox, root: Path) -> None:
    res = box.call("write_file", {"path": "pkg/sub/mod.py", "content": "x = 1\n"})
    assert not res.is_error
    assert (root / "pkg/sub/mod.py").read_text() == "x = 1\n"
    assert box.touched == {"pkg/sub/mod.py"}


def test_dotdot_that_stays_inside_is_fine(box: Toolbox, root: Path) -> None:
    res = box.call("write_file", {"path": "src/../notes.txt", "content": "n"})
    assert not res.is_error
    assert (root / "notes.txt").read_text() == "n"
    assert box.touched == {"notes.txt"}


def test_edit_file_replaces_exactly_one_match(box: Toolbox, root: Path) -> None:
    res = box.call("edit_file", {"path": "src/app.py", "old": "return 1", "new": "return 2"})
    assert not res.is_error
    assert (root / "src/app.py").read_text() == "def main():\n    return 2\n"
    assert box.touched == {"src/app.py"}


@pytest.mark.parametrize(("text", "count"), [("a b c", 0), ("x x", 2)])
def test_edit_file_refuses_zero_or_many_matches(
    box: Toolbox, root: Path, text: str, count: int
) -> None:
    (root / "f.txt").write_text(text)
    res = box.call("edit_file", {"path": "f.txt", "old": "x", "new": "y"})
    assert res.is_error
    assert f"matches {count} times" in res.content
    assert (root / "f.txt").read_text() == text
    assert box.touched == set()


def test_list_files_is_sorted_recursive_and_skips_git(box: Toolbox) -> None:
    listed = box.call("list_files", {}).content.splitlines()
    assert listed == sorted(listed)
    assert "src/app.py" in listed and "README.md" in listed
    assert not any(p.startswith(".git") for p in listed)
    assert not any(p.startswith("link_dir/") for p in listed)  # never walks outside
    assert box.call("list_files", {"pattern": "*.py"}).content == "src/app.py"
    assert box.call("list_files", {"path": "src"}).content == "src/app.py"


def test_search_files_reports_file_line_text(box: Toolbox, root: Path) -> None:
    (root / "blob.bin").write_bytes(b"\0\x01return 1\n")
    res = box.call("search_files", {"pattern": r"return \d"})
    assert res.content == "src/app.py:2:     return 1"
    assert box.call("search_files", {"pattern": "hello", "glob": "*.py"}).content == "(no matches)"
    bad = box.call("search_files", {"pattern": "("})
    assert bad.is_error and "bad regular expression" in bad.content


def test_search_files_does_not_leak_through_symlinks(box: Toolbox) -> None:
    assert "secret" not in box.call("search_files", {"pattern": "secret"}).content
    assert "root:" not in box.call("search_files", {"pattern": "^root:"}).content


def test_run_command_reports_exit_code_and_output(box: Toolbox, root: Path) -> None:
    ok = box.call("run_command", {"command": "pwd; echo err >&2"})
    assert not ok.is_error
    assert ok.content.startswith("exit code: 0\n")
    assert str(root.resolve()) in ok.content and "err" in ok.content
    failed = box.call("run_command", {"command": "exit 3"})
    assert failed.is_error and failed.content.startswith("exit code: 3")


def test_finish_marks_the_result(box: Toolbox) -> None:
    res = box.call("finish", {"summary": "done it"})
    assert res.finished and res.summary == "done it" and not res.is_error


# ---- bad input never raises ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "expect"),
    [
        ("delete_everything", {}, "unknown tool"),
        ("write_file", {"path": "a.txt"}, "missing argument(s) content"),
        ("write_file", {"path": 3, "content": ""}, "path must be a string"),
        ("read_file", {"path": "README.md", "offset": True}, "offset must be a integer"),
        ("read_file", {"path": "README.md", "colour": "red"}, "unknown argument 'colour'"),
        ("read_file", {"path": "README.md", "offset": 0}, "must be >= 1"),
        ("run_command", {"command": "true", "timeout": -1}, "positive"),
        ("write_file", {"path": "src", "content": "x"}, "write_file failed"),
        ("read_file", {"path": "a\0b"}, "NUL"),
    ],
)
def test_bad_input_comes_back_as_an_error(box: Toolbox, name: str, args: dict, expect: str) -> None:
    res = box.call(name, args)
    assert res.is_error
    assert expect in res.content


def test_specs_describe_every_tool(box: Toolbox) -> None:
    specs = {s["name"]: s for s in box.specs()}
    assert set(specs) == {
        "read_file", "write_file", "edit_file", "list_files",
        "search_files", "run_command", "finish",
    }  # fmt: skip
    for spec in specs.values():
        assert spec["description"] and spec["input_schema"]["type"] == "object"


# ---- confinement -----------------------------------------------------------------

ESCAPES = [
    ("read_file", {"path": "/etc/passwd"}),
    ("read_file", {"path": "../outside/secret.txt"}),
    ("read_file", {"path": "src/../../outside/secret.txt"}),
    ("read_file", {"path": "link_passwd"}),
    ("read_file", {"path": "link_file"}),
    ("read_file", {"path": "link_dir/secret.txt"}),
    ("read_file", {"path": ".git/config"}),
    ("read_file", {"path": "src/../.git/HEAD"}),
    ("read_file", {"path": "~/.bashrc"}),
    ("write_file", {"path": "/tmp/pd-escape.txt", "content": "x"}),
    ("write_file", {"path": "../outside/new.txt", "content": "x"}),
    ("write_file", {"path": "a/../../outside/new.txt", "content": "x"}),
    ("write_file", {"path": "link_file", "content": "overwritten"}),
    ("write_file", {"path": "link_dir/new.txt", "content": "x"}),
    ("write_file", {"path": "link_dir/deep/new.txt", "content": "x"}),
    ("write_file", {"path": "dangling", "content": "x"}),
    ("write_file", {"path": ".git/hooks/pre-commit", "content": "evil"}),
    ("write_file", {"path": ".git", "content": "gitdir: /elsewhere"}),
    ("edit_file", {"path": "link_file", "old": "top", "new": "low"}),
    ("edit_file", {"path": "../outside/secret.txt", "old": "top", "new": "low"}),
    ("list_files", {"path": "link_dir"}),
    ("list_files", {"path": ".."}),
    ("list_files", {"path": ".git"}),
    ("search_files", {"pattern": "secret", "path": "link_dir"}),
    ("search_files", {"pattern": "root", "path": "/etc"}),
]


@pytest.mark.parametrize(("name", "args"), ESCAPES, ids=lambda v: str(v))
def test_escapes_are_refused_and_change_nothing(
    box: Toolbox, root: Path, outside: Path, name: str, args: dict
) -> None:
    before_out, before_git = snapshot(outside), snapshot(root / ".git")
    res = box.call(name, args)
    assert res.is_error
    assert res.content.startswith("refused: ")
    assert "top secret" not in res.content
    assert snapshot(outside) == before_out
    assert snapshot(root / ".git") == before_git
    assert not Path("/tmp/pd-escape.txt").exists()
    assert box.touched == set()


def test_absolute_path_is_refused_even_inside_the_worktree(box: Toolbox, root: Path) -> None:
    res = box.call("write_file", {"path": str(root / "README.md"), "content": "x"})
    assert res.is_error and "is absolute" in res.content
    assert (root / "README.md").read_text() == "hello\nworld\n"


def test_parent_symlink_created_by_a_command_is_refused(box: Toolbox, outside: Path) -> None:
    box.call("run_command", {"command": f"mkdir sub && ln -s {outside} sub/out"})
    res = box.call("write_file", {"path": "sub/out/x.txt", "content": "x"})
    assert res.content.startswith("refused: ")
    assert not (outside / "x.txt").exists()


SEGMENTS = st.sampled_from(["src", "..", ".", "link_dir", "link_file", ".git", "new", "README.md"])


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(SEGMENTS, min_size=1, max_size=6))
def test_any_accepted_path_is_inside_root_and_outside_git(
    tmp_path_factory: pytest.TempPathFactory, parts: list[str]
) -> None:
    base = tmp_path_factory.mktemp("prop")
    root, outside = base / "wt", base / "outside"
    root.mkdir(), outside.mkdir(), (root / ".git").mkdir(), (root / "src").mkdir()
    (root / "link_dir").symlink_to(outside)
    (root / "link_file").symlink_to(outside / "f")
    box = Toolbox(root)
    box.call("write_file", {"path": "/".join(parts), "content": "x"})
    assert list(outside.iterdir()) == []
    assert list((root / ".git").iterdir()) == []


# ---- run_command: processes and environment --------------------------------------


def _gone(pid: int, within: float = 120.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_timeout_kills_the_whole_process_group(root: Path) -> None:
    box = Toolbox(root, command_timeout=1)
    res = box.call(
        "run_command", {"command": "sleep 60 & echo $! > child.pid; wait", "timeout": 30}
    )
    assert res.is_error and "timed out after 1s" in res.content
    child = int((root / "child.pid").read_text())
    assert _gone(child), f"child sleep {child} survived the timeout"


def test_background_children_do_not_outlive_the_command(box: Toolbox, root: Path) -> None:
    res = box.call("run_command", {"command": "sleep 60 & echo $! > child.pid"})
    assert res.content.startswith("exit code: 0")
    assert _gone(int((root / "child.pid").read_text()))


def test_abort_kills_a_running_command(box: Toolbox, root: Path) -> None:
    results = []
    cmd = "sleep 60 & echo $! > child.pid; wait"
    worker = threading.Thread(
        target=lambda: results.append(box.call("run_command", {"command": cmd}))
    )
    worker.start()
    while not (root / "child.pid").exists():
        time.sleep(0.02)
    box.abort()
    worker.join(120)
    assert not worker.is_alive()
    assert results[0].is_error and results[0].content.startswith("aborted")
    assert _gone(int((root / "child.pid").read_text()))


def test_output_cap_keeps_head_and_tail(root: Path) -> None:
    res = Toolbox(root, output_cap=1000).call("run_command", {"command": "seq 1 100000"})
    lines = res.content.splitlines()
    assert lines[:3] == ["exit code: 0", "1", "2"]
    assert lines[-1] == "100000"
    assert re.search(r"\[\.\.\. \d+ \w+ cut", res.content), "no note of what was cut"
    assert len(res.content) < 1200


def test_cap_text_keeps_both_ends() -> None:
    text = "HEAD" + "x" * 1000 + "TAIL"
    capped = cap_text(text, 100)
    assert capped.startswith("HEAD") and capped.endswith("TAIL")
    assert "[... 908 characters cut from the middle ...]" in capped
    assert cap_text("short", 100) == "short"


def test_command_env_has_no_api_keys(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-leak")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-oai-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-leak")
    monkeypatch.setenv("PD_HARMLESS", "kept")
    res = Toolbox(root).call("run_command", {"command": "env"})
    assert "leak" not in res.content
    assert "PD_HARMLESS=kept" in res.content


def test_scrub_env_drops_secret_names() -> None:
    env = {
        "PATH": "/bin",
        "HOME": "/h",
        "ANTHROPIC_BASE_URL": "u",
        "OPENAI_ORG": "o",
        "MY_API_KEY": "k",
        "db_password": "p",
        "AWS_SECRET_ACCESS_KEY": "s",
        "SLACK_TOKEN": "t",
    }
    assert scrub_env(env) == {"PATH": "/bin", "HOME": "/h"}


def test_undecodable_arguments_are_explained_to_the_model(tmp_path: Path) -> None:
    result = Toolbox(tmp_path).call("write_file", {"_raw": '{"path": "a.txt", "cont'})
    assert result.is_error and "not valid JSON" in result.content
    assert not (tmp_path / "a.txt").exists()


def test_a_custom_ending_is_offered_instead_of_finish_and_its_check_can_send_it_back(
    tmp_path: Path,
) -> None:
    from orchestrator.team.tools import Ending

    spec = {
        "name": "submit_plan",
        "description": "Hand in the plan.",
        "input_schema": {
            "type": "object",
            "properties": {"tasks": {"type": "array"}},
            "required": ["tasks"],
        },
    }
    box = Toolbox(tmp_path, ending=Ending(spec, lambda given: None if given["tasks"] else "empty"))
    names = [s["name"] for s in box.specs()]
    assert "submit_plan" in names and "finish" not in names
    refused = box.call("submit_plan", {"tasks": []})
    assert refused.is_error and not refused.finished and refused.content == "empty"
    accepted = box.call("submit_plan", {"tasks": [{"id": "a"}]})
    assert accepted.finished and accepted.final == {"tasks": [{"id": "a"}]}
    assert box.call("finish", {"summary": "x"}).is_error  # not on offer
