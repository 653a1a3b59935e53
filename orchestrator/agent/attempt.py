"""What an attempt needs around the agent loop: its prompt, its running handoff note
and, when it is done, its commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orchestrator.agent.loop import build_handoff
from orchestrator.record.store import write_atomic
from orchestrator.system.gitutil import git, git_full, identity_env
from orchestrator.team.tools import Toolbox
from orchestrator.wire.messages import TaskJob


class RunningNote:
    """The attempt's handoff note, rewritten as the attempt goes (after each model reply
    and tool call), so that a worker that crashes or is killed still leaves one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.turns = 0
        self.last_text = ""

    def update(self, entry: dict[str, Any], toolbox: Toolbox | None) -> None:
        if entry.get("kind") not in ("response", "tool"):
            return
        self.turns = max(self.turns, int(entry.get("turn") or 0))
        self.last_text = entry.get("text") or self.last_text
        touched = toolbox.touched if toolbox is not None else ()
        reason = "the worker stopped in the middle of it"
        write_atomic(self.path, build_handoff(reason, self.turns, touched, self.last_text), False)


CONTEXT_CAP = 8000  # characters of each context file in the prompt


def context_block(root: Path, paths: Sequence[str]) -> str:
    """The mission's context files as the worktree has them now, each capped."""
    parts = []
    for name in paths:
        try:
            text = (root / name).read_text(errors="replace")
        except OSError:
            continue  # removed by a merged task since the run began: nothing to read
        if len(text) > CONTEXT_CAP:
            text = text[:CONTEXT_CAP] + f"\n[... cut at {CONTEXT_CAP} characters; read the file]"
        parts.append(f"### {name}\n{text.strip()}")
    return "## Project context\n" + "\n\n".join(parts) if parts else ""


def task_prompt(job: TaskJob, context: str = "") -> str:
    """What the agent is asked to do, with what earlier attempts and dependencies left."""
    parts = [context] if context else []
    if job.session:
        done = "\n".join(f"- {line}" for line in job.session)
        parts.append(f"## What the team has merged so far in this run\n{done}")
    parts += [f"# Task {job.task_id}: {job.title}", job.description or ""]
    if job.files:
        parts.append("Files you are expected to touch: " + ", ".join(job.files))
    if job.dependencies:
        done = "\n".join(f"- {tid}: {summary}" for tid, summary in job.dependencies.items())
        parts.append(f"These tasks are already merged into your starting point:\n{done}")
    if job.feedback:
        notes = "\n\n".join(
            f"Attempt {i} was rejected:\n{text}" for i, text in enumerate(job.feedback, 1)
        )
        parts.append(f"Earlier attempts of this task failed. Fix what they got wrong.\n\n{notes}")
    if job.handoff:
        parts.append(f"Handoff note from the previous attempt:\n{job.handoff}")
    if job.start_from:
        parts.append(
            f"Your worktree starts from the reviewed version ({job.start_from[:12]}): "
            "change it as the review asks; do not start over."
        )
    parts.append("When the work is complete and the tests pass, call `finish` with a summary.")
    return "\n\n".join(p for p in parts if p)


def commit_work(
    path: Path,
    job: TaskJob,
    summary: str,
    worker_id: str,
    role_id: str,
    exclude: Sequence[str] = (),
) -> tuple[str, list[str]]:
    """Commit what the agent left in the worktree (not what setup made); no changes, no
    new commit."""
    env = identity_env(f"pd {role_id} ({worker_id})", f"pd+{worker_id}@localhost")
    git(path, "add", "-A", "--", ".", *(f":(exclude,top){p}" for p in exclude), env=env)
    staged = git(path, "diff", "--cached", "--name-only", env=env)
    if staged:
        message = f"{job.task_id}: {job.title}\n\n{summary}\n\npd-attempt: {job.attempt}"
        git(
            path,
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "--no-verify",
            "-m",
            message,
            env=env,
        )
    commit = git(path, "rev-parse", "HEAD")
    # From the merge base: an attempt that started from earlier work (start_from) must not
    # list what other tasks merged into the target meanwhile.
    changed = git(path, "diff", "--name-only", f"{job.target_head}...{commit}").splitlines()
    return commit, changed


NOTHING_CHANGED = (
    "the attempt finished without changing any file, so there is nothing to merge. Make "
    "the change the task asks for (check that your edits applied: the target branch may "
    "have moved since an earlier attempt); if the target branch already holds it, call "
    "finish with already_in_target naming the commit that does."
)


def holder_of_no_change(
    path: Path, target_head: str, final: dict[str, Any] | None
) -> tuple[str | None, str]:
    """An attempt that changed no file: (the target's commit holding its work, "") when
    the agent named one with ``finish(already_in_target=…)``, else (None, why it fails).

    pd takes the claim only for a real commit of the target's history, never for a
    branch of the agent's own.
    """
    claim = str((final or {}).get("already_in_target") or "")
    if not claim:
        return None, NOTHING_CHANGED
    sha = git(path, "rev-parse", "-q", "--verify", f"{claim}^{{commit}}", check=False)
    if sha and git_full(path, "merge-base", "--is-ancestor", sha, target_head)[0] == 0:
        return sha, ""
    return None, (
        f"the attempt changed no file and named {claim!r} as already holding the work, "
        f"but that is not a commit of the target branch. {NOTHING_CHANGED}"
    )


class LiveLines:
    """A streamed model answer, passed on one whole line at a time as it arrives (for
    the worker log and live progress): deltas are often a few characters."""

    PREFIX = "model: "

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.pending = ""

    def __call__(self, delta: str) -> None:
        *lines, self.pending = (self.pending + delta).split("\n")
        for line in lines:
            if line.strip():
                self.emit(self.PREFIX + line.strip())
