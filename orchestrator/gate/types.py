"""The merge queue's vocabulary: what goes in (candidates), what the driver runs (gate
runs) and what comes out (decisions). Plain frozen dataclasses and enums, so a driver,
an event log and a test can all hold them without touching the queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from orchestrator.errors import PdError


class QueueMisuse(PdError):
    """The driver called the queue out of turn (an unknown run or candidate, a result
    reported twice): a bug in the driver, never in the branches being merged."""


@dataclass(frozen=True)
class Candidate:
    """A branch waiting to land. Higher ``priority`` goes first (e.g. the task graph's
    critical-path length), then arrival order."""

    id: str
    priority: float = 0.0


class RunKind(Enum):
    """Why a run was started; for logs and for the driver's gate command line."""

    BATCH = "batch"  # untested candidates, sized from the failure rate
    BISECT = "bisect"  # part of a batch that failed: which of them is broken?
    RETRY = "retry"  # a candidate that failed alone, run alone again (flaky tests?)
    LAND = "land"  # candidates that passed on another tree, to land them on this one


@dataclass(frozen=True)
class GateRun:
    """One gate run for the driver to start.

    Its tree is ``base``'s tree (``None``: the target head when the run starts; else the
    tree of the run with that id) with ``ids`` merged in this order. ``run_first`` names
    tests that failed on this candidate before: run them first (pytest ``--lf``) so a
    real failure shows early."""

    run_id: int
    ids: tuple[str, ...]
    base: int | None
    kind: RunKind
    run_first: frozenset[str] = frozenset()


class Outcome(Enum):
    """How a candidate left the queue; each candidate gets exactly one."""

    LANDED = "landed"
    REJECTED = "rejected"
    DROPPED = "dropped"
    CONFLICTED = "conflicted"


@dataclass(frozen=True)
class Land:
    """Move the target to this run's tested tree (compare-and-swap from the previous
    ``Land``'s tree, or the head the run started on): ``ids`` are now merged."""

    run_id: int
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Reject:
    """``id`` is broken: return it to its owner with ``reason`` and the failing tests."""

    id: str
    run_id: int
    reason: str
    failed_tests: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Cancel:
    """Stop this run if it still runs: its result can no longer mean anything."""

    run_id: int


@dataclass(frozen=True)
class Flaky:
    """These tests failed and passed on the same tree (seen at ``run_id``); no names when
    the driver could not tell which tests failed (only that the run did)."""

    run_id: int
    tests: frozenset[str]


Decision = Land | Reject | Cancel | Flaky
