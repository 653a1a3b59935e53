"""Which agent a worker holds, decided once at boot from its ``ProviderOptions``: the one
place that looks at the provider's kind, so the worker never does."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestrator.agent.external.agent import CommandAgent
from orchestrator.agent.external.registry import DEFAULT_KEYS
from orchestrator.agent.model import ModelAgent, ModelSettings
from orchestrator.agent.protocol import Agent
from orchestrator.agent.recorder import RecordingProvider
from orchestrator.engine.providercheck import KEY_ENV
from orchestrator.engine.workerconfig import WorkerConfig
from orchestrator.errors import PdError
from orchestrator.limits.client import MeteredProvider, PermitClient, estimate
from orchestrator.planning.producer import plan_job
from orchestrator.providers import Provider, make_provider


def make_agent(
    config: WorkerConfig,
    keys: Mapping[str, str],
    *,
    permits: PermitClient | None,
    should_stop: Callable[[], bool],
    record_to: Path | None = None,
) -> Agent:
    """The CLI agent for the command provider, else pd's loop over the model provider
    (recorded to ``record_to`` if given, metered when calls cost money)."""
    if config.provider.external:
        return command_agent(config, keys)
    provider = model_provider(config, keys, permits, should_stop, record_to)
    return ModelAgent(provider, model_settings(config), planner=plan_job, name=config.provider.name)


def command_agent(config: WorkerConfig, keys: Mapping[str, str]) -> CommandAgent:
    """A coding-agent CLI that sees only its own API key (of those the worker holds, or
    failing that of the worker's environment)."""
    options = config.provider
    wanted = options.pass_env or DEFAULT_KEYS.get(options.agent, [])
    given = {**{k: os.environ[k] for k in wanted if k in os.environ}, **keys}
    return CommandAgent(
        agent=options.agent,
        system_prompt=config.system_prompt,
        timeout=config.limits.attempt_timeout,
        model=config.model,
        executable=options.executable,
        args=list(options.args),
        keys=list(wanted),
        secrets={k: given[k] for k in wanted if k in given},
    )


def model_provider(
    config: WorkerConfig,
    keys: Mapping[str, str],
    permits: PermitClient | None,
    should_stop: Callable[[], bool],
    record_to: Path | None,
) -> Provider:
    """The model provider, wrapped: recorded if asked, and metered when calls cost
    money (every call then passes the run's one limiter and one ledger)."""
    options = config.provider
    key = keys.get(KEY_ENV.get(options.name, ""))
    provider = make_provider(**options.sdk_options(), **({"api_key": key} if key else {}))
    warm = getattr(provider, "warm", None)
    if warm is not None:  # the SDKs: their first-use work done now, not on a permit's clock
        warm()
    if record_to is not None:
        provider = RecordingProvider(provider, record_to)
    if not options.paid:
        return provider
    if permits is None:
        raise PdError("a worker making paid model calls needs a permit pipe")
    return MeteredProvider(provider, permits, estimate, should_stop)


def model_settings(config: WorkerConfig) -> ModelSettings:
    limits = config.limits
    return ModelSettings(
        system_prompt=config.system_prompt,
        model=config.model,
        max_tokens=config.max_tokens,
        max_turns=limits.max_turns,
        command_timeout=limits.command_timeout,
        output_cap=limits.output_cap,
        context_limit=config.context_limit,
        escalation_model=config.escalation_model,
        escalation_context_limit=config.escalation_context_limit,
        ranking_model=config.ranking_model if config.provider.paid else None,
        test_command=config.test_command,
        role_skills=list(config.role_skills),
        role_capabilities=list(config.role_capabilities),
        workspace=config.workspace,
    )
