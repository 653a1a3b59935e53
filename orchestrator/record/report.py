"""What happened in a run, rebuilt from its event log (the source of truth)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from orchestrator.record import events as ev
from orchestrator.record.store import RunStore


def build_report(store: RunStore) -> dict[str, Any]:
    """Per-task outcomes, rejections, crashes and timings of one run."""
    state = store.read_state() or {}
    tasks: dict[str, dict[str, Any]] = {}
    for task in state.get("tasks", []):
        tasks[task["id"]] = {
            "id": task["id"],
            "title": task.get("title", ""),
            "state": task["state"],
            "attempts": task.get("attempts", 0),
            "workers": [],
            "rejections": [],
            "failures": [],
            "merged_at": None,
            "summary": task.get("summary", ""),
            "review": bool(task.get("review")),
            "reviews": [],
        }
    crashes, respawns, waits, flaky = [], [], [], []
    spend, skills = Spend(), SkillUse()
    started = finished = None
    info: dict[str, Any] = defaultdict(lambda: None)
    planning = Planning()
    for event in store.events():
        planning.add(event)
        task = tasks.get(getattr(event, "task", None) or "")
        match event:
            case ev.RunStarted():
                started = event.at
                info.update(
                    mission=event.mission,
                    target_branch=event.target_branch,
                    start_head=event.head,
                    repo=event.repo,
                )
            case ev.RunFinished():
                finished = event.at
                info.update(status=event.status, exit_code=event.exit_code, head=event.head)
            case ev.TaskStarted():
                waits.append(event.waited)
            case ev.WorkerCrashed():
                crashes.append(
                    {"worker": event.worker, "task": event.task, "exitcode": event.exitcode}
                )
            case ev.WorkerRespawned():
                respawns.append(event.worker)
            case ev.UsageRecorded():
                spend.add(event)
            case ev.SkillsUsed():
                skills.add(event)
            case ev.GateFlaky():
                flaky.append({"tasks": event.tasks, "tests": event.tests})
            case ev.BudgetExhausted() | ev.RunStopped() | ev.RunHalting():
                info["stop_reason"] = info["stop_reason"] or event.reason
        if task is not None:
            _task_event(task, event)
    ordered = sorted(waits)
    return {
        "run_id": store.run_id,
        **info,
        "status": info["status"] or state.get("status"),
        "seconds": round(finished - started, 2) if started and finished else None,
        "tasks": list(tasks.values()),
        "counts": state.get("counts", {}),
        **_rejection_counts(r for t in tasks.values() for r in t["rejections"]),
        "flaky": flaky,
        "crashes": crashes,
        "respawns": len(respawns),
        "median_wait": ordered[len(ordered) // 2] if ordered else None,
        "critical_path": state.get("critical_path", []),
        "spend": spend.to_dict(),
        "skills": skills.rows(),
        "budget": (state.get("permits") or {}).get("spend", {}).get("budget"),
        **({"planning": planning.to_dict()} if planning.attempts else {}),
    }


def _task_event(task: dict[str, Any], event: ev.Event) -> None:
    """What one event adds to its task's part of the report."""
    match event:
        case ev.TaskAssigned():
            task["workers"].append(event.worker)
        case ev.TaskRejected():
            task["rejections"].append(
                {
                    "attempt": event.attempt,
                    "reason": event.reason,
                    "conflicts": event.conflicts,
                    "detail": telling_line(event.log_tail),
                }
            )
        case ev.AttemptFailed():
            task["failures"].append({"attempt": event.attempt, "reason": event.reason})
        case ev.AttemptInfraFailed():
            reason = f"infrastructure (not charged to the agent): {event.reason}"
            task["failures"].append({"attempt": event.attempt, "reason": reason})
        case ev.ReviewDone() | ev.ReviewFailed() | ev.ReviewRoundsExhausted():
            task["reviews"].append(review_entry(event))
        case ev.TaskMerged():
            task["merged_at"] = event.head
        case ev.TaskAlreadyMerged():
            task["already_in"] = event.commit


def is_conflict(rejection: dict[str, Any]) -> bool:
    """A rejected merge is a conflict when git could not merge it (``conflicts`` lists
    the paths); otherwise the gate failed it."""
    return bool(rejection.get("conflicts"))


