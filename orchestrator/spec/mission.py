"""The mission file: what a run is asked to do, parsed strictly.

Unknown fields are errors, not silent defaults, so a typo in a mission never runs a
different mission than the one the user meant. Checks that need the disk or git live in
``preflight.py``; this module only parses.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator.errors import BadInput
from orchestrator.spec.composition import default_budget
from orchestrator.team.catalog import shipped_dir

TASK_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# A timeout below a second cannot let a real command finish; it is a typo, not a setting.
MIN_TIMEOUT = 1.0


def branch_problem(task_id: str) -> str | None:
    """Why git would refuse the branch ``pd/<run>/<task_id>`` (``git check-ref-format``),
    or None. ``TASK_ID_PATTERN`` already rules out every other case of those rules."""
    if ".." in task_id:
        return "contains '..'"
    if task_id.endswith(".lock"):
        return "ends with '.lock'"
    if task_id.endswith("."):
        return "ends with '.'"
    return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeamMember(Strict):
    """A role and how many workers hold it."""

    role: str = Field(description="Role id from the roles catalog, e.g. backend-dev.")
    count: int = Field(1, ge=1, le=64, description="Number of workers with this role.")


class TaskSpec(Strict):
    """One node of the task graph as written in the mission."""

    id: str = Field(pattern=TASK_ID_PATTERN, description="Short id, also used in branch names.")
    title: str = Field(min_length=1)
    description: str = ""
    role: str | None = Field(None, description="Role that must take the task.")
    capabilities: list[str] = Field(
        default_factory=list, description="Capability tags a worker's role must have."
    )
    deps: list[str] = Field(default_factory=list, description="Ids that must merge first.")
    files: list[str] = Field(default_factory=list, description="Paths the task expects to touch.")
    priority: int = Field(0, description="Tie-breaker after the critical path; higher first.")
    max_attempts: int | None = Field(None, ge=1, le=20)
    critical: bool = Field(
        False, description="Run every attempt on the top model tier (see composition.tier_for)."
    )
    review: bool | None = Field(
        None, description="Review this task before it merges; default: the mission's review."
    )

    @field_validator("id")
    @classmethod
    def _a_branch_name(cls, value: str) -> str:
        """The id names the task's branch: git must take ``pd/<run>/<id>``."""
        problem = branch_problem(value)
        if problem:
            raise PydanticCustomError(
                "branch_name",
                "task id '{id}' {problem}, so git refuses its branch pd/<run>/{id}",
                {"id": value, "problem": problem},
            )
        return value


class ProviderConfig(Strict):
    """Where the agents' model answers come from."""

    name: Literal["scripted", "anthropic", "openai", "command"] = "scripted"
    cassette: str | None = Field(None, description="Scripted replies; relative to the mission.")
    model: str | None = Field(None, description="Model id or tier for every role.")
    max_tokens: int = Field(4096, ge=1, le=128_000)
    base_url: str | None = Field(None, description="An OpenAI-compatible server, e.g. Ollama.")
    agent: Literal["claude", "codex", "aider", "gemini"] | None = Field(
        None, description="For the command provider: which coding-agent CLI is the agent."
    )
    executable: str | list[str] | None = Field(None, description="The agent CLI's path/argv.")
    args: list[str] = Field(default_factory=list, description="Extra arguments for the CLI.")
    pass_env: list[str] | None = Field(
        None, description="Environment variables the agent CLI gets (default: its API key)."
    )


class RateLimit(Strict):
    """A provider's (or one model's) limits; the whole run shares them."""

    requests_per_minute: int | None = Field(None, ge=1)
    input_tokens_per_minute: int | None = Field(None, ge=1)
    output_tokens_per_minute: int | None = Field(None, ge=1)
    window_seconds: float = Field(60.0, gt=0, description="The window the limits apply to.")
    smooth: bool = Field(
        True, description="Space calls at the request limit's pace instead of in bursts."
    )


class GateConfig(Strict):
    """The command whose success on the merged tree lets work into the target branch."""

    command: str | None = Field(None, description="Defaults to the mission's test_command.")
    timeout: float = Field(
        900, ge=MIN_TIMEOUT, description="Seconds before the gate counts as failed."
    )
    retries: int = Field(
        1, ge=0, le=5, description="Runs again before a task alone is rejected (flaky tests)."
    )
    max_batch: int = Field(
        16, ge=1, le=64, description="Most tasks merged and tested together (1: one at a time)."
    )
    parallel: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Gates run at once, each stacked on the one ahead of it (default: from "
        "the machine's cores and the team, see gate.runner.default_parallel).",
    )


class Limits(Strict):
    """Per-attempt limits of the agent loop and the worker's health checks."""

    max_turns: int = Field(40, ge=1, le=1000)
    attempt_timeout: float = Field(
        3600, ge=MIN_TIMEOUT, description="Seconds for one command-agent run."
    )
    command_timeout: float = Field(300, ge=MIN_TIMEOUT)
    output_cap: int = Field(20_000, ge=1000)
    heartbeat_interval: float = Field(1.0, gt=0, le=60)
    missed_heartbeats: int = Field(3, ge=1, le=100)


class SandboxConfig(Strict):
    """Where agents' commands, CLI agents, setup and the gate run (see sandbox.py).
    ``"sandbox": "off"`` is short for ``{"mode": "off"}``."""

    mode: Literal["auto", "bwrap", "off"] = Field(
        "auto", description="auto: bubblewrap, and pd refuses to start without it; off: none."
    )
    network: bool = Field(True, description="false: commands see only loopback.")
    pass_env: list[str] = Field(
        default_factory=list, description="Environment variables commands get besides PATH etc."
    )
    read_only: list[str] = Field(
        default_factory=list, description="Host paths commands may read (home is hidden)."
    )
    read_write: list[str] = Field(
        default_factory=list, description="Host paths commands may write (a shared cache)."
    )
    symlinks: Literal["none", "inside"] = Field(
        "none", description="inside: symlinks pointing inside the repository may land."
    )
    git_files: list[str] = Field(
        default_factory=list,
        description="Git plumbing files a branch may change (.gitattributes, .gitmodules...).",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"mode": data} if isinstance(data, str) else data


