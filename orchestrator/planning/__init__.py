"""A goal becomes a task graph."""
