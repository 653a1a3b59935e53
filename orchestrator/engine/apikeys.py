"""API keys leave the environment of every pd process when a run starts.

Design (issue 10): the coordinator reads the keys its provider needs once, after
preflight has checked they are set, then removes every secret (``scrub_env``'s rule) from
its own environment, both ``os.environ`` and the block ``/proc/<pid>/environ`` shows,
before it starts any child. The forkserver, the merger, pd's git calls and every command
then start from an environment without keys. Each worker gets its keys as a spawn
argument (pickled over the pool's pipe: in memory only, never in a config, an event or a
file) and hands them to the SDK client (``api_key=``) or to its CLI agent's environment;
a restarted worker gets the same argument back from the pool. Re-reading the keys from a
file was the alternative, and would put them on disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

from orchestrator.agent.external.registry import DEFAULT_KEYS
from orchestrator.engine.providercheck import KEY_ENV
from orchestrator.team.tools import scrub_env


def key_names(
    provider: str, agent: str | None = None, pass_env: list[str] | None = None
) -> list[str]:
    """The environment variables a run's model calls need: the SDK's key, or what the
    CLI agent is given (its ``pass_env``, else its default key)."""
    if provider == "command":
        return list(pass_env or DEFAULT_KEYS.get(agent or "", []))
    return [KEY_ENV[provider]] if provider in KEY_ENV else []


def take_keys(names: list[str]) -> dict[str, str]:
    """The values of ``names``, read before every secret leaves this process's environment."""
    keys = {name: os.environ[name] for name in names if os.environ.get(name)}
    drop_secrets()
    return keys


def drop_secrets() -> None:
    """Remove what ``scrub_env`` would drop from ``os.environ`` and wipe it from the
    environment block the kernel shows other processes (``/proc/<pid>/environ``)."""
    kept = scrub_env(os.environ)
    secret = [name for name in os.environ if name not in kept]
    for name in secret:
        del os.environ[name]  # unsetenv: libc forgets the string; its bytes stay in memory
    _wipe_initial_block({name.encode() for name in secret})


def _wipe_initial_block(names: set[bytes]) -> None:
    """Overwrite ``NAME=value`` entries of the block exec gave us with zero bytes (what
    ``setproctitle`` does to argv). Best effort: without /proc there is nothing to show."""
    if not names:
        return
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end: fields 50, 51
        block = ctypes.string_at(start, end - start)
        offset = 0
        for entry in block.split(b"\0"):
            if entry.partition(b"=")[0] in names:
                ctypes.memset(start + offset, 0, len(entry))
            offset += len(entry) + 1
