"""What happened in a run, rebuilt from its event log (the source of truth)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

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
    crashes, respawns, waits = [], [], []
    spend, skills = Spend(), SkillUse()
    started = finished = None
    info: dict[str, Any] = defaultdict(lambda: None)
    planning = Planning()
    for event in store.events():
        kind = event["kind"]
        planning.add(event)
        task = tasks.get(event.get("task") or "")
        if kind == "run_started":
            started = event["at"]
            info.update(
                mission=event["mission"],
                target_branch=event["target_branch"],
                start_head=event["head"],
                repo=event["repo"],
            )
        elif kind == "run_finished":
            finished = event["at"]
            info.update(status=event["status"], exit_code=event["exit_code"], head=event["head"])
        elif kind == "task_assigned" and task is not None:
            task["workers"].append(event["worker"])
        elif kind == "task_started":
            waits.append(event.get("waited", 0.0))
        elif kind == "task_rejected" and task is not None:
            task["rejections"].append(
                {
                    "attempt": event["attempt"],
                    "reason": event["reason"],
                    "conflicts": event.get("conflicts", []),
                    "detail": telling_line(event.get("log_tail", "")),
                }
            )
        elif kind == "attempt_failed" and task is not None:
            task["failures"].append({"attempt": event["attempt"], "reason": event["reason"]})
        elif kind == "attempt_infra_failed" and task is not None:
            reason = f"infrastructure (not charged to the agent): {event['reason']}"
            task["failures"].append({"attempt": event["attempt"], "reason": reason})
        elif kind in REVIEW_EVENTS and task is not None:
            task["reviews"].append(review_entry(event))
        elif kind == "task_merged" and task is not None:
            task["merged_at"] = event["head"]
        elif kind == "task_already_merged" and task is not None:
            task["already_in"] = event["commit"]
        elif kind == "worker_crashed":
            crashes.append(
                {
                    "worker": event["worker"],
                    "task": event.get("task"),
                    "exitcode": event.get("exitcode"),
                }
            )
        elif kind == "worker_respawned":
            respawns.append(event["worker"])
        elif kind == "usage":
            spend.add(event)
        elif kind == "skills_used":
            skills.add(event)
        elif kind in ("budget_exhausted", "run_stopped", "run_halting"):
            info["stop_reason"] = info["stop_reason"] or event.get("reason")
    ordered = sorted(waits)
    return {
        "run_id": store.run_id,
        **info,
        "status": info["status"] or state.get("status"),
        "seconds": round(finished - started, 2) if started and finished else None,
        "tasks": list(tasks.values()),
        "counts": state.get("counts", {}),
        **_rejection_counts(r for t in tasks.values() for r in t["rejections"]),
        "crashes": crashes,
        "respawns": len(respawns),
        "median_wait": ordered[len(ordered) // 2] if ordered else None,
        "critical_path": state.get("critical_path", []),
        "spend": spend.to_dict(),
        "skills": skills.rows(),
        "budget": (state.get("permits") or {}).get("spend", {}).get("budget"),
        **({"planning": planning.to_dict()} if planning.attempts else {}),
    }


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
    """Rejected merges so far, from the event log: by the gate, and by conflicts."""
    counts = _rejection_counts(e for e in store.events() if e["kind"] == "task_rejected")
    return {"gate": counts["rejections"], "conflicts": counts["conflicts"]}


def rejection_line(gate: int, conflicts: int) -> str:
    return f"{gate} rejected by the gate, {conflicts} merge conflict{'' if conflicts == 1 else 's'}"


class Planning:
    """A goal mission's planning step: who planned, how often it failed, what it made."""

    def __init__(self) -> None:
        self.attempts = 0
        self.workers: list[str] = []
        self.failures: list[dict[str, Any]] = []
        self.accepted: dict[str, Any] | None = None

    def add(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "plan_assigned":
            self.attempts = max(self.attempts, event["attempt"])
            self.workers.append(event["worker"])
        elif kind == "plan_attempt_failed":
            self.failures.append({"attempt": event["attempt"], "reason": event["reason"]})
        elif kind == "plan_accepted":
            self.accepted = event

    def to_dict(self) -> dict[str, Any]:
        done = self.accepted or {}
        return {
            "state": "accepted" if self.accepted else "not accepted",
            "attempts": self.attempts,
            "workers": list(dict.fromkeys(self.workers)),
            "failures": self.failures,
            "tasks": [t["id"] for t in done.get("tasks", [])],
            "critical_path": done.get("critical_path", []),
            "summary": done.get("summary", ""),
        }


REVIEW_EVENTS = ("review_done", "review_failed", "review_rounds_exhausted")


def review_entry(event: dict[str, Any]) -> dict[str, Any]:
    """One review outcome of a task: a verdict, a failed job, or rounds used up."""
    if event["kind"] == "review_rounds_exhausted":
        return {"round": None, "worker": None, "verdict": "rounds exhausted", "comments": ""}
    if event["kind"] == "review_failed":
        verdict, comments = "no verdict", event.get("reason", "")
    else:
        verdict, comments = event["verdict"], event.get("comments", "")
    return {
        "round": event["round"],
        "worker": event["worker"],
        "verdict": verdict,
        "comments": comments,
    }


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

    def add(self, event: dict[str, Any]) -> None:
        role, kind = event.get("role") or "?", event.get("attempt_kind") or "task"
        used = set(event.get("used", []))
        for skill in event.get("offered", []):
            row = self.counts[(role, kind, skill)]
            row[0] += 1
            row[1] += skill in used
        for skill in used - set(event.get("offered", [])):  # offered by name only (aliases)
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

    def add(self, event: dict[str, Any]) -> None:
        rows = [self.total] + [self.by[d][event.get(d) or "?"] for d in self.by]
        for row in rows:
            row["calls"] += 1
            row["lost"] += bool(event.get("lost"))
            for name in TOKENS:
                row[name] += int(event.get("usage", {}).get(name, 0))
            if event.get("cost") is None:
                row["unpriced"] += 1
            else:
                row["cost"] += Decimal(event["cost"])

    def to_dict(self) -> dict[str, Any]:
        def plain(row: dict[str, Any]) -> dict[str, Any]:
            return {**row, "cost": format(row["cost"], "f")}

        return {
            "total": plain(self.total),
            **{d: {k: plain(r) for k, r in sorted(rows.items())} for d, rows in self.by.items()},
        }