def _rejection_counts(rejections: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``rejections``: merges the gate failed; ``conflicts``: merges git could not make."""
    conflicts = gate = 0
    for rejection in rejections:
        conflicts += is_conflict(rejection)
        gate += not is_conflict(rejection)
    return {"rejections": gate, "conflicts": conflicts}


def merge_rejections(store: RunStore) -> dict[str, int]:
    """Rejected merges so far, from the event log: by the gate, and by conflicts; and
    gate runs that failed, then passed on the same tree (flaky, charged to nobody)."""
    events = list(store.events())
    counts = _rejection_counts(
        {"conflicts": e.conflicts} for e in events if isinstance(e, ev.TaskRejected)
    )
    flaky = sum(isinstance(e, ev.GateFlaky) for e in events)
    return {"gate": counts["rejections"], "conflicts": counts["conflicts"], "flaky": flaky}


def rejection_line(gate: int, conflicts: int, flaky: int = 0) -> str:
    line = f"{gate} rejected by the gate, {conflicts} merge conflict{'' if conflicts == 1 else 's'}"
    return line + (f", {flaky} flaky gate run{'' if flaky == 1 else 's'}" if flaky else "")


class Planning:
    """A goal mission's planning step: who planned, how often it failed, what it made."""

    def __init__(self) -> None:
        self.attempts = 0
        self.workers: list[str] = []
        self.failures: list[dict[str, Any]] = []
        self.accepted: ev.PlanAccepted | None = None

    def add(self, event: ev.Event) -> None:
        match event:
            case ev.PlanAssigned():
                self.attempts = max(self.attempts, event.attempt)
                self.workers.append(event.worker)
            case ev.PlanAttemptFailed():
                self.failures.append({"attempt": event.attempt, "reason": event.reason})
            case ev.PlanAccepted():
                self.accepted = event

    def to_dict(self) -> dict[str, Any]:
        done = self.accepted
        return {
            "state": "accepted" if done else "not accepted",
            "attempts": self.attempts,
            "workers": list(dict.fromkeys(self.workers)),
            "failures": self.failures,
            "tasks": [t["id"] for t in done.tasks] if done else [],
            "critical_path": done.critical_path if done else [],
            "summary": done.summary if done else "",
        }


def review_entry(
    event: ev.ReviewDone | ev.ReviewFailed | ev.ReviewRoundsExhausted,
) -> dict[str, Any]:
    """One review outcome of a task: a verdict, a failed job, or rounds used up."""
    if isinstance(event, ev.ReviewRoundsExhausted):
        return {"round": None, "worker": None, "verdict": "rounds exhausted", "comments": ""}
    if isinstance(event, ev.ReviewFailed):
        verdict, comments = "no verdict", event.reason
    else:
        verdict, comments = event.verdict, event.comments
    return {"round": event.round, "worker": event.worker, "verdict": verdict, "comments": comments}


def telling_line(log_tail: str) -> str:
    """The line of a gate log most worth a glance: the last one naming a failure."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    for pattern in (r"^(FAILED|ERROR)\b|FAIL:", r"Error|error:|failed"):  # strongest first
        for line in lines:
            if re.search(pattern, line):
                return line
    return lines[-1] if lines else ""


class SkillUse:
    """Which skills were offered and which used, per role and kind of attempt."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])

    def add(self, event: ev.SkillsUsed) -> None:
        role, kind = event.role or "?", event.attempt_kind or "task"
        used = set(event.used)
        for skill in event.offered:
            row = self.counts[(role, kind, skill)]
            row[0] += 1
            row[1] += skill in used
        for skill in used - set(event.offered):  # offered by name only (aliases)
            self.counts[(role, kind, skill)][1] += 1

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"role": role, "kind": kind, "skill": skill, "offered": row[0], "used": row[1]}
            for (role, kind, skill), row in sorted(self.counts.items())
        ]


TOKENS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")


class Spend:
    """Tokens and dollars by worker, role, task and model, summed from usage events."""

    def __init__(self) -> None:
        self.total: dict[str, Any] = self._row()
        self.by: dict[str, dict[str, dict[str, Any]]] = {
            d: defaultdict(self._row) for d in ("worker", "role", "task", "model")
        }

    @staticmethod
    def _row() -> dict[str, Any]:
        return {
            "calls": 0,
            **dict.fromkeys(TOKENS, 0),
            "cost": Decimal(0),
            "unpriced": 0,
            "lost": 0,  # calls whose worker died mid-call, charged at their reservation
        }

    def add(self, event: ev.UsageRecorded) -> None:
        rows = [self.total] + [self.by[d][getattr(event, d) or "?"] for d in self.by]
        for row in rows:
            row["calls"] += 1
            row["lost"] += event.lost
            for name in TOKENS:
                row[name] += int(event.usage.get(name, 0))
            if event.cost is None:
                row["unpriced"] += 1
            else:
                row["cost"] += Decimal(event.cost)

    def to_dict(self) -> dict[str, Any]:
        def plain(row: dict[str, Any]) -> dict[str, Any]:
            return {**row, "cost": format(row["cost"], "f")}

        return {
            "total": plain(self.total),
            **{d: {k: plain(r) for k, r in sorted(rows.items())} for d, rows in self.by.items()},
        }
