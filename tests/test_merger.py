"""The merge ratchet against real git, real gate processes and a real spawned merger."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

from orchestrator.engine.merger import Merger, MergerConfig, merger_main
from orchestrator.system import gitutil
from orchestrator.system.procs import die_with, kill_all_running, run_shell
from orchestrator.wire.messages import (
    MergeBatch,
    MergeRequest,
    MergeResult,
    Ready,
    Shutdown,
    from_bytes,
)
from tests.conftest import IDENTITY, make_repo, run_git


def commit_files(repo: Path, branch: str, files: dict[str, str], base: str = "main") -> str:
    """Commit ``files`` on ``branch`` (made from ``base``) without touching any checkout."""
    parent = gitutil.rev_parse(repo, f"refs/heads/{branch}") or gitutil.rev_parse(repo, base)
    assert parent is not None
    env = {**IDENTITY, "GIT_INDEX_FILE": str(repo / ".git" / f"tmp-index-{os.getpid()}")}
    gitutil.git(repo, "read-tree", parent, env=env)
    for name, text in files.items():
        blob = gitutil.git(repo, "hash-object", "-w", "--stdin", input=text)
        gitutil.git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", env=env)
    tree = gitutil.git(repo, "write-tree", env=env)
    commit = gitutil.git(
        repo, "commit-tree", tree, "-p", parent, "-m", f"work on {branch}", env=env
    )
    gitutil.git(repo, "update-ref", f"refs/heads/{branch}", commit)
    Path(env["GIT_INDEX_FILE"]).unlink()
    return commit


def user_commit(repo: Path, name: str, text: str) -> str:
    """A commit the user makes in their own checkout of main."""
    (repo / name).write_text(text)
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", f"user edits {name}")
    return run_git(repo, "rev-parse", "HEAD")


def show(repo: Path, rev: str, name: str) -> str:
    return gitutil.git(repo, "show", f"{rev}:{name}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"a.py": "a = 1\n", "b.py": "b = 1\n"})


def config_for(repo: Path, gate: str = "true", timeout: float = 30, **kw: object) -> MergerConfig:
    work = repo.parent / "work"
    return MergerConfig(
        repo=str(repo),
        target_branch="main",
        integration_path=str(work / "worktrees" / "integration"),
        gate_command=gate,
        gate_timeout=timeout,
        log_dir=str(work / "logs"),
        **kw,  # type: ignore[arg-type]
    )


def request(commit: str, task: str = "t1", attempt: int = 1) -> MergeRequest:
    return MergeRequest(
        task_id=task, attempt=attempt, branch=f"pd/r/{task}", commit=commit, title="do it"
    )


def test_fast_forward_passing_gate_moves_target(repo: Path) -> None:
    feat = commit_files(repo, "pd/r/t1", {"c.py": "c = 1\n"})
    merger = Merger(config_for(repo, gate="test -f c.py && echo gate-ran"))
    result = merger.merge(request(feat))
    assert result.merged, result.reason
    assert result.head == feat == gitutil.rev_parse(repo, "main")
    assert result.seconds > 0
    log = Path(merger.config.log_dir) / "gate-t1-1.log"
    assert log.read_text() == "gate-ran\n"


def test_diverged_clean_merge_makes_two_parent_commit(repo: Path) -> None:
    feat = commit_files(repo, "pd/r/t1", {"c.py": "c = 1\n"})
    old = user_commit(repo, "b.py", "b = 2\n")
    gate = 'grep -q "b = 2" b.py && test -f c.py'
    result = Merger(config_for(repo, gate=gate)).merge(request(feat))
    assert result.merged, result.reason
    head = gitutil.rev_parse(repo, "main")
    assert result.head == head
    assert gitutil.git(repo, "rev-list", "--parents", "-n1", head).split()[1:] == [old, feat]
    assert gitutil.git(repo, "log", "-1", "--format=%an %s", head) == "pd pd: merge t1: do it"
    assert show(repo, head, "c.py") == "c = 1"
    assert show(repo, head, "b.py") == "b = 2"


def test_conflict_reports_paths_and_leaves_target(repo: Path, tmp_path: Path) -> None:
    feat = commit_files(repo, "pd/r/t1", {"a.py": "a = 'theirs'\n", "b.py": "b = 'x'\n"})
    old = user_commit(repo, "a.py", "a = 'ours'\n")
    marker = tmp_path / "gate-ran"
    result = Merger(config_for(repo, gate=f"touch {marker}")).merge(request(feat))
    assert not result.merged
    assert result.conflicts == ["a.py"]
    assert result.reason == "conflict with main in: a.py"
    assert gitutil.rev_parse(repo, "main") == old
    assert not marker.exists()


def test_failing_gate_returns_log_tail_and_leaves_target(repo: Path) -> None:
    feat = commit_files(repo, "pd/r/t1", {"c.py": "c = 1\n"})
    old = gitutil.rev_parse(repo, "main")
    gate = "for i in $(seq 1 100); do echo out$i; done; echo oops >&2; exit 3"
    merger = Merger(config_for(repo, gate=gate))
    result = merger.merge(request(feat, attempt=2))
    assert not result.merged
    assert result.reason == f"gate failed (exit 3): {gate}"
    tail = result.log_tail.splitlines()
    assert len(tail) == 40
    assert tail[-1] == "oops"
    assert tail[0] == "out62"
    assert gitutil.rev_parse(repo, "main") == old
    full = (Path(merger.config.log_dir) / "gate-t1-2.log").read_text()
    assert full.startswith("out1\n")


def test_gate_timeout_is_a_rejection(repo: Path) -> None:
    feat = commit_files(repo, "pd/r/t1", {"c.py": "c = 1\n"})
    old = gitutil.rev_parse(repo, "main")
    result = Merger(config_for(repo, gate="echo started; sleep 30", timeout=0.5)).merge(
        request(feat)
    )
    assert not result.merged
    assert result.reason == "gate timed out after 0.5s"
    assert "started" in result.log_tail
    assert gitutil.rev_parse(repo, "main") == old


RACING_GATE = """
if [ ! -f "$MARK" ]; then
  touch "$MARK"
  export GIT_INDEX_FILE="$MARK.index"
  git read-tree main
  blob=$(echo other | git hash-object -w --stdin)
  git update-index --add --cacheinfo 100644,$blob,other.txt
  c=$(git commit-tree $(git write-tree) -p main -m "someone else")
  git update-ref refs/heads/main $c
