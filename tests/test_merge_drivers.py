"""The conflict check uses git's text merge, whatever the repository's merge drivers say
(issue 9, item 2): a ``merge=union`` line in ``.gitattributes`` (common for changelogs)
must not let two incompatible edits of one line both land, and pd changes none of the
user's files or settings to find out."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.engine.merger import Merger
from orchestrator.system import gitutil
from tests.conftest import make_repo, run_git
from tests.test_merger import commit_files, config_for, request, show

ATTRIBUTES = "CHANGES merge=union\n"


@pytest.fixture
def union_repo(tmp_path: Path) -> Path:
    repo = make_repo(
        tmp_path / "repo",
        {".gitattributes": ATTRIBUTES, "CHANGES": "v1: first\nv2: TODO\n", "a.py": "a = 1\n"},
    )
    return repo


def settings(repo: Path) -> tuple[str, str, str]:
    config = (repo / ".git" / "config").read_text()
    info = repo / ".git" / "info" / "attributes"
    return config, (repo / ".gitattributes").read_text(), info.read_text() if info.exists() else ""


def test_two_edits_of_one_line_under_a_union_driver_conflict(union_repo: Path) -> None:
    before = settings(union_repo)
    first = commit_files(union_repo, "pd/r/t1", {"CHANGES": "v1: first\nv2: search\n"})
    second = commit_files(union_repo, "pd/r/t2", {"CHANGES": "v1: first\nv2: export\n"})
    merger = Merger(config_for(union_repo))
    assert merger.merge(request(first, "t1")).merged
    head = gitutil.rev_parse(union_repo, "main")
    result = merger.merge(request(second, "t2"))
    assert not result.merged
    assert result.conflicts == ["CHANGES"]
    assert gitutil.rev_parse(union_repo, "main") == head
    assert show(union_repo, "main", "CHANGES") == "v1: first\nv2: search"
    assert settings(union_repo) == before


def test_edits_of_different_lines_under_a_union_driver_still_merge(union_repo: Path) -> None:
    first = commit_files(union_repo, "pd/r/t1", {"CHANGES": "v1: first!\nv2: TODO\n"})
    second = commit_files(union_repo, "pd/r/t2", {"CHANGES": "v1: first\nv2: TODO\nv3: x\n"})
    merger = Merger(config_for(union_repo))
    assert merger.merge(request(first, "t1")).merged
    result = merger.merge(request(second, "t2"))
    assert result.merged, result.reason
    assert show(union_repo, "main", "CHANGES") == "v1: first!\nv2: TODO\nv3: x"


def test_a_repository_merge_driver_command_never_runs(union_repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "driver-ran"
    (union_repo / ".gitattributes").write_text("*.py merge=mine\n")
    run_git(union_repo, "add", "-A")
    run_git(union_repo, "commit", "-q", "-m", "driver")
    run_git(union_repo, "config", "merge.mine.driver", f"touch {marker}; cp %B %A")
    first = commit_files(union_repo, "pd/r/t1", {"a.py": "a = 2\n"})
    second = commit_files(union_repo, "pd/r/t2", {"a.py": "a = 3\n"})
    merger = Merger(config_for(union_repo))
    assert merger.merge(request(first, "t1")).merged
    result = merger.merge(request(second, "t2"))
    assert not result.merged and result.conflicts == ["a.py"]
    assert not marker.exists()