class Mission(Strict):
    """A mission file, parsed. Paths inside it are relative to the file's folder."""

    name: str = Field(min_length=1)
    description: str = ""
    repo: str | None = Field(None, description="Target repository; default: the workspace.")
    target_branch: str | None = Field(None, description="Default: the repo's current branch.")
    test_command: str | None = Field(None, description="The project's tests, run by the gate.")
    gate: GateConfig = Field(default_factory=GateConfig)
    setup: str | None = Field(None, description="Run once in each fresh worktree.")
    context_files: list[str] = Field(
        default_factory=list,
        description="Files of the repository every agent reads first (overview, briefing).",
    )
    team: list[TeamMember] = Field(min_length=1)
    tasks: list[TaskSpec] = Field(default_factory=list)
    goal: str | None = Field(
        None, description="What to build; the producer role plans it into tasks at run time."
    )
    plan: bool | None = Field(
        None,
        description="Plan the goal into tasks at run time (default: when there are no tasks); "
        "tasks given too are a draft the planner refines.",
    )
    max_attempts: int = Field(3, ge=1, le=20)
    review: bool = Field(
        False, description="A reviewer role (reviews-code) judges each finished task first."
    )
    max_review_rounds: int = Field(
        2, ge=1, le=10, description="Reviews that may ask for changes; the next version merges."
    )
    provider: ProviderConfig = Field(default_factory=ProviderConfig)
    limits: Limits = Field(default_factory=Limits)
    worktrees: str | None = Field(None, description="Worktree folder; default workspace/worktrees.")
    budget: Decimal | None = Field(
        None, ge=0, description="USD for the whole run; default: scales with the team size."
    )
    worker_budget: Decimal | None = Field(None, ge=0, description="USD for each worker.")
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=dict, description='By provider ("anthropic") or model ("openai/gpt-5").'
    )
    prices: str | None = Field(None, description="A price table in LiteLLM's layout.")
    models: str | None = Field(None, description="Model tiers (haiku/sonnet/opus) to ids.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    port_base: int = Field(20_000, ge=1024, le=60_000)
    port_stride: int = Field(100, ge=1, le=1000)
    _budget_is_default: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _default_budget(self) -> Mission:
        """A mission that names no budget gets one that scales with its team."""
        if self.budget is None:
            self.budget = default_budget(self.worker_count())
            self._budget_is_default = True
        return self

    @property
    def budget_is_default(self) -> bool:
        """True when ``budget`` came from ``default_budget``, not from the file."""
        return self._budget_is_default

    @property
    def gate_command(self) -> str | None:
        return self.gate.command or self.test_command

    def worker_count(self) -> int:
        return sum(member.count for member in self.team)

    @property
    def planned(self) -> bool:
        """Whether the producer plans the tasks at run time (``plan``, else goal, no tasks)."""
        return self.plan if self.plan is not None else bool(self.goal and not self.tasks)


def resolve_mission_path(arg: str) -> Path:
    """A mission given as a path, or by name from the shipped catalog (``web-app``)."""
    path = Path(arg)
    if path.exists():
        return path
    catalog = shipped_dir("missions")
    for candidate in (catalog / arg, catalog / f"{arg}.json", catalog / path.name):
        if candidate.is_file():
            return candidate
    names = ", ".join(
        sorted(p.stem for p in catalog.glob("*.json") if not p.stem.endswith(".cassette"))
    )
    raise BadInput(
        arg,
        "mission file not found",
        f"give a path to a mission JSON file or one of the shipped missions: {names}",
    )


def load_mission(path: Path) -> Mission:
    """Read and parse a mission file; any problem is a one-line ``BadInput``."""
    try:
        raw = path.read_text()
    except OSError as exc:
        raise BadInput(
            str(path), f"cannot read the mission file ({exc.strerror})", "check the path"
        ) from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(
            str(path),
            f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            "fix the JSON syntax there",
        ) from None
    if not isinstance(data, dict):
        raise BadInput(str(path), "the mission must be a JSON object", "wrap it in { }")
    try:
        return Mission.model_validate(data)
    except ValidationError as exc:
        raise _as_bad_input(path, exc) from None


def _as_bad_input(path: Path, exc: ValidationError) -> BadInput:
    """The first pydantic error, as file + field + fix."""
    field, problem, fix = field_problem(exc.errors()[0])
    return BadInput(str(path), problem, fix, field)


def field_problem(error: Any, model: type[BaseModel] | None = None) -> tuple[str, str, str]:
    """One pydantic error as (field, problem, fix); ``loc`` is read from ``model``
    (default: the mission), so a planned task's error reads like a mission's."""
    field = _field_path(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_fields(error["loc"][:-1], model or Mission)
        return field, "unknown field", f"remove it or use one of: {allowed}"
    if kind == "missing":
        return field, "required field is missing", "add it"
    return field, error["msg"].rstrip("."), _fix_for(kind, error)


def _fix_for(kind: str, error: Any) -> str:
    if kind == "branch_name":
        return "choose an id without '..' that ends in a letter or digit, and not in '.lock'"
    if kind == "string_pattern_mismatch":
        return "use lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    if kind == "literal_error":
        return f"use {error.get('ctx', {}).get('expected', 'an allowed value')}"
    return "correct the value"


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _allowed_fields(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return ", ".join(model.model_fields)
