"""The sandbox around agents' commands, against real bubblewrap, git and processes.

Each test tries one escape from inside a sandboxed command and checks, from outside,
that it failed. The same commands run unsandboxed (``mode="off"``) as the control: they
show the escape is real where there is no sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import psutil
import pytest

from orchestrator.engine.merger import Merger
from orchestrator.system import gitutil
from orchestrator.system.procs import run_shell
from orchestrator.system.sandbox import Policy, Sandbox, describe, make_policy, unavailable_reason
from orchestrator.system.worktrees import WorktreeManager, task_branch
from orchestrator.wire.messages import MergeRequest
from tests.conftest import make_repo, pd, run_git, write_mission
from tests.test_merger import config_for

FINISH = {"*": [[{"tool_calls": [{"name": "finish", "input": {"summary": "done"}}]}]]}

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason="no bubblewrap here")


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A repository with two pd worktrees, a run store and a file in the test's /tmp."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    manager = WorktreeManager(repo, tmp_path / "worktrees")
    head = run_git(repo, "rev-parse", "HEAD")
    mine = manager.prepare("w1", head, task_branch("run1", "t1"))
    other = manager.prepare("w2", head, task_branch("run1", "t2"))
    store = tmp_path / "ws" / ".pd"
    store.mkdir(parents=True)
    (store / "secret.json").write_text("{}")
    return {"repo": repo, "mine": mine, "other": other, "store": store, "tmp": tmp_path}


def _policy(layout: dict[str, Path], mode: str = "bwrap", **kw: object) -> Policy:
    hidden = [layout["repo"], layout["tmp"] / "worktrees", layout["store"]]
    return make_policy(mode, hidden=hidden, **kw)  # type: ignore[arg-type]


def _run(layout: dict[str, Path], command: str, mode: str = "bwrap", **kw: object) -> str:
    box = Sandbox(_policy(layout, mode, **kw), layout["mine"], task_branch("run1", "t1"))
    env = {**os.environ, "PD_WORKER_ID": "w1", "SOME_API_KEY": "sk-secret", "DATABASE_URL": "pw"}
    result = run_shell(command, layout["mine"], env, timeout=60, sandbox=box)
    return result.output


@pytest.mark.parametrize("mode", ["bwrap", "off"])
def test_other_worktrees_the_checkout_and_the_store_are_out_of_reach(
    layout: dict[str, Path], mode: str
) -> None:
    other, repo, store = layout["other"], layout["repo"], layout["store"]
    out = _run(
        layout,
        f"cat {other}/a.txt; echo evil > {other}/planted; echo evil > {repo}/planted; "
        f"cat {store}/secret.json; echo x > {store}/planted; echo ok > mine.txt",
        mode,
    )
    planted = [p for p in (other, repo, store) if (p / "planted").exists()]
    assert (layout["mine"] / "mine.txt").read_text() == "ok\n"  # its own worktree is writable
    if mode == "off":
        assert planted == [other, repo, store]  # the control: unconfined, all three fall
        return
    assert planted == [] and "a\n" not in out and "{}" not in out


def test_writes_outside_the_worktree_fail_and_tmp_is_private(layout: dict[str, Path]) -> None:
    mark = layout["tmp"] / "outside.txt"
    out = _run(layout, f"echo x > {mark}; echo $TMPDIR; echo y > /tmp/own && cat /tmp/own")
    assert not mark.exists()
    assert out.splitlines()[-2:] == ["/tmp", "y"]
    assert not Path("/tmp/own").exists() or Path("/tmp/own").read_text() != "y\n"


def test_environment_is_an_allow_list_and_home_is_empty(layout: dict[str, Path]) -> None:
    out = _run(layout, "env; echo HOME-HAS:$(ls -A $HOME | wc -l)", pass_env=["DATABASE_URL"])
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert "SOME_API_KEY" not in names and "PD_WORKER_ID" in names
    assert "DATABASE_URL" in names  # named by the mission's pass_env
    assert "HOME-HAS:0" in out
    assert not any(n.endswith("_API_KEY") for n in names)


def test_proc_shows_only_the_sandbox(layout: dict[str, Path]) -> None:
    out = _run(layout, "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c sk-secret")
    assert out.strip().splitlines()[-1] == "0"
    pids = _run(layout, "ls /proc | grep -c '^[0-9]*$'")
    assert int(pids.strip()) < 10  # bwrap's init, bash, ls, grep: not the host's hundreds


def test_git_refs_config_and_hooks_are_read_only_but_commit_works(
    layout: dict[str, Path],
) -> None:
    repo = layout["repo"]
    main_before = run_git(repo, "rev-parse", "main")
    t2_before = run_git(repo, "rev-parse", "pd/run1/t2/work")
    out = _run(
        layout,
        "echo b > b.txt && git add b.txt && git -c user.name=a -c user.email=a@b "
        "commit -qm mine && echo COMMITTED; "
        "git update-ref refs/heads/main HEAD; git update-ref refs/heads/pd/run1/t2/work HEAD; "
        "git config core.fsmonitor 'touch /x'; "
        f"echo 'touch /x' > {repo}/.git/hooks/post-commit",
    )
    assert "COMMITTED" in out
    assert run_git(repo, "rev-parse", "main") == main_before
    assert run_git(repo, "rev-parse", "pd/run1/t2/work") == t2_before  # another task's
    assert run_git(repo, "log", "-1", "--format=%s", "pd/run1/t1/work") == "mine"
    assert "fsmonitor" not in (repo / ".git" / "config").read_text()
    assert not (repo / ".git" / "hooks" / "post-commit").exists()


def test_nothing_the_command_starts_outlives_it(layout: dict[str, Path]) -> None:
    pids = layout["tmp"] / "pids"
    pids.mkdir()
    policy = make_policy("bwrap", read_write=[pids])
    box = Sandbox(policy, layout["mine"], task_branch("run1", "t1"))
    marker = "pd-sandbox-survivor-probe"
    command = f"setsid bash -c 'exec -a {marker} sleep 600' & (sleep 600 &) ; echo started"
    result = run_shell(command, layout["mine"], dict(os.environ), timeout=60, sandbox=box)
    assert "started" in result.output
    left = [
        p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])
    ]
    assert left == []


def test_network_off_keeps_loopback(layout: dict[str, Path]) -> None:
    probe = (
        "python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); "
        "print('LOOPBACK', len(socket.if_nameindex()))\""
    )
    out = _run(layout, probe, network=False)
    assert "LOOPBACK 1" in out  # only lo: no other interface exists inside


def test_mode_off_changes_nothing_and_describe_says_which(layout: dict[str, Path]) -> None:
    policy = _policy(layout, "off")
    argv, env = Sandbox(policy, layout["mine"]).command(["true"], {"A": "1"})
    assert argv == ["true"] and env == {"A": "1"}
    assert describe(policy).startswith("off")
    assert describe(_policy(layout)).startswith("bwrap")
    assert Policy.from_dict(json.loads(json.dumps(_policy(layout).to_dict()))) == _policy(layout)


def test_the_gate_runs_sandboxed_and_cannot_move_the_target(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    run_git(repo, "checkout", "-q", "-b", "pd/r/t1")
    (repo / "c.txt").write_text("c\n")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", "c")
    feat = run_git(repo, "rev-parse", "HEAD")
    run_git(repo, "checkout", "-q", "main")
    main = run_git(repo, "rev-parse", "main")
    gate = f"git update-ref refs/heads/main {feat}; echo x > {repo}/planted; test -f c.txt"
    policy = make_policy("bwrap", hidden=[repo, repo.parent / "work"])
    merger = Merger(config_for(repo, gate=gate, sandbox=policy.to_dict()))
    req = MergeRequest(task_id="t1", attempt=1, branch="pd/r/t1", commit=feat, title="c")
    result = merger.merge(req)
    assert result.merged, result.reason  # the gate passed: only its escapes failed
    assert not (repo / "planted").exists()
    log = (Path(merger.config.log_dir) / "gate-t1-1.log").read_text()
    assert "Read-only file system" in log
    assert gitutil.rev_parse(repo, "main") == feat != main  # moved by the merger's CAS


def test_a_symlink_to_root_is_rejected_by_the_merger(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    run_git(repo, "checkout", "-q", "-b", "pd/r/t1")
    os.symlink("/", repo / "root")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", "link")
    feat = run_git(repo, "rev-parse", "HEAD")
    run_git(repo, "checkout", "-q", "main")
    main = run_git(repo, "rev-parse", "main")
    merger = Merger(config_for(repo, gate="true"))
    req = MergeRequest(task_id="t1", attempt=1, branch="pd/r/t1", commit=feat, title="c")
    result = merger.merge(req)
    assert not result.merged and "symlink" in result.reason and "outside" in result.reason
    assert gitutil.rev_parse(repo, "main") == main


def _no_bwrap_path(tmp_path: Path) -> str:
    """A PATH with git and bash but no bwrap: a machine without the sandbox."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "bash", "sh"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("sandbox", [None, "off"])
def test_without_bwrap_pd_refuses_unless_the_mission_turns_it_off(
    project: Path, tmp_path: Path, sandbox: str | None
) -> None:
    fields = {"sandbox": sandbox} if sandbox else {}
    mission = write_mission(tmp_path / "m", [{"id": "a", "title": "a"}], FINISH, **fields)
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {"PATH": _no_bwrap_path(tmp_path)}
    result = pd("validate", str(mission), "--repo", str(project), cwd=tmp_path, env=env)
    if sandbox == "off":
        assert result.returncode == 0, result.stdout + result.stderr
        assert "sandbox: off" in result.stdout
        return
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sandbox" in lines[0] and '"sandbox": "off"' in lines[0]
    assert str(mission) in lines[0] and "bwrap" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "bin"])


def test_validate_names_the_sandbox_in_force(project: Path, tmp_path: Path) -> None:
    mission = write_mission(
        tmp_path / "m", [{"id": "a", "title": "a"}], FINISH, sandbox={"network": False}
    )
    result = pd("validate", str(mission), "--repo", str(project), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sandbox: bwrap (network off, loopback only)" in result.stdout
