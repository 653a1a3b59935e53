"""The plain-data configs the coordinator hands to the processes it spawns."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.engine.merger import MergerConfig
from orchestrator.engine.preflight import RunPlan
from orchestrator.engine.runstate import MERGER
from orchestrator.engine.workerconfig import ProviderOptions, WorkerConfig, WorkerLimits
from orchestrator.record.store import RunStore


def worker_config(
    plan: RunPlan, store: RunStore, root: Path, worker_id: str, role: str
) -> dict[str, Any]:
    """Worker ``wN`` gets port block N, so dev servers of different workers never clash."""
    mission, index = plan.mission, int(worker_id.lstrip("w"))
    model = plan.provider.models.get(role, "")
    provider = provider_options(plan, model)
    return WorkerConfig(
        run_id=store.run_id,
        run_dir=str(store.dir),
        repo=str(plan.repo),
        worktree_root=str(root),
        role_id=role,
        system_prompt=plan.roles[role].system_prompt(),
        provider=provider,
        model=model,
        max_tokens=mission.provider.max_tokens,
        limits=WorkerLimits.from_dict(mission.limits.model_dump()),
        setup=mission.setup,
        port_base=mission.port_base + index * mission.port_stride,
        port_stride=mission.port_stride,
        context_limit=plan.provider.context_limit(model),
        escalation_model=plan.provider.escalation,
        escalation_context_limit=plan.provider.context_limit(plan.provider.escalation),
        ranking_model=plan.provider.cheap,
        workspace=str(plan.workspace),
        test_command=plan.gate_command,
        role_skills=list(plan.roles[role].skills),
        role_capabilities=list(plan.roles[role].capabilities),
        record=plan.record,
        sandbox=plan.sandbox.to_dict(),
    ).to_dict()


def provider_options(plan: RunPlan, model: str) -> ProviderOptions:
    """What ``make_provider`` (or the command runner) needs; keys are read from the
    environment inside the worker, never carried in a config that could be logged."""
    config = plan.mission.provider
    if config.name == "scripted":
        return ProviderOptions(config.name, cassette=str(plan.provider.cassette))
    if config.name == "command":
        return ProviderOptions(
            config.name,
            agent=config.agent or "",
            executable=config.executable,
            args=list(config.args or []),
            pass_env=list(config.pass_env or []),
        )
    return ProviderOptions(config.name, model=model, base_url=plan.provider.base_url)


def merger_config(plan: RunPlan, store: RunStore, root: Path) -> dict[str, Any]:
    """The merger's gate runs in ``root/_integration`` with port block 0; with parallel
    gates, gate N runs in ``_integration-N`` with a port block after the workers'."""
    mission = plan.mission
    return asdict(
        MergerConfig(
            repo=str(plan.repo),
            target_branch=plan.target_branch,
            integration_path=str(root / "_integration"),
            gate_command=plan.gate_command,
            gate_timeout=mission.gate.timeout,
            log_dir=str(store.dir / "logs"),
            setup=mission.setup,
            env={
                "PD_WORKER_ID": MERGER,
                "PD_PORT_BASE": str(mission.port_base),
                "PD_RUN_ID": store.run_id,
            },
            sandbox=plan.sandbox.to_dict(),
            symlinks=mission.sandbox.symlinks,
            git_files=list(mission.sandbox.git_files),
            parallel=plan.gate_parallel,
            lane_ports=[
                mission.port_base + (len(plan.workers) + lane) * mission.port_stride
                for lane in range(1, plan.gate_parallel)
            ],
        )
    )
