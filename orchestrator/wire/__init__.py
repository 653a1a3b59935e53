"""What crosses a process boundary: the typed messages between coordinator, workers and merger."""
