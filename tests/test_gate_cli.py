"""``pd gate`` as CI runs it: real git, a bare repository standing in for the remote, the
real CLI in a subprocess. Branches add files; a broken one adds ``BROKEN``, which the test
command refuses; a conflicting one edits the line main changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

from tests.conftest import IDENTITY, make_repo, pd, run_git

TEST = "if test -e BROKEN; then echo FAIL: BROKEN is here; exit 1; fi"


def branch(repo: Path, name: str, files: dict[str, str], base: str = "main") -> str:
    run_git(repo, "checkout", "-q", "-b", name, base)
    for path, text in files.items():
        (repo / path).write_text(text)
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", f"{name}")
    run_git(repo, "checkout", "-q", "main")
    return run_git(repo, "rev-parse", name)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main with a file whose line a later commit on main changes (so a branch made
    before that change conflicts); branches: good, broken, clash."""
    repo = make_repo(tmp_path / "work", {"app.txt": "v1\n", "README": "r\n"})
    branch(repo, "good", {"good.txt": "ok\n"})
    branch(repo, "broken", {"BROKEN": "x\n"})
    branch(repo, "clash", {"app.txt": "theirs\n"})
    (repo / "app.txt").write_text("ours\n")
    run_git(repo, "commit", "-q", "-am", "main moves on")
    return repo


@pytest.fixture
def remote(repo: Path, tmp_path: Path) -> Path:
    """A bare clone of ``repo`` with every branch, as a hosting service holds it."""
    bare = tmp_path / "origin.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    run_git(repo, "remote", "add", "origin", str(bare))
    return bare


def gate(repo: Path, *args: str) -> tuple[int, dict]:
    result = pd("gate", *args, "--json", cwd=repo)
    assert result.returncode != 2, result.stderr
    return result.returncode, json.loads(result.stdout)


def statuses(report: dict) -> dict[str, str]:
    return {b["branch"]: b["status"] for b in report["branches"]}


# ---- pd gate check ---------------------------------------------------------------------


def test_check_passes_a_good_branch_and_moves_nothing(repo: Path) -> None:
    head = run_git(repo, "rev-parse", "main")
    code, report = gate(repo, "check", "good", "--into", "main", "--test", TEST)
    assert code == 0 and statuses(report) == {"good": "passed"}
    assert run_git(repo, "rev-parse", "main") == head
    assert run_git(repo, "status", "--porcelain") == ""


def test_check_fails_a_broken_branch_with_its_output(repo: Path) -> None:
    code, report = gate(repo, "check", "broken", "--into", "main", "--test", TEST)
    assert code == 1
    (entry,) = report["branches"]
    assert entry["status"] == "rejected" and "BROKEN" in entry["tail"]
    assert Path(entry["log"]).read_text().count("BROKEN") >= 1


def test_check_names_the_conflicting_paths(repo: Path) -> None:
    code, report = gate(repo, "check", "clash", "--into", "main", "--test", TEST)
    assert code == 1
    (entry,) = report["branches"]
    assert (entry["status"], entry["conflicts"]) == ("conflict", ["app.txt"])


