"""Everything checked before a run creates anything, and the plan that results.

Each check raises a one-line ``BadInput`` naming the file, the field and the fix, so a
bad mission never leaves a run folder, a worktree or a branch behind.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args

from orchestrator.agent.reviewer import REVIEWS
from orchestrator.engine.providercheck import ProviderPlan, check_provider
from orchestrator.errors import BadInput
from orchestrator.planning.taskplan import PLAN_ID, PLANNER_ROLE, PlanningStep, team_of
from orchestrator.spec.mission import Mission, ProviderConfig, load_mission
from orchestrator.system.gitutil import (
    checked_out_branches,
    current_branch,
    git,
    git_full,
    is_git_repo,
    rev_parse,
)
from orchestrator.system.sandbox import Policy, SandboxUnavailable, make_policy
from orchestrator.system.targetlock import refuse_if_live
from orchestrator.tasks.scheduling import fits, overlap
from orchestrator.tasks.taskgraph import GraphError, TaskGraph
from orchestrator.team.roles import Role, load_roles

# The gate runs under bash: its builtins and keywords are not programs to look up, and a
# command that starts with a keyword (if, for, a subshell …) can't be checked by one word.
SHELL_WORDS = {
    "true",
    "false",
    "exit",
    "test",
    "[",
    "[[",
    "cd",
    ":",
    "echo",
    "set",
    "export",
    "source",
    ".",
    "eval",
    "exec",
    "if",
    "for",
    "while",
    "until",
    "case",
    "time",
    "!",
    "{",
    "(",
}


@dataclass
class RunPlan:
    """A mission resolved against the disk: absolute paths, roles, workers, graph."""

    mission: Mission
    mission_path: Path
    workspace: Path
    repo: Path
    target_branch: str
    start_head: str
    worktree_root: Path
    gate_command: str
    roles: dict[str, Role]
    workers: list[tuple[str, str]]
    graph: TaskGraph
    provider: ProviderPlan
    record: bool = False  # write every model exchange into a replayable cassette
    # A goal mission's planning step: the graph is empty until the producer's plan is in.
    planning: PlanningStep | None = None
    sandbox: Policy = field(default_factory=Policy)  # where agents' commands and the gate run


def build_plan(
    mission_path: Path,
    workspace: Path,
    repo_arg: str | None = None,
    workers: int | None = None,
    provider: str | None = None,
    worktrees: str | None = None,
    base_url: str | None = None,
    budget: Decimal | None = None,
    cassette: str | None = None,
) -> RunPlan:
    """Load and check a mission; raise ``BadInput`` at the first problem. The keyword
    arguments are the CLI's overrides of the mission's fields."""
    mission = load_mission(mission_path)
    where = str(mission_path)
    if provider:
        mission.provider.name = _provider_name(provider)  # type: ignore[assignment]
    if budget is not None:
        if not budget.is_finite() or budget < 0:
            raise BadInput("--budget", f"{budget} is not a budget", "give dollars >= 0")
        mission.budget = budget
    if cassette:
        mission.provider.cassette = str(Path(cassette).expanduser().resolve())
    roles = load_roles(workspace)
    _check_roles(mission, roles, where)
    graph = _check_graph(mission, where)
    team = _team(mission, workers)
    _check_assignable(mission, roles, team, where)
    planning = _check_planning(mission, team, workers, where)
    _check_reviewers(mission, [roles[role] for _, role in team], where)
    repo = _check_repo(mission, mission_path, workspace, repo_arg)
    if live := mission.target_branch or current_branch(repo):
        refuse_if_live(repo, live, where)  # before the checkout checks: the true reason
    branch, head = _check_branch(mission, repo, where)
    _check_context_files(mission, repo, branch, head, where)
    gate = _check_gate(mission, repo, where)
    provider_plan = check_provider(mission, mission_path, roles, base_url)
    root = _check_worktrees(worktrees, mission, workspace, where)
    return RunPlan(
        mission=mission,
        mission_path=mission_path.resolve(),
        workspace=workspace,
        repo=repo,
        target_branch=branch,
        start_head=head,
        worktree_root=root,
        gate_command=gate,
        roles=roles,
        workers=team,
        graph=graph,
        provider=provider_plan,
        planning=planning,
        sandbox=_check_sandbox(mission, where, [repo, root, workspace / ".pd"]),
    )


def _provider_name(name: str) -> str:
    known = get_args(ProviderConfig.model_fields["name"].annotation)
    if name not in known:
        raise BadInput(
            "--provider", f"unknown provider '{name}'", f"use one of: {', '.join(known)}"
        )
    return name


def _check_worktrees(arg: str | None, mission: Mission, workspace: Path, where: str) -> Path:
    """The worktrees' folder (relative paths are from the workspace): it may not exist
    yet, but the nearest existing path on the way must be a folder."""
    root = Path(arg or mission.worktrees or workspace / "worktrees").expanduser()
    root = (root if root.is_absolute() else workspace / root).resolve()
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        place, field = ("--worktrees", None) if arg else (where, "worktrees")
        raise BadInput(
            place,
            f"{existing} is not a folder, so worktrees cannot go in {root}",
            "point it at a folder (it is created if missing)",
            field,
        )
    return root


def _check_sandbox(mission: Mission, where: str, hidden: list[Path]) -> Policy:
    """The sandbox the run's commands get; none to be had is an error unless the mission
    turns it off."""
    config = mission.sandbox
    try:
        return make_policy(
            config.mode,
            config.network,
            config.pass_env,
            config.read_only,
            config.read_write,
            hidden,
        )
    except SandboxUnavailable as exc:
        fix = 'install bubblewrap, or set "sandbox": "off" to run commands unconfined'
        raise BadInput(where, str(exc), fix, "sandbox") from None


def _check_context_files(mission: Mission, repo: Path, branch: str, head: str, where: str) -> None:
    """Every agent reads these from its worktree: they must be in the target branch."""
    for i, name in enumerate(mission.context_files):
        path = Path(name)
        inside = not path.is_absolute() and ".." not in path.parts
        if not inside or git_full(repo, "cat-file", "-e", f"{head}:{path.as_posix()}")[0]:
            raise BadInput(
                where,
                f"context file '{name}' is not in {branch} of {repo}",
                "commit it first, or give its path relative to the repository root",
                f"context_files[{i}]",
            )


def _check_roles(mission: Mission, roles: dict[str, Role], where: str) -> None:
    known = ", ".join(sorted(roles))
    for i, member in enumerate(mission.team):
        if member.role not in roles:
            raise BadInput(
                where, f"unknown role '{member.role}'", f"use one of: {known}", f"team[{i}].role"
            )
    for i, task in enumerate(mission.tasks):
        if task.role and task.role not in roles:
            raise BadInput(
                where, f"unknown role '{task.role}'", f"use one of: {known}", f"tasks[{i}].role"
            )


def _check_graph(mission: Mission, where: str) -> TaskGraph:
    """The mission's graph; empty for a planned mission (its tasks, if any, are a draft,
    checked all the same)."""
    if mission.planned and not (mission.goal or "").strip():
        raise BadInput(where, "planning needs a goal", "add a goal, or set plan to false", "goal")
    if not mission.tasks and not mission.planned:
        fix = "add a tasks list, or a goal for the producer to plan"
        raise BadInput(where, "the mission has no tasks", fix, "tasks")
    try:
        graph = TaskGraph.for_mission(mission, mission.tasks)
    except GraphError as exc:
        raise BadInput(where, exc.problem, exc.fix, exc.field) from None
    if any(t.id == PLAN_ID for t in mission.tasks) and mission.planned:
        index = next(i for i, t in enumerate(mission.tasks) if t.id == PLAN_ID)
        fix = "choose another id"
        raise BadInput(where, f"{PLAN_ID!r} is the planning step's id", fix, f"tasks[{index}].id")
    return TaskGraph([]) if mission.planned else graph


def _check_planning(
    mission: Mission, team: list[tuple[str, str]], workers: int | None, where: str
) -> PlanningStep | None:
    """A planned mission needs a producer worker and a provider that can take a tool."""
    if not mission.planned:
        return None
    if PLANNER_ROLE not in {role for _, role in team}:
        if workers is not None and any(m.role == PLANNER_ROLE for m in mission.team):
            raise BadInput(
                "--workers",
                f"the first {workers} workers leave out the {PLANNER_ROLE}, who plans the goal",
                f"raise --workers or list the {PLANNER_ROLE} first in team",
            )
        raise BadInput(
            where,
            f"the goal is planned by the {PLANNER_ROLE} role, and the team has none",
            f'add {{"role": "{PLANNER_ROLE}"}} to team, or list the tasks',
            "team",
        )
    if mission.provider.name == "command":
        raise BadInput(
            where,
            "a coding-agent CLI cannot plan a goal (planning needs the submit_plan tool)",
            "list the tasks, or plan with `pd plan` and another provider",
            "provider.name",
        )
    return PlanningStep(PLANNER_ROLE, mission.max_attempts)


def _team(mission: Mission, workers: int | None) -> list[tuple[str, str]]:
    """Worker ids and roles: w1..wN in team order; ``--workers`` caps the count."""
    slots = [member.role for member in mission.team for _ in range(member.count)]
    if workers is not None:
        if workers < 1:
            raise BadInput("--workers", f"{workers} is not a worker count", "use 1 or more")
        slots = slots[:workers]
    return [(f"w{i}", role) for i, role in enumerate(slots, 1)]


def _check_assignable(
    mission: Mission, roles: dict[str, Role], team: list[tuple[str, str]], where: str
) -> None:
    team_roles = [roles[role] for _, role in team]
    for i, task in enumerate(mission.tasks):
        if not any(fits(task, role) for role in team_roles):
            need = f"role '{task.role}'" if task.role else f"capabilities {task.capabilities}"
            raise BadInput(
                where,
                f"no worker in the team can take it (it needs {need})",
                "add a fitting role to team (or raise --workers)",
                f"tasks[{i}].role" if task.role else f"tasks[{i}].capabilities",
            )


def _check_reviewers(mission: Mission, team: list[Role], where: str) -> None:
    """Review needs a worker whose role reviews code, and a model that can submit a
    verdict (a coding-agent CLI cannot call submit_review)."""
    reviewed = [
        i for i, t in enumerate(mission.tasks) if (mission.review if t.review is None else t.review)
    ]
    if not reviewed:
        return
    field = "review" if mission.review else f"tasks[{reviewed[0]}].review"
    if mission.provider.name == "command":
        raise BadInput(
            where,
            "review needs pd's own agent loop; the command provider cannot review",
            "turn review off or use a model provider",
            field,
        )
    if not any(REVIEWS in role.capabilities for role in team):
        raise BadInput(
            where,
            f"review is on but no role in the team has the {REVIEWS} capability",
            "add a reviewer to team, e.g. tech-lead or code-reviewer, or turn review off",
            field,
        )


def _check_repo(
    mission: Mission, mission_path: Path, workspace: Path, repo_arg: str | None
) -> Path:
    if repo_arg:
        repo, where, field = Path(repo_arg).expanduser().resolve(), "--repo", None
    elif mission.repo:
        repo = (mission_path.parent / Path(mission.repo).expanduser()).resolve()
        where, field = str(mission_path), "repo"
    else:
        repo, where, field = workspace, str(workspace), None
    if not repo.is_dir():
        raise BadInput(
            where, f"repository {repo} does not exist", "point --repo at a git repository", field
        )
    if not is_git_repo(repo):
        raise BadInput(
            where,
            f"{repo} is not a git repository",
            "run `git init` there or point --repo at a repository",
            field,
        )
    top = Path(git(repo, "rev-parse", "--show-toplevel"))
    return top.resolve()


def _check_branch(mission: Mission, repo: Path, where: str) -> tuple[str, str]:
    branch = mission.target_branch or current_branch(repo)
    if not branch:
        raise BadInput(
            where,
            f"{repo} has no branch checked out (detached HEAD)",
            "set target_branch in the mission",
            "target_branch",
        )
    head = rev_parse(repo, f"refs/heads/{branch}")
    if head is None:
        names = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()
        fix = f"use one of: {', '.join(names[:10])}" if names else "make a first commit"
        raise BadInput(where, f"branch '{branch}' not found in {repo}", fix, "target_branch")
    holder = checked_out_branches(repo).get(branch)
    if holder is not None:
        _check_checkout(mission, branch, Path(holder), where)
    return branch, head


def _check_checkout(mission: Mission, branch: str, path: Path, where: str) -> None:
    """The checkout holding the target is moved along with every merge. Tracked edits
    there would be mixed with merged work, and an untracked file where a task says it
    writes would be in a merge's way; other untracked files (a new mission) are fine."""
    tracked, untracked = _status(path)
    if tracked:
        raise BadInput(
            where,
            f"branch '{branch}' is checked out in {path} with uncommitted changes: "
            + _names(tracked),
            "commit or stash them first, or choose another target_branch",
            "target_branch",
        )
    in_the_way = [
        (name, i)
        for i, task in enumerate(mission.tasks)
        for name in untracked
        if overlap([name], task.files)
    ]
    if in_the_way:
        names = _names([name for name, _ in in_the_way])
        raise BadInput(
            where,
            f"branch '{branch}' is checked out in {path} with untracked files where a merge "
            f"would write: {names} (tasks[{in_the_way[0][1]}].files)",
            "commit, move or ignore them first, or choose another target_branch",
            "target_branch",
        )


