"""``pd handoff``: commit a worker's work in progress and restart it from a handoff note."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.output import RUN, console
from orchestrator.errors import BadInput
from orchestrator.record.control import (
    ControlRequest,
    await_answer,
    coordinator_alive,
    send_request,
)
from orchestrator.record.store import RunStore


def handoff(
    run: RUN = None,
    worker: Annotated[str, typer.Option(help="The worker to hand off, e.g. w2.")] = "",
) -> int:
    """Have a worker commit its work in progress; a fresh process goes on from there."""
    # The commit goes to the task branch; the fresh process starts from it and the
    # worker's handoff note.
    if not worker:
        raise BadInput("pd handoff", "no worker given", "name one with --worker, e.g. --worker w1")
    store = RunStore.open(run)
    if not coordinator_alive(store):
        raise BadInput(store.run_id, "the run is not running", "resume it with `pd resume` first")
    workers = {w["id"]: w for w in (store.read_state() or {}).get("workers", [])}
    if workers and worker not in workers:
        raise BadInput("--worker", f"no worker {worker!r} in run {store.run_id}",
                       f"use one of: {', '.join(workers)}")  # fmt: skip
    refused = await_answer(store, send_request(store, ControlRequest("handoff", worker=worker)))
    if refused is not None:
        raise BadInput(store.run_id, refused, "hand off a worker that is on a task (`pd status`)")
    console.print(f"run {store.run_id} is handing off {worker}")
    return 0
