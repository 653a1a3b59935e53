"""Run what an agent causes (its commands, skills, CLI, setup and the gate) in bubblewrap.

pd's file tools are confined by path, but a shell is not: without a sandbox a command
could read the worker's API keys out of ``/proc``, write into another worker's worktree
or the user's checkout, move the target branch with ``git update-ref`` and plant hooks
that pd's own git would run. ``bwrap`` gives each command a fresh mount, PID and IPC
namespace, dropped capabilities and an environment built from an allow-list:

- the whole file system read-only, minus what is hidden: ``/tmp`` (a private tmpfs, the
  command's TMPDIR), home directories (HOME is an empty folder inside the sandbox),
  ``/run``, host secrets in ``/etc``, the user's checkout, every pd worktree and the
  run store;
- writable: the command's worktree, the repository's objects, the worktree's own git
  admin folder and the folder of its branch's ref; ``config``, ``hooks`` and every other
  ref stay read-only;
- the sandbox's init dies with the command, and every process in it with the init.

Paths a tool needs that live under a hidden folder (pd's Python environment, ``PATH``
folders under home) are shown again read-only; a mission adds more with
``sandbox.read_only``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import PdError

MODES = ("auto", "bwrap", "off")
INSIDE_HOME = "/tmp/home"
# What a command's environment may hold (plus the mission's sandbox.pass_env).
ALLOWED_ENV = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "PD_WORKER_ID",
    "PD_PORT_BASE",
    "PD_PORT_STRIDE",
    "PD_RUN_ID",
    "PYTEST_ADDOPTS",  # how a gate's retry runs the failing tests first (gate.firsttests)
)
# Host folders no command sees; /tmp and HOME come back empty and private.
HIDDEN_SYSTEM = ("/tmp", "/var/tmp", "/home", "/root", "/run", "/var/run", "/mnt", "/media")
SECRET_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers")
SECRET_DIRS = ("/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d")


class SandboxUnavailable(PdError):
    """The mission asks for a sandbox this machine cannot give."""


@dataclass(frozen=True)
class Policy:
    """How commands run: plain data, so it crosses a process spawn.

    ``mode`` is resolved ("bwrap" or "off", never "auto"). ``hidden`` holds pd's own
    paths (the user's checkout, the worktree root, the run store); ``read_only`` the
    extra host paths the mission shows to commands, ``read_write`` those it lets them
    write (a shared cache).
    """

    mode: str = "off"
    network: bool = True
    pass_env: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    read_write: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()

    @property
    def on(self) -> bool:
        return self.mode == "bwrap"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Policy:
        if not data:
            return cls()
        return cls(
            mode=str(data.get("mode", "off")),
            network=bool(data.get("network", True)),
            pass_env=tuple(data.get("pass_env") or ()),
            read_only=tuple(data.get("read_only") or ()),
            read_write=tuple(data.get("read_write") or ()),
            hidden=tuple(data.get("hidden") or ()),
        )


@functools.cache
def unavailable_reason() -> str | None:
    """Why bubblewrap cannot run here (None when it can): probed once per process."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--proc", "/proc", "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap did not run: {exc}"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"bwrap cannot create namespaces here ({why})"
    return None


def resolve_mode(requested: str) -> str:
    """ "auto" becomes "bwrap" where it works; a sandbox that cannot run is an error."""
    if requested == "off":
        return "off"
    reason = unavailable_reason()
    if reason is not None:
        raise SandboxUnavailable(f"no sandbox for agent commands: {reason}")
    return "bwrap"


def make_policy(
    mode: str,
    network: bool = True,
    pass_env: Iterable[str] = (),
    read_only: Iterable[str] = (),
    read_write: Iterable[str] = (),
    hidden: Iterable[str | Path] = (),
) -> Policy:
    """A run's policy: ``mode`` resolved (SandboxUnavailable if it cannot be had), the
    paths as real paths; ``hidden`` are pd's own folders."""
    return Policy(
        resolve_mode(mode),
        network,
        tuple(pass_env),
        _real(read_only),
        _real(read_write),
        _real(hidden),
    )


def _real(paths: Iterable[str | Path]) -> tuple[str, ...]:
    return tuple(str(Path(p).expanduser().resolve()) for p in paths)


def describe(policy: Policy) -> str:
    """One line for ``pd validate`` and ``pd status``."""
    if not policy.on:
        return "off (commands run unconfined, with the user's rights)"
    net = "network on" if policy.network else "network off, loopback only"
    return f"bwrap ({net})"


@dataclass
class Sandbox:
    """The sandbox of commands run in one worktree ``root``, on ``branch`` (None: a
    detached worktree such as the gate's, which may move no ref at all)."""

    policy: Policy
    root: Path
    branch: str | None = None
    expose: tuple[str, ...] = field(default=())  # more host paths shown read-only

    def command(
        self, argv: Sequence[str], env: Mapping[str, str], keep: Iterable[str] = ()
    ) -> tuple[list[str], dict[str, str]]:
        """``argv`` and ``env`` to run instead; ``keep`` names variables (a CLI agent's
        key) that pass besides the allow-list. With the sandbox off, both are unchanged."""
        if not self.policy.on:
            return list(argv), dict(env)
        args = list(self._prefix)
        for name, value in self._env(env, keep).items():
            args += ["--setenv", name, value]
        return [*args, "--", *argv], {}

    @functools.cached_property
    def _prefix(self) -> tuple[str, ...]:
        """bwrap and its mounts: the same for every command in this worktree, so built
        once (a few milliseconds of path checks per command otherwise)."""
        root = Path(self.root).resolve()
        args = ["bwrap", *self._namespaces(), *self._file_system(root)]
        return (*args, "--chdir", str(root), "--clearenv")

    def _namespaces(self) -> list[str]:
        args = ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        return args if self.policy.network else [*args, "--unshare-net"]

    def _file_system(self, root: Path) -> list[str]:
        args = ["--ro-bind", "/", "/", "--dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc"]
        home = os.environ.get("HOME") or "/"
        hidden = [*HIDDEN_SYSTEM, *([home] if home != "/" else [])]
        args += _each("--tmpfs", _outermost(_existing(hidden, real=False)))
        for secret in _existing(SECRET_FILES, real=False):
            args += ["--ro-bind", "/dev/null", secret]
        args += _each("--tmpfs", _existing(SECRET_DIRS, real=False))
        args += _each("--ro-bind", _existing(self.policy.read_only))
        args += _each("--bind", _existing(self.policy.read_write))
        args += _each("--tmpfs", _outermost(_existing(self.policy.hidden)))
        args += _each("--ro-bind", _tool_paths(self.expose, self.policy.hidden))
        args += self._git(root)
        args += ["--bind", str(root), str(root), "--dir", INSIDE_HOME]
        plain = root / ".git"
        if plain.is_dir():  # a plain checkout, not a worktree: keep its plumbing read-only
            args += _each("--ro-bind", _existing([plain / "config", plain / "hooks"]))
        return args

    def _git(self, root: Path) -> list[str]:
        """The common git dir read-only; objects, this worktree's admin folder and its
        branch's ref folder (and reflog folder) writable."""
        link = root / ".git"
        if not link.is_file():
            return []
        text = link.read_text().strip()
        if not text.startswith("gitdir:"):
            return []
        admin = (root / text.removeprefix("gitdir:").strip()).resolve()
        try:
            common = (admin / (admin / "commondir").read_text().strip()).resolve()
        except OSError:
            return []
        args = ["--ro-bind", str(common), str(common)]
        writable = [common / "objects", admin]
        if self.branch:
            folder = str(Path(self.branch).parent)
            for base in (common / "refs" / "heads", common / "logs" / "refs" / "heads"):
                where = (base / folder).resolve()
                if where.is_relative_to(base.resolve()) and where != base.resolve():
                    where.mkdir(parents=True, exist_ok=True)
                    writable.append(where)
        return args + _each("--bind", _existing(writable))

    def _env(self, env: Mapping[str, str], keep: Iterable[str]) -> dict[str, str]:
        names = {*ALLOWED_ENV, *self.policy.pass_env, *keep}
        chosen = {k: v for k, v in env.items() if k in names}
        chosen.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        return {**chosen, "HOME": INSIDE_HOME, "TMPDIR": "/tmp"}


def _each(flag: str, paths: Iterable[str | Path]) -> list[str]:
    """``flag path path`` for every path (bwrap's SRC DEST, same place inside)."""
    args: list[str] = []
    for path in paths:
        args += [flag, str(path)] if flag == "--tmpfs" else [flag, str(path), str(path)]
    return args


def _existing(paths: Iterable[str | Path], real: bool = True) -> list[str]:
    """The paths that exist, as real paths (bwrap binds onto a path, not a link)."""
    found: list[str] = []
    for path in paths:
        p = Path(path)
        if real:
            p = p.resolve()
        if p.is_symlink() or not p.exists():
            continue  # /var/run -> /run: hiding the target hides both
        if str(p) not in found:
            found.append(str(p))
    return found


def _outermost(paths: list[str]) -> list[str]:
    """Drop paths inside another one: hiding the outer folder hides them already."""
    ordered = sorted(paths, key=len)
    return [p for i, p in enumerate(ordered) if not any(_under(p, q) for q in ordered[:i])]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _tool_paths(expose: Iterable[str], hidden_too: Iterable[str]) -> list[str]:
    """Where tools live that the hidden folders would take away: pd's Python (its venv
    and base), ``PATH`` folders, DNS settings (often a link into /run), and paths a
    caller names (a CLI agent's executable)."""
    paths = [sys.prefix, sys.base_prefix, *os.environ.get("PATH", "").split(os.pathsep)]
    paths += [os.path.realpath("/etc/resolv.conf"), *expose]
    home = os.environ.get("HOME") or "/nonexistent"
    hidden = [*HIDDEN_SYSTEM, home, *(str(Path(h).resolve()) for h in hidden_too)]
    wanted = [p for p in _existing(p for p in paths if p) if any(_under(p, h) for h in hidden)]
    return _outermost(wanted)