fi
"""


def test_lost_cas_race_retries_on_new_head_and_keeps_other_commit(
    repo: Path, tmp_path: Path
) -> None:
    run_git(repo, "checkout", "-q", "--detach")  # the racing commit bypasses any checkout
    feat = commit_files(repo, "pd/r/t1", {"c.py": "c = 1\n"})
    env = {**IDENTITY, "MARK": str(tmp_path / "raced")}
    merger = Merger(config_for(repo, gate=RACING_GATE, env=env))
    result = merger.merge(request(feat))
    assert result.merged, result.reason
    head = gitutil.rev_parse(repo, "main")
    assert result.head == head
    other = gitutil.git(repo, "log", "--format=%H", "--grep=someone else", "main")
    assert other and gitutil.is_ancestor(repo, other, head)
    assert gitutil.is_ancestor(repo, feat, head)
    assert show(repo, head, "other.txt") == "other"
    assert show(repo, head, "c.py") == "c = 1"
    assert (Path(merger.config.log_dir) / "gate-t1-1-retry1.log").exists()


def test_already_merged_is_a_no_op_without_gate(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "gate-ran"
    head = gitutil.rev_parse(repo, "main")
    assert head is not None
    result = Merger(config_for(repo, gate=f"touch {marker}")).merge(request(head))
    assert result.merged and result.head == head
    assert not marker.exists()


def test_merge_that_changes_nothing_is_already_merged_not_merged(
    repo: Path, tmp_path: Path
) -> None:
    feat = commit_files(repo, "pd/r/t1", {"b.py": "b = 2\n"})
    old = user_commit(repo, "b.py", "b = 2\n")
    marker = tmp_path / "gate-ran"
    result = Merger(config_for(repo, gate=f"touch {marker}")).merge(request(feat))
    assert not result.merged and result.already_merged and result.head == old
    assert "already holds" in result.reason
    assert gitutil.rev_parse(repo, "main") == old
    assert not marker.exists()


def test_users_clean_checkout_is_kept_in_step(repo: Path) -> None:
    feat = commit_files(repo, "pd/r/t1", {"a.py": "a = 2\n", "c.py": "c = 1\n"})
    result = Merger(config_for(repo)).merge(request(feat))
    assert result.merged, result.reason
    assert run_git(repo, "status", "--porcelain") == ""
    assert (repo / "a.py").read_text() == "a = 2\n"
    assert (repo / "c.py").read_text() == "c = 1\n"


def test_users_local_edits_survive_sync_and_conflicting_ones_only_log(repo: Path) -> None:
    (repo / "b.py").write_text("b = 'mine'\n")
    feat = commit_files(repo, "pd/r/t1", {"c.py": "c = 1\n"})
    merger = Merger(config_for(repo))
    assert merger.merge(request(feat)).merged
    assert run_git(repo, "status", "--porcelain") == "M b.py"
    assert (repo / "c.py").exists()

    (repo / "a.py").write_text("a = 'mine'\n")
    feat2 = commit_files(repo, "pd/r/t2", {"a.py": "a = 'theirs'\n"}, base="main")
    result = merger.merge(request(feat2, task="t2"))
    assert result.merged and gitutil.rev_parse(repo, "main") == feat2
    assert (repo / "a.py").read_text() == "a = 'mine'\n"
    assert "warning" in (Path(merger.config.log_dir) / "merger.log").read_text()


def test_unexpected_error_is_the_mergers_own_not_a_rejection(repo: Path) -> None:
    orphan_tree = gitutil.git(repo, "rev-parse", "main^{tree}")
    orphan = gitutil.git(repo, "commit-tree", orphan_tree, "-m", "unrelated", env=IDENTITY)
    merger = Merger(config_for(repo))
    result = merger.merge(request(orphan))
    assert not result.merged and result.infrastructure
    assert result.reason.startswith("merger error:")
    unknown = merger.merge(request("0" * 40))  # the branch's fault: a plain rejection
    assert not unknown.merged and not unknown.infrastructure


def _spawn(config: dict[str, object]) -> tuple[multiprocessing.Process, object]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=merger_main, args=(theirs, config), daemon=True)
    proc.start()
    theirs.close()
    return proc, ours


def test_merger_main_over_spawned_pipe(repo: Path) -> None:
    feat = commit_files(repo, "pd/r/t1", {"c.py": "c = 1\n"})
    proc, conn = _spawn(asdict(config_for(repo)))
    assert conn.poll(30)
    ready = from_bytes(conn.recv_bytes())
    assert isinstance(ready, Ready) and ready.error == "" and ready.pid == proc.pid
    conn.send_bytes(request(feat).to_bytes())
    assert conn.poll(30)
    result = from_bytes(conn.recv_bytes())
    assert isinstance(result, MergeResult) and result.merged and result.head == feat
    conn.send_bytes(Shutdown().to_bytes())
    proc.join(10)
    assert proc.exitcode == 0


def test_merger_main_reports_boot_failure(tmp_path: Path) -> None:
    config = asdict(config_for(tmp_path / "not-a-repo"))
    proc, conn = _spawn(config)
    assert conn.poll(30)
    ready = from_bytes(conn.recv_bytes())
    assert isinstance(ready, Ready) and "not a git repository" in ready.error
    proc.join(10)
    assert proc.exitcode == 0


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for_pid(path: Path) -> int:
    deadline = time.monotonic() + 120  # only ends a test that would hang
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return int(path.read_text())


def test_sigterm_kills_the_running_gate(repo: Path, tmp_path: Path) -> None:
    feat = commit_files(repo, "pd/r/t1", {"c.py": "c = 1\n"})
    pidfile = tmp_path / "gate.pid"
    gate = f"sleep 300 & echo $! > {pidfile}; wait"  # outlives the wait below if not killed
    proc, conn = _spawn(asdict(config_for(repo, gate=gate)))
    assert conn.poll(30)
    conn.recv_bytes()
    conn.send_bytes(request(feat).to_bytes())
    sleeper = _wait_for_pid(pidfile)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(10)
    assert proc.exitcode == 128 + signal.SIGTERM
    # Killed, not left running: a signal takes effect a moment after it is sent, so wait
    # for it (a sleeper that outlived the merger would run on and fail this).
    deadline = time.monotonic() + 120  # only ends a test that would hang
    while not _gone(sleeper):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_sigterm_also_kills_a_gate_whose_start_is_not_registered_yet(tmp_path: Path) -> None:
    """On a loaded machine a SIGTERM can arrive after a gate's shell is running but before
    ``run_shell``'s Popen has returned to register it (seen: its background child ran on
    for minutes). What the handler then finds: a child of ours leading its own group."""
    pidfile = tmp_path / "gate.pid"
    gate = subprocess.Popen(
        ["bash", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], start_new_session=True
    )
    sleeper = _wait_for_pid(pidfile)
    kill_all_running()
    assert gate.poll() is not None  # the shell is dead when the handler returns ...
    deadline = time.monotonic() + 120  # only ends a test that would hang
    while not _gone(sleeper):  # ... and its background child with it
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_command_whose_parent_died_before_it_could_watch_it_does_not_run(
    tmp_path: Path,
) -> None:
    """PR_SET_PDEATHSIG is set in the child after the fork; a parent gone by then sends no
    signal. The child sees it has another parent and dies instead of running orphaned
    (seen: a sandboxed command that looped for minutes after its worker had exited)."""
    ran = tmp_path / "ran"
    not_ours = os.getppid()  # the child's parent is us: a pid that is not, as after a death
    child = subprocess.Popen(["touch", str(ran)], preexec_fn=die_with(not_ours))
    assert child.wait() == -signal.SIGKILL and not ran.exists()
    ours = subprocess.Popen(["touch", str(ran)], preexec_fn=die_with(os.getpid()))
    assert ours.wait() == 0 and ran.exists()  # with its parent alive it runs


def test_killed_parent_takes_its_command_along(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = (
        "from orchestrator.system.procs import run_shell; "
        f"run_shell('echo $$ > {pidfile}; exec sleep 60', '.')"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent.parent)
    child = _wait_for_pid(pidfile)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 60
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child)


def test_run_shell_caps_output_keeping_head_and_tail(tmp_path: Path) -> None:
    result = run_shell("seq 1 100000", tmp_path, output_cap=1000, output_path=tmp_path / "o")
    assert result.ok
    assert result.output.startswith("1\n2\n")
    assert result.output.endswith("99999\n100000\n")
    assert "chars cut ...]" in result.output
    assert len(result.output) < 1100
    assert (tmp_path / "o").read_text().count("\n") == 100000


def test_run_shell_env_is_complete_not_an_overlay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PD_TEST_SECRET", "leak")
    echo = 'echo "[$PD_TEST_SECRET][$ONLY]"'
    assert run_shell(echo, tmp_path, env={"ONLY": "1"}).output == "[][1]\n"
    assert run_shell(echo, tmp_path).output == "[leak][]\n"


def test_sigterm_waits_for_the_ref_move_and_checkout_sync_to_finish() -> None:
    """A SIGTERM inside the critical section lets it finish, then exits before more work."""
    script = (
        "import os, signal\n"
        "from orchestrator.engine import sigterm\n"
        "signal.signal(signal.SIGTERM, sigterm.on_sigterm)\n"
        "with sigterm.held():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    print('section finished', flush=True)\n"
        "print('work after the section', flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.splitlines() == ["section finished"]
    assert result.returncode == 128 + signal.SIGTERM


def test_commands_get_default_sigint_even_from_a_process_that_ignores_it(tmp_path: Path) -> None:
    script = (
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "from orchestrator.system.procs import run_shell\n"
        "r = run_shell('grep SigIgn /proc/self/status', cwd=sys.argv[1], env=None, timeout=10)\n"
        "print(r.output.strip())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    ignored = int(result.stdout.split()[-1], 16)
    assert not ignored & (1 << (signal.SIGINT - 1)), result.stdout


def test_a_batch_lands_as_one_commit_and_a_clash_between_mates_is_deferred(repo: Path) -> None:
    old = gitutil.rev_parse(repo, "main")
    one = commit_files(repo, "pd/r/t1", {"one.py": "x = 1\n"})
    two = commit_files(repo, "pd/r/t2", {"two.py": "y = 2\n"})
    clash = commit_files(repo, "pd/r/t3", {"one.py": "x = 3\n"})  # clashes with t1 only
    merger = Merger(config_for(repo, gate="test -f one.py && test -f two.py"))
    items = [request(one, "t1").to_dict(), request(clash, "t3").to_dict()]
    deferred = merger.merge_batch(MergeBatch(1, items))
    assert (deferred.gated, deferred.deferred, deferred.conflicts) == (False, ["t3"], {})
    assert gitutil.rev_parse(repo, "main") == old  # nothing moved

    both = [request(one, "t1").to_dict(), request(two, "t2").to_dict()]
    landed = merger.merge_batch(MergeBatch(2, both))
    assert landed.gated and landed.passed
    head = gitutil.rev_parse(repo, "main")
    assert head == landed.head
    # One commit on the old head, holding both: the first-parent history has no
    # untested step.
    assert gitutil.git(repo, "rev-list", "--parents", "-n1", head).split()[1:] == [old, one, two]

    alone = merger.merge(request(clash, "t3"))  # on the new head it is a real conflict
    assert not alone.merged and alone.conflicts == ["one.py"]
