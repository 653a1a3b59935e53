"""Imported last by the workers' forkserver (see ``providers.preload_modules``): warms
every SDK the forkserver imported before it, once, for all the workers it forks."""

from orchestrator.providers.warmup import warm_loaded_sdks

warm_loaded_sdks()
