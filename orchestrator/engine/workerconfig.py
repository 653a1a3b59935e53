"""What a worker is handed at spawn: typed, and plain data underneath (``to_dict`` /
``from_dict``) so it crosses a spawn boundary and reads back the same."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Provider names that are not a model SDK of pd's own.
SCRIPTED, COMMAND = "scripted", "command"


@dataclass
class ProviderOptions:
    """Which agent a worker runs, and what building it needs. API keys are never here:
    the worker gets them in memory, never in a config that could be logged."""

    name: str  # scripted | anthropic | openai | command
    model: str | None = None  # an SDK provider's model
    base_url: str | None = None
    cassette: str | None = None  # scripted: the recorded answers
    agent: str = ""  # command: the CLI adapter (claude, codex, aider, gemini)
    executable: str | list[str] | None = None
    args: list[str] = field(default_factory=list)
    pass_env: list[str] = field(default_factory=list)  # command: the keys it may see

    @property
    def external(self) -> bool:
        """A coding-agent CLI is the agent, not pd's loop over a model."""
        return self.name == COMMAND

    @property
    def paid(self) -> bool:
        """Calls cost money (so each passes the run's limiter and ledger), and a ranking
        call is worth making. A cassette answers only what was recorded."""
        return self.name not in (SCRIPTED, COMMAND)

    def sdk_options(self) -> dict[str, Any]:
        """``make_provider``'s arguments for a model provider."""
        if self.name == SCRIPTED:
            return {"name": self.name, "cassette": self.cassette}
        return {"name": self.name, "model": self.model, "base_url": self.base_url}


@dataclass
class WorkerLimits:
    """The mission's per-attempt limits (spec.mission.Limits) a worker applies."""

    max_turns: int = 40
    attempt_timeout: float = 3600
    command_timeout: float = 300
    output_cap: int = 20_000
    heartbeat_interval: float = 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerLimits:
        """From ``Limits.model_dump()``; the coordinator's own limits are not a worker's."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class WorkerConfig:
    """Everything a worker needs, as plain data so it crosses a spawn boundary."""

    run_id: str
    run_dir: str
    repo: str
    worktree_root: str
    role_id: str
    system_prompt: str
    provider: ProviderOptions
    model: str
    max_tokens: int
    limits: WorkerLimits
    port_base: int
    port_stride: int = 100  # this worker owns [port_base, port_base + port_stride)
    setup: str | None = None
    context_limit: int | None = None
    escalation_model: str = ""  # for attempts the coordinator escalates
    escalation_context_limit: int | None = None
    ranking_model: str = ""  # the cheap tier, for ranking skills
    workspace: str = ""  # where a workspace skills/ folder may override shipped skills
    test_command: str | None = None
    role_skills: list[str] = field(default_factory=list)
    role_capabilities: list[str] = field(default_factory=list)
    record: bool = False
    env: dict[str, str] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)  # a sandbox.Policy, as a dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerConfig:
        return cls(
            **{
                **data,
                "provider": ProviderOptions(**data["provider"]),
                "limits": WorkerLimits.from_dict(data["limits"]),
            }
        )
