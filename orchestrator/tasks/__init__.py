"""The task graph and who does which task: the state machine of a task's life and the
scheduling rules, pure logic with no I/O."""
