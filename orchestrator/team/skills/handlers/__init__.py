"""Skill handlers: ``function(box, **input) -> ToolResult``, one module per category.

``box`` is the agent's ``Toolbox`` (or ``SkillToolbox``): every path goes through
``box.resolve`` and every process through ``box.run``, so handlers inherit the
worktree confinement, output caps, scrubbed environment and process-group kills.
"""
