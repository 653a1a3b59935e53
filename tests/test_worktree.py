"""WorktreeManager against real git: create, reuse, recover, remove."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.errors import BadInput, GitError
from orchestrator.system import gitutil
from orchestrator.system.worktrees import SetupFailed, WorktreeManager, exclude_from_status
from tests.conftest import make_repo, run_git


def _commit(repo: Path, name: str, text: str) -> str:
    """A normal user commit in the main checkout."""
    (repo / name).write_text(text)
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", f"edit {name}")
    return run_git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"a.py": "a = 1\n", ".gitignore": "deps/\n"})


def test_fresh_prepare_creates_branch_at_base_and_keeps_user_status_clean(repo: Path) -> None:
    manager = WorktreeManager(repo, repo / "worktrees")
    path = manager.prepare("w1", "main", "pd/run/t1")
    assert path == repo / "worktrees" / "w1"
    assert gitutil.current_branch(path) == "pd/run/t1"
    assert gitutil.rev_parse(path, "HEAD") == gitutil.rev_parse(repo, "main")
    assert (path / "a.py").read_text() == "a = 1\n"
    assert run_git(repo, "status", "--porcelain") == ""
    assert manager.list() == [Path(p) for p in [path.resolve()]]


def test_prepare_without_branch_is_detached(repo: Path) -> None:
    path = WorktreeManager(repo, repo.parent / "wt").prepare("int", "main", None)
    assert gitutil.current_branch(path) is None
    assert gitutil.rev_parse(path, "HEAD") == gitutil.rev_parse(repo, "main")


def test_exclude_from_status_adds_each_inside_path_once(repo: Path, tmp_path: Path) -> None:
    (repo / "ws" / "x").mkdir(parents=True)
    (repo / "ws" / "x" / "f").write_text("junk")
    assert run_git(repo, "status", "--porcelain") == "?? ws/"
    exclude_from_status(repo, [repo / "ws", tmp_path / "elsewhere", repo])
    exclude_from_status(repo, [repo / "ws", repo / "ws" / "x"])
    lines = (gitutil.common_dir(repo) / "info" / "exclude").read_text().splitlines()
    assert lines.count("/ws/") == 1
    assert "/ws/x/" not in lines  # already covered by /ws/
    assert not any("elsewhere" in line for line in lines)
    assert run_git(repo, "status", "--porcelain") == ""


def test_reuse_resets_to_new_base_drops_edits_but_keeps_ignored(repo: Path) -> None:
    manager = WorktreeManager(repo, repo / "worktrees")
    path = manager.prepare("w1", "main", "pd/run/t1")
    (path / "a.py").write_text("edited by agent\n")
    (path / "stray.txt").write_text("untracked\n")
    (path / "newdir").mkdir()
    (path / "newdir" / "f.py").write_text("x\n")
    (path / "deps").mkdir()
    (path / "deps" / "lib.txt").write_text("installed\n")
    run_git(path, "add", "stray.txt")
    new_base = _commit(repo, "a.py", "a = 2\n")

    again = manager.prepare("w1", "main", "pd/run/t2")

    assert again == path
    assert gitutil.current_branch(path) == "pd/run/t2"
    assert gitutil.rev_parse(path, "HEAD") == new_base
    assert (path / "a.py").read_text() == "a = 2\n"
    assert not (path / "stray.txt").exists()
    assert not (path / "newdir").exists()
    assert (path / "deps" / "lib.txt").read_text() == "installed\n"
    assert not gitutil.is_dirty(path)


def test_reuse_recovers_from_stale_index_lock(repo: Path) -> None:
    manager = WorktreeManager(repo, repo / "worktrees")
    path = manager.prepare("w1", "main", "pd/run/t1")
    (path / "a.py").write_text("half-written by a killed worker\n")
    (gitutil.git_dir(path) / "index.lock").write_text("")
    with pytest.raises(GitError):
        gitutil.git(path, "checkout", "-q", "--force", "main")  # the lock really blocks git
    manager.prepare("w1", "main", "pd/run/t1")
    assert (path / "a.py").read_text() == "a = 1\n"
    assert not (gitutil.git_dir(path) / "index.lock").exists()


def test_setup_runs_once_per_worktree(repo: Path, tmp_path: Path) -> None:
    count = tmp_path / "setup-count"
    setup = 'echo ran >> "$COUNT_FILE" && mkdir -p deps && touch deps/installed'
    env = {**os.environ, "COUNT_FILE": str(count)}
    manager = WorktreeManager(repo, repo / "worktrees", setup=setup, env=env)
    path = manager.prepare("w1", "main", "pd/run/t1")
    manager.prepare("w1", "main", "pd/run/t2")
    assert count.read_text() == "ran\n"
    assert (path / "deps" / "installed").exists()
    manager.prepare("w2", "main", None)
    assert count.read_text() == "ran\nran\n"


def test_setup_failure_raises_and_is_retried_on_next_prepare(repo: Path, tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    setup = f'test -f {ok} || {{ echo "cannot install"; exit 3; }}'
    manager = WorktreeManager(repo, repo / "worktrees", setup=setup)
    with pytest.raises(SetupFailed) as info:
        manager.prepare("w1", "main", "pd/run/t1")
    assert info.value.returncode == 3
    assert "cannot install" in str(info.value)
    assert setup in str(info.value)
    ok.write_text("")
    path = manager.prepare("w1", "main", "pd/run/t1")
    assert gitutil.current_branch(path) == "pd/run/t1"


def test_leftover_folder_is_replaced_by_a_fresh_worktree(repo: Path) -> None:
    manager = WorktreeManager(repo, repo / "worktrees")
    leftover = manager.path_for("w1")
    leftover.mkdir(parents=True)
    (leftover / "junk.txt").write_text("from a crashed run")
    path = manager.prepare("w1", "main", "pd/run/t1")
    assert not (path / "junk.txt").exists()
    assert gitutil.current_branch(path) == "pd/run/t1"


def test_branch_held_by_another_pd_worktree_is_taken_over(repo: Path) -> None:
    manager = WorktreeManager(repo, repo / "worktrees")
    manager.prepare("w1", "main", "pd/run/t1")
    path = manager.prepare("w2", "main", "pd/run/t1")
    assert gitutil.current_branch(path) == "pd/run/t1"


def test_branch_checked_out_by_user_is_refused(repo: Path) -> None:
    manager = WorktreeManager(repo, repo / "worktrees")
    with pytest.raises(GitError):
        manager.prepare("w1", "main", "main")
    assert gitutil.current_branch(repo) == "main"


def test_names_cannot_escape_root(repo: Path) -> None:
    manager = WorktreeManager(repo, repo / "worktrees")
    for bad in ("", "..", "a/b"):
        with pytest.raises(BadInput):
            manager.path_for(bad)


def test_remove_all_cleans_dirty_locked_and_half_created_but_not_user_worktrees(
    repo: Path, tmp_path: Path
) -> None:
    user_wt = tmp_path / "users-own"
    run_git(repo, "worktree", "add", "-q", "--detach", str(user_wt), "main")
    root = repo / "worktrees"
    manager = WorktreeManager(repo, root)
    dirty = manager.prepare("w1", "main", "pd/run/t1")
    (dirty / "a.py").write_text("dirty\n")
    (dirty / "new.txt").write_text("untracked\n")
    locked = manager.prepare("w2", "main", None)
    run_git(repo, "worktree", "lock", str(locked))
    gone = manager.prepare("w3", "main", None)
    run_git(repo, "worktree", "lock", str(gone))
    for child in gone.iterdir():  # registered and locked, folder half deleted
        if child.name != ".git":
            child.unlink()
    (gone / ".git").unlink()
    gone.rmdir()
    half = root / "w4"
    half.mkdir()
    (half / ".git").write_text("gitdir: /nowhere\n")

    manager.remove_all()

    listed = [Path(e["worktree"]).resolve() for e in gitutil.worktree_entries(repo)]
    assert listed == [repo.resolve(), user_wt.resolve()]
    assert not root.exists()
    assert manager.list() == []
    assert (user_wt / "a.py").exists()
    manager.prepare("w3", "main", None)  # a locked missing entry would block this


def test_remove_single_worktree(repo: Path) -> None:
    manager = WorktreeManager(repo, repo / "worktrees")
    manager.prepare("w1", "main", None)
    keep = manager.prepare("w2", "main", None)
    manager.remove("w1")
    assert manager.list() == [keep.resolve()]
    assert not manager.path_for("w1").exists()