def test_check_of_a_remote_branch_tests_what_the_remote_holds(repo: Path, remote: Path) -> None:
    run_git(repo, "branch", "-D", "good")  # only the remote has it now
    code, report = gate(
        repo, "check", "good", "--into", "main", "--remote", "origin", "--test", TEST
    )
    assert code == 0 and statuses(report) == {"good": "passed"}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["check", "nope", "--into", "main", "--test", TEST], "BRANCH"),
        (["check", "good", "--into", "nope", "--test", TEST], "--into"),
        (["check", "good", "--into", "main", "--remote", "nope", "--test", TEST], "--remote"),
        (["check", "good", "broken", "--into", "main", "--test", TEST], "exactly one"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_moves(
    repo: Path, args: list[str], field: str
) -> None:
    refs = run_git(repo, "for-each-ref")
    result = pd("gate", *args, cwd=repo)
    assert result.returncode == 2
    assert field in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert run_git(repo, "for-each-ref") == refs


def test_outside_a_repository_is_bad_input(tmp_path: Path) -> None:
    result = pd("gate", "check", "x", "--test", TEST, cwd=tmp_path)
    assert result.returncode == 2 and "not a git repository" in result.stderr


def test_junit_names_each_branch_and_why_it_failed(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "out" / "gate.xml"
    pd("gate", "check", "broken", "--into", "main", "--test", TEST, "--junit", str(path), cwd=repo)
    suite = ET.parse(path).getroot()
    (case,) = suite.findall("testcase")
    assert case.get("name") == "broken" and suite.get("failures") == "1"
    assert case.find("failure") is not None


# ---- pd gate: the queue ----------------------------------------------------------------


def first_parents(repo: Path, since: str, ref: str = "main") -> list[str]:
    out = run_git(repo, "rev-list", "--first-parent", f"{since}..{ref}")
    return out.splitlines()


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_gate_lands_the_good_and_reports_the_broken_and_the_conflict_on_a_remote(
    repo: Path, remote: Path, parallel: str
) -> None:
    before = run_git(remote, "rev-parse", "main")
    args = ["good", "broken", "clash", "--into", "main", "--remote", "origin", "--test", TEST]
    code, report = gate(repo, *args, "--parallel", parallel)

    assert code == 1
    assert statuses(report) == {"good": "merged", "broken": "rejected", "clash": "conflict"}
    by_name = {b["branch"]: b for b in report["branches"]}
    assert "BROKEN is here" in by_name["broken"]["tail"]
    assert by_name["clash"]["conflicts"] == ["app.txt"]
    # One new commit on the remote's main, on the old head, holding good and only good.
    (landed,) = first_parents(remote, before)
    assert run_git(remote, "rev-parse", f"{landed}^1") == before
    files = run_git(remote, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert "good.txt" in files and "BROKEN" not in files
    assert run_git(remote, "show", "main:app.txt") == "ours"

    code, again = gate(repo, *args)  # a rerun: nothing moves, good is known as merged
    assert code == 1 and statuses(again)["good"] == "already-merged"
    assert run_git(remote, "rev-parse", "main") == landed


def test_gate_into_a_local_branch_moves_it_and_its_checkout(repo: Path) -> None:
    before = run_git(repo, "rev-parse", "main")
    code, report = gate(repo, "good", "--into", "main", "--test", TEST)
    assert code == 0 and statuses(report) == {"good": "merged"}
    assert len(first_parents(repo, before)) == 1
    assert (repo / "good.txt").read_text() == "ok\n"  # the checkout of main came along
    assert run_git(repo, "status", "--porcelain") == ""


def test_every_landed_commit_is_a_tree_that_passed(repo: Path) -> None:
    """Many branches, some broken, batched: each commit the target moved through is a
    tree the test command passes."""
    names = []
    for n in range(6):
        broken = n in (1, 4)
        files = {"BROKEN" if broken else f"f{n}.txt": f"{n}\n"}
        branch(repo, f"b{n}", files | ({f"g{n}.txt": "x\n"} if broken else {}))
        names.append(f"b{n}")
    before = run_git(repo, "rev-parse", "main")
    code, report = gate(repo, *names, "--into", "main", "--test", TEST, "--parallel", "2")

    assert code == 1
    expected = {n: "rejected" if n in ("b1", "b4") else "merged" for n in names}
    assert statuses(report) == expected
    for commit in first_parents(repo, before):
        files = run_git(repo, "ls-tree", "-r", "--name-only", commit).splitlines()
        assert "BROKEN" not in files


def test_with_no_test_command_the_projects_own_is_detected(repo: Path) -> None:
    (repo / "Makefile").write_text(f"test:\n\t@{TEST}\n")
    run_git(repo, "add", "Makefile")
    run_git(repo, "commit", "-q", "-m", "make test")
    code, report = gate(repo, "good", "broken", "--into", "main")
    assert report["test_command"] == "make test"
    assert code == 1 and statuses(report) == {"good": "merged", "broken": "rejected"}


def test_with_no_test_command_and_nothing_to_detect_it_is_bad_input(repo: Path) -> None:
    refs = run_git(repo, "for-each-ref")
    result = pd("gate", "good", "--into", "main", cwd=repo)
    assert result.returncode == 2 and "--test" in result.stderr
    assert run_git(repo, "for-each-ref") == refs


def test_a_test_that_fails_once_is_retried_reported_flaky_and_does_not_reject(
    repo: Path, tmp_path: Path
) -> None:
    count = tmp_path / "runs"  # the first gate run fails, every later one passes
    flaky = f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}; test $n -ge 1"
    code, report = gate(repo, "good", "--into", "main", "--test", flaky, "--parallel", "1")
    assert code == 0 and statuses(report) == {"good": "merged"}
    assert report["flaky"] and count.read_text().strip() == "2"

    code, report = gate(repo, "broken", "--into", "main", "--test", TEST, "--retries", "0")
    assert code == 1 and report["flaky"] == []


def test_a_branch_that_conflicts_only_with_a_rejected_batch_mate_lands(repo: Path) -> None:
    """Two branches edit the same new file: tried together they conflict, but main holds
    neither. The broken one is rejected, so the other must land, not be reported as a
    conflict with main (which it never had)."""
    branch(repo, "first-broken", {"shared.txt": "one\n", "BROKEN": "x\n"})
    branch(repo, "second", {"shared.txt": "two\n"})
    code, report = gate(repo, "first-broken", "second", "--into", "main", "--test", TEST)
    assert code == 1
    assert statuses(report) == {"first-broken": "rejected", "second": "merged"}
    assert run_git(repo, "show", "main:shared.txt") == "two"


def test_a_branch_that_conflicts_with_a_landed_batch_mate_is_a_conflict_with_main(
    repo: Path,
) -> None:
    """The same clash where the first branch is good: it lands, and the second then
    conflicts with main as it now stands, paths named."""
    branch(repo, "first", {"shared.txt": "one\n"})
    branch(repo, "second", {"shared.txt": "two\n"})
    code, report = gate(repo, "first", "second", "--into", "main", "--test", TEST)
    assert code == 1
    assert statuses(report) == {"first": "merged", "second": "conflict"}
    (second,) = [b for b in report["branches"] if b["branch"] == "second"]
    assert second["conflicts"] == ["shared.txt"]
    assert run_git(repo, "show", "main:shared.txt") == "one"


def test_a_retry_runs_the_failing_tests_first_and_stops_at_the_first_failure(
    tmp_path: Path,
) -> None:
    """pytest's failing tests first: the broken branch's retries start with the test
    that failed and stop there, so the rest of the suite does not run again (its log
    shows the one failure and nothing passed); the good branch still lands."""
    repo = make_repo(
        tmp_path / "work",
        {  # test_z fails where BROKEN is
            "tests/test_a.py": "def test_a():\n    pass\n",
            "tests/test_z.py": "import os\ndef test_z():\n    assert not os.path.isfile('BROKEN')",
        },
    )
    branch(repo, "good", {"good.txt": "ok\n"})
    branch(repo, "broken", {"BROKEN": "x\n"})
    command = f"{sys.executable} -m pytest -q -p no:randomly -p no:xdist tests"
    code, report = gate(repo, "good", "broken", "--into", "main", "--test", command)
    assert code == 1 and statuses(report) == {"good": "merged", "broken": "rejected"}
    (broken,) = [b for b in report["branches"] if b["branch"] == "broken"]
    last = Path(broken["log"]).read_text()
    assert "1 failed" in last and "passed" not in last, last
    assert "test_z" in last


def test_a_gate_killed_mid_batch_moves_nothing_and_a_rerun_lands_the_batch_once(
    repo: Path, tmp_path: Path
) -> None:
    """SIGKILL ``pd gate`` while its gate runs on a batch: the target has not moved, no
    gate is left running, and a rerun lands every branch exactly once (a third run finds
    them all merged and changes nothing)."""
    started, release = tmp_path / "started", tmp_path / "release"
    pidfile = tmp_path / "gate.pid"
    held = f"echo $$ > {pidfile}; touch {started}; while [ ! -e {release} ]; do sleep 0.05; done"
    held += f"; {TEST}"
    head = run_git(repo, "rev-parse", "main")
    args = ["gate", "good", "good2", "--into", "main", "--test", held, "--parallel", "1"]
    branch(repo, "good2", {"good2.txt": "ok\n"})
    env = {**os.environ, **IDENTITY}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=repo, env=env)
    try:
        while not started.exists():
            assert proc.poll() is None, "pd gate ended before its gate started"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert run_git(repo, "rev-parse", "main") == head
    gate_shell = int(pidfile.read_text())
    while _running(gate_shell):  # it dies with pd gate (a hang here is the failure)
        time.sleep(0.02)
    release.touch()
    code, report = gate(repo, *args[1:])
    assert code == 0 and statuses(report) == {"good": "merged", "good2": "merged"}
    landed = run_git(repo, "rev-list", "--first-parent", f"{head}..main").split()
    assert len(landed) == 1  # one batch, one commit
    code, report = gate(repo, *args[1:])
    assert code == 0 and statuses(report) == {"good": "already-merged", "good2": "already-merged"}
    assert run_git(repo, "rev-list", "--first-parent", f"{head}..main").split() == landed


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
