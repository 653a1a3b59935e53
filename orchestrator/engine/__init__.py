"""The run: the coordinator (state and steps), the task graph, scheduling, the merge queue,
the pool, workers and the merger.
"""
