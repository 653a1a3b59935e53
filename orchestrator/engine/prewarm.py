"""Imported last by the workers' forkserver (see ``coordinator.CHILD_MODULES``): loads the
shipped skill catalog once, so every worker forked from it finds the manifests already
validated and their handlers imported, instead of each one spending tenths of a second
of CPU on it at boot and again for each review."""

import contextlib

from orchestrator.team.skills import load_registry

with contextlib.suppress(Exception):  # a broken catalog is each worker's to report, at boot
    load_registry()
