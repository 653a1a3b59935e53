"""The shell skill: ``Toolbox.run_command``."""

from __future__ import annotations

from orchestrator.team.tools import Toolbox, ToolResult


def run_command(box: Toolbox, command: str, timeout: float | None = None) -> ToolResult:
    return box.run_command(command, timeout)
