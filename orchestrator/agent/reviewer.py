"""Review: a reviewer role judges a finished task's diff before the merge queue.

The coordinator hands a submitted version to an idle worker whose role reviews code (never
the implementer's own worker) as a ``ReviewJob``. That worker checks out the
task's commit detached, reads the task, the implementer's summary and the diff, may look
around with read-only skills, and ends with ``submit_review``. Nothing a reviewer does is
committed. This module holds the reviewer's side (prompt, tools, verdict) and the texts
both sides share; the graph rules are in ``taskgraph.py``, the scheduling in
``engine/steps/review.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.agent.loop import AgentResult
from orchestrator.system.gitutil import git
from orchestrator.team.skills import SkillToolbox, load_registry
from orchestrator.team.tools import Ending, cap_text
from orchestrator.wire.messages import Message, ReviewDone, ReviewJob, TaskFailed

REVIEWS = "reviews-code"  # the capability tag of roles that may review
DIFF_CAP = 40_000  # characters of diff in the prompt; the reviewer can page with git_diff
# Read-only skills every reviewer gets; its role may add others that only read.
# run_tests and run_linter run commands, but nothing a reviewer leaves is ever committed.
REVIEW_SKILLS = (
    "read_file",
    "list_files",
    "search_code",
    "file_outline",
    "git_diff",
    "git_log",
    "run_tests",
)
_ALSO_ALLOWED = {"run_linter"}
APPROVE, REQUEST_CHANGES = "approve", "request_changes"


def reviews_code(role: Any) -> bool:
    return REVIEWS in getattr(role, "capabilities", [])


def _check_verdict(given: dict[str, Any]) -> str | None:
    if given.get("verdict") == REQUEST_CHANGES and not str(given.get("comments", "")).strip():
        return (
            "submit_review: requesting changes needs comments that say what to change "
            "(file, what and why); call submit_review again"
        )
    return None


SUBMIT_REVIEW = Ending(
    {
        "name": "submit_review",
        "description": (
            "End the review with your verdict: approve, or request_changes with comments "
            "the implementer can act on without asking you (file, what to change, why)."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": [APPROVE, REQUEST_CHANGES]},
                "comments": {"type": "string", "description": "Numbered, concrete points."},
            },
            "required": ["verdict", "comments"],
            "additionalProperties": False,
        },
    },
    _check_verdict,
)


def review_toolbox(
    root: Path,
    role_skills: list[str],
    test_command: str | None,
    env: Mapping[str, str],
    command_timeout: float,
    output_cap: int,
) -> SkillToolbox:
    """Read-only skills (plus the role's own that only read), ending with submit_review."""
    registry = load_registry()
    wanted = list(dict.fromkeys([*REVIEW_SKILLS, *role_skills]))
    skills = [
        registry.skills[s]
        for s in wanted
        if s in registry.skills
        and (
            s in REVIEW_SKILLS
            or s in _ALSO_ALLOWED
            or registry.skills[s].side_effects in ("none", "reads")
        )
    ]
    return SkillToolbox(
        root,
        skills,
        test_command=test_command,
        env=env,
        command_timeout=command_timeout,
        output_cap=output_cap,
        ending=SUBMIT_REVIEW,
    )


def review_diff(path: Path, base: str, commit: str, cap: int = DIFF_CAP) -> tuple[str, str]:
    """(stat, diff) of the task's work: ``base...commit``, from their merge base, so work
    merged into the target meanwhile is not shown as the task's."""
    stat = git(path, "diff", "--stat", f"{base}...{commit}")
    diff = git(path, "diff", f"{base}...{commit}")
    return stat, cap_text(diff, cap)


def review_prompt(job: ReviewJob, stat: str, diff: str) -> str:
    """What the reviewer is asked: the task, the summary, the diff, the round."""
    last = job.max_rounds and job.rounds_used + 1 >= job.max_rounds
    parts = [
        f"# Review of task {job.task_id}: {job.title} (round {job.attempt})",
        job.description or "",
        f"The implementer's summary:\n{job.summary or '(none)'}",
        f"Your worktree is checked out at the work to review ({job.commit[:12]}). "
        f"The change against the target branch:\n{stat or '(no files changed)'}",
        f"```diff\n{diff}\n```" if diff else "The diff is empty.",
    ]
    if job.previous_comments:
        parts.append(
            "An earlier round asked for these changes; check they were made:\n"
            + job.previous_comments
        )
    if last:
        parts.append(
            "This is the last round that may ask for changes: the fix it asks for merges "
            "without another review (the tests still gate it)."
        )
    parts.append(
        "Judge whether the change does what the task asks, correctly and consistently "
        "with the codebase. Then call `submit_review` with verdict approve, or "
        "request_changes and concrete comments."
    )
    return "\n\n".join(p for p in parts if p)


_FEEDBACK = "Review round {round} ({role}, {worker}) requested changes:\n"


def review_feedback(round_: int, worker: str, role: str, comments: str) -> str:
    """How requested changes read in the implementer's next prompt."""
    return _FEEDBACK.format(round=round_, role=role, worker=worker) + comments.strip()


def last_review_comments(feedback: list[str]) -> str:
    """The comments of the latest review that asked for changes, from a task's feedback."""
    head = _FEEDBACK.split("{", 1)[0]
    for entry in reversed(feedback):
        if entry.startswith(head) and "\n" in entry:
            return entry.split("\n", 1)[1]
    return ""


def verdict_message(worker_id: str, task_id: str, round_: int, result: AgentResult) -> Message:
    """What a review attempt answers: its verdict, or why there is none."""
    if not result.finished or result.final is None:
        reason = f"the review ended without a verdict: {result.reason}"
        return TaskFailed(worker_id=worker_id, task_id=task_id, attempt=round_, reason=reason)
    approved = result.final["verdict"] == APPROVE
    comments = str(result.final.get("comments", ""))
    first = comments.strip().splitlines()[0] if comments.strip() else ""
    verdict = "approved" if approved else "changes requested"
    return ReviewDone(
        worker_id=worker_id,
        task_id=task_id,
        attempt=round_,
        approved=approved,
        comments=comments,
        summary=f"{verdict}: {first}" if first else verdict,
        skills=result.skill_use(),
    )
