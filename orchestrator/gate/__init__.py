"""The merge queue: what lands on a target branch only ever passed its tests."""
