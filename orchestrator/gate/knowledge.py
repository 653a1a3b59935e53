"""What the queue has learnt about the candidates still open, from finished runs.

Only facts are stored; everything the planner needs is derived from them, so a run that
is cancelled, a candidate that is dropped or a result that turns out to be a flake never
leaves stale state behind:

- ``failed``: sets whose run failed (with everything below it passed), each believed to
  hold at least one broken candidate;
- ``cleared``: candidates that passed on some tree that did not land (a speculative run
  whose base lost the race); they wait for a LAND run on the target;
- ``alone``: how many times each candidate failed as the only one in its run.

A failed set S gives the group of suspects S minus the candidates since landed or
cleared. It is dropped once a member is rejected (explained) or leaves (dropped or
conflicted: its state is unknown), or when no suspect is left (the failure was a flake).
A set that holds a smaller failed set is explained by it: its other members are untested
again, not suspects.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Knowledge:
    """The facts (see module docstring) about the open candidates."""

    failed: list[frozenset[str]] = field(default_factory=list)
    cleared: set[str] = field(default_factory=set)
    alone: Counter[str] = field(default_factory=Counter)
    last_failed_tests: dict[str, frozenset[str]] = field(default_factory=dict)

    def record_pass(self, ids: tuple[str, ...], landed: bool) -> None:
        """A run of ``ids`` passed; unless it landed they wait to land."""
        if landed:
            self.cleared.difference_update(ids)
        else:
            self.cleared.update(ids)

    def record_fail(self, ids: tuple[str, ...], tests: frozenset[str]) -> None:
        """A run of ``ids`` failed on a tree whose base had passed."""
        self.cleared.difference_update(ids)  # they passed elsewhere, not together
        self.failed.append(frozenset(ids))
        if len(ids) == 1:
            self.alone[ids[0]] += 1
        for cid in ids:
            if tests:
                self.last_failed_tests[cid] = tests

    def groups(self, landed: set[str], gone: set[str]) -> list[frozenset[str]]:
        """The suspect groups: for each failed set still informative and not explained by
        a smaller one, its members not since landed or cleared. ``gone`` are the
        candidates rejected, dropped or conflicted. Prunes the facts it drops."""
        live: dict[frozenset[str], frozenset[str]] = {}
        for failed in self.failed:
            if failed & gone:
                continue  # a member was rejected (explained) or left (state unknown)
            suspects = failed - landed - self.cleared
            if suspects:
                live[failed] = suspects
        self.failed = list(live)
        unique = set(live.values())
        return [s for s in unique if not any(other < s for other in unique)]
