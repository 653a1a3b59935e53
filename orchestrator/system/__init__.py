"""The operating system and git: git calls, worktrees, processes, the sandbox, OS hints, locks."""