def _status(path: Path) -> tuple[list[str], list[str]]:
    """(changed tracked paths, untracked paths) of a checkout; ignored files are neither."""
    entries = git(path, "status", "--porcelain=v1", "-z", "--untracked-files=all").split("\0")
    tracked, untracked, skip = [], [], False
    for entry in entries:
        if skip or not entry:
            skip = False
            continue
        code, name = entry[:2], entry[3:]
        (untracked if code == "??" else tracked).append(name)
        skip = code[0] in "RC"  # a rename's or copy's source path follows
    return tracked, untracked


def _names(paths: list[str], most: int = 5) -> str:
    unique = list(dict.fromkeys(paths))
    more = f" and {len(unique) - most} more" if len(unique) > most else ""
    return ", ".join(unique[:most]) + more


def _check_gate(mission: Mission, repo: Path, where: str) -> str:
    command = mission.gate_command
    field = "gate.command" if mission.gate.command else "test_command"
    if not command or not command.strip():
        raise BadInput(
            where,
            "no test command: the merge ratchet needs one",
            'set test_command, e.g. "python -m pytest -q"',
            "test_command",
        )
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise BadInput(
            where, f"cannot parse the command ({exc})", "fix its quoting", field
        ) from None
    program = next((w for w in words if "=" not in w.split("/")[0]), "")
    if not program or program in SHELL_WORDS or not (program[0].isalnum() or program[0] in "./_"):
        return command
    found = (repo / program).exists() if "/" in program else shutil.which(program)
    if not found:
        raise BadInput(
            where,
            f"command '{program}' not found",
            "install it or correct the command (it runs in a checkout of the repository)",
            field,
        )
    return command


def plan_payload(plan: RunPlan, skills: Sequence[str]) -> dict[str, Any]:
    """What a planning attempt needs: the goal, the team, the draft tasks, the skills."""
    mission = plan.mission
    return {
        "mission": mission.name,
        "goal": mission.goal or "",
        "description": mission.description,
        "team": [r.__dict__ for r in team_of(plan.workers, plan.roles)],
        "draft": [t.model_dump(mode="json", exclude_defaults=True) for t in mission.tasks],
        "max_attempts": mission.max_attempts,
        "gate": plan.gate_command,
        "skills": list(skills),
        "workspace": str(plan.workspace),
    }
