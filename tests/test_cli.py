"""The CLI's start-up: every ``pd`` command pays for what the CLI imports before it runs."""

from __future__ import annotations

import json
import subprocess
import sys

# What only the commands that need them import: missions and plans (pydantic,
# JSON Schema), the coordinator, the worker side, the SDKs.
HEAVY = [
    "orchestrator.spec.mission",
    "orchestrator.engine.preflight",
    "orchestrator.engine.coordinator",
    "orchestrator.engine.worker",
    "orchestrator.system.worktrees",
    "orchestrator.team.skills.registry",
    "pydantic",
    "jsonschema",
    "anthropic",
    "openai",
    # Only some commands need these: roles (YAML), team checks, process lookups.
    "orchestrator.team.roles",
    "orchestrator.spec.composition",
    "yaml",
    "psutil",
]


def test_building_the_cli_imports_none_of_the_run_time_modules() -> None:
    probe = (
        "import json, sys; import orchestrator.cli.main; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_help_still_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    for command in ["run", "resume", "demo", "status", "logs", "abort", "handoff", "report"]:
        assert command in out.stdout
    for command in ["plan", "validate", "roles", "missions", "skills"]:
        assert command in out.stdout


def test_version_prints_the_version_without_the_typer_app() -> None:
    probe = (
        "import sys; from orchestrator.cli.entry import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(code, 'typer' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    from orchestrator import __version__

    assert out.stdout.splitlines() == [f"pd {__version__}", "0 False"]
