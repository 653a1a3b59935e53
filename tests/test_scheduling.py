"""Matching ready tasks to idle workers: properties over random teams and tasks."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.tasks.scheduling import fits, match, overlap

CAPS = ["writes-code", "runs-tests", "writes-docs"]
FILES = ["src/a.py", "src/b.py", "docs/", "tests/*.py", "README.md"]


@dataclass
class Role:
    id: str
    capabilities: list[str]


@dataclass
class Task:
    id: str
    role: str | None = None
    capabilities: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


ROLES = {
    "dev": Role("dev", ["writes-code", "runs-tests"]),
    "docs": Role("docs", ["writes-docs"]),
    "qa": Role("qa", ["runs-tests"]),
}

tasks_st = st.lists(
    st.builds(
        Task,
        id=st.uuids().map(str),
        role=st.sampled_from([None, *ROLES]),
        capabilities=st.lists(st.sampled_from(CAPS), max_size=2, unique=True),
        files=st.lists(st.sampled_from(FILES), max_size=2, unique=True),
    ),
    max_size=8,
)
team_st = st.lists(st.sampled_from(list(ROLES)), min_size=1, max_size=6)


@given(tasks_st, team_st, st.lists(st.sampled_from(FILES), max_size=3))
def test_matching_is_valid_maximal_and_in_priority_order(
    ready: list[Task], team: list[str], busy: list[str]
) -> None:
    idle = [f"w{i}" for i in range(len(team))]
    roles = {w: ROLES[r] for w, r in zip(idle, team, strict=True)}
    pairs = match(ready, idle, roles, busy)

    workers = [w for w, _ in pairs]
    chosen = [t.id for _, t in pairs]
    assert len(set(workers)) == len(workers) and len(set(chosen)) == len(chosen)
    assert all(fits(t, roles[w]) for w, t in pairs)
    free = [w for w in idle if w not in workers]
    left = [t for t in ready if t.id not in chosen]
    # maximal: nothing left over that a free worker could have taken
    assert not any(fits(t, roles[w]) for t in left for w in free)
    # a clash-free task is never passed over for a clashing one the same worker took,
    # and within one class a lower-priority task never takes a higher one's worker
    for worker, task in pairs:
        clashes = overlap(task.files, busy)
        for skipped in left:
            if not fits(skipped, roles[worker]):
                continue
            skipped_clashes = overlap(skipped.files, busy)
            if clashes == skipped_clashes:
                assert ready.index(task) < ready.index(skipped)
            else:  # only a clashing task may be passed over for a clash-free one
                assert skipped_clashes and not clashes


def test_flexible_task_leaves_the_only_fitting_worker_to_a_picky_one() -> None:
    anyone = Task("anyone")  # no role, no capabilities: every worker fits
    docs = Task("docs", role="docs")
    pairs = match([anyone, docs], ["w1", "w2"], {"w1": ROLES["docs"], "w2": ROLES["dev"]}, [])
    assert dict((t.id, w) for w, t in pairs) == {"anyone": "w2", "docs": "w1"}


def test_overlapping_task_waits_behind_one_that_does_not_overlap() -> None:
    first = Task("first", files=["src/a.py"])
    second = Task("second", files=["docs/"])
    pairs = match([first, second], ["w1"], {"w1": ROLES["dev"]}, busy_files=["src/"])
    assert [t.id for _, t in pairs] == ["second"]


def test_overlap_understands_folders_and_globs() -> None:
    assert overlap(["src/a.py"], ["src/"]) and overlap(["tests/test_x.py"], ["tests/*.py"])
    assert not overlap(["src/a.py"], ["src/b.py", "docs/"])
