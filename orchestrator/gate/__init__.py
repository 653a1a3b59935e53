"""The merge queue's decision core: batching, bisection, retries, speculative stacking.

No I/O: a driver (``pd run``'s merger, ``pd gate`` in CI) owns git and the gate command
and feeds this state machine; the same decisions then run in both places, and a
hypothesis state machine checks them in milliseconds.

A driver's loop::

    queue = MergeQueue(parallel=2, retries=1, prior_failure_rate=0.1)
    queue.add(Candidate("task-7", priority=3))        # any time; drop(id) if aborted
    while not queue.idle:
        for run in queue.start():                      # GateRun(run_id, ids, base, kind, run_first)
            tree = merge(tree_of(run.base), run.ids)   # base None: the target head now
            # a conflict on some id:  decisions = queue.conflicted(run.run_id, id)
            launch(run, tree)                          # run_first: failing tests first
        run_id, passed, failed_tests = wait_for_one()
        for decision in queue.finished(run_id, passed, failed_tests):
            ...  # Land(run_id, ids): CAS target -> that run's tree
                 # Reject(id, run_id, reason, failed_tests): back to its owner
                 # Cancel(run_id): stop it; a later finished() for it is ignored
                 # Flaky(run_id, tests): report

``queue.outcome[id]`` is how each candidate ended (``Outcome``); ``queue.open()`` lists
the ones still waiting. Modules: ``types`` (the vocabulary), ``batching`` (batch size
and split size from the failure rate, with the math), ``knowledge`` (what finished runs
taught), ``runs`` (the stack of runs in flight, landing rules), ``queue`` (planning).
"""

from orchestrator.gate.queue import MergeQueue
from orchestrator.gate.types import (
    Cancel,
    Candidate,
    Decision,
    Flaky,
    GateRun,
    Land,
    Outcome,
    QueueMisuse,
    Reject,
    RunKind,
)

__all__ = [
    "Cancel",
    "Candidate",
    "Decision",
    "Flaky",
    "GateRun",
    "Land",
    "MergeQueue",
    "Outcome",
    "QueueMisuse",
    "Reject",
    "RunKind",
]
