"""The git helpers that answer several questions with one process."""

from __future__ import annotations

from pathlib import Path

from orchestrator.system import gitutil
from orchestrator.system.worktrees import WorktreeManager, linked_admin_dir
from tests.conftest import make_repo, run_git


def test_resolve_names_each_revision_or_none(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"})
    head = run_git(repo, "rev-parse", "HEAD")
    tree = run_git(repo, "rev-parse", "HEAD^{tree}")
    assert gitutil.resolve(repo, "HEAD", "main^{tree}", "HEAD^1", "nope^{commit}") == [
        head,
        tree,
        None,  # the root commit has no parent
        None,
    ]
    assert gitutil.resolve(repo) == []


def test_a_linked_worktree_is_known_by_its_two_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"})
    path = WorktreeManager(repo, tmp_path / "wt").prepare("w1", "main", None)
    admin = linked_admin_dir(path)
    assert admin is not None and admin == gitutil.git_dir(path).resolve()
    assert linked_admin_dir(repo) is None  # the main checkout: a .git folder, no link
    run_git(repo, "worktree", "remove", "--force", str(path))
    path.mkdir()
    (path / ".git").write_text(f"gitdir: {admin}\n")  # a link git no longer backs
    assert linked_admin_dir(path) is None
