"""Run one external agent CLI as a task attempt: its own process group, output streamed
line by line, killed whole on abort or timeout, never an exception for bad output.

Why a process group: the tool starts children of its own (shells, test runners, servers),
and an abort must take all of them down, not just the CLI. The group is registered with
``procs`` so the worker's SIGTERM handler (``kill_all_running``) kills it too, and the
child asks the kernel for SIGKILL when the thread that started it dies (PR_SET_PDEATHSIG),
so call this from a long-lived thread such as the worker's main thread.

``env`` is the child's complete environment, used as is: the caller scrubs secrets and
puts back only the key the tool needs (ANTHROPIC_API_KEY for claude, OPENAI_API_KEY for
codex, GEMINI_API_KEY for gemini, the model's key for aider), plus PATH and HOME.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from orchestrator.agent.external.base import (
    Adapter,
    CommandAgentResult,
    is_unreadable,
    tail,
)
from orchestrator.agent.external.registry import get_adapter
from orchestrator.system import procs
from orchestrator.system.sandbox import Sandbox

POLL_SECONDS = 0.2  # how often should_stop and the deadline are checked
KILL_GRACE = 1.0  # SIGTERM to SIGKILL
DRAIN_SECONDS = 2.0  # wait for pipes held open by a process that left our group
STDERR_LINES = 200
_IDLE = object()

Record = Callable[[dict[str, Any]], None]


def run_command_agent(
    adapter_or_name: Adapter | str,
    prompt: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    model: str | None = None,
    executable: str | os.PathLike[str] | Sequence[str] | None = None,
    extra_args: Sequence[str] = (),
    should_stop: Callable[[], bool] = lambda: False,
    on_line: Callable[[str], None] = lambda s: None,
    record: Record = lambda e: None,
    sandbox: Sandbox | None = None,
    keep: Sequence[str] = (),
) -> CommandAgentResult:
    """Run the tool in ``cwd`` on ``prompt`` until it exits, ``should_stop()``, or timeout.

    ``executable`` replaces the binary (a path, or an argv prefix such as
    ``[sys.executable, "fake_claude.py"]``). ``on_line`` gets a short progress line for
    stdout lines that say something; ``record`` gets one dict per stdout line and a last
    ``{"kind": "end", ...}``. An unknown adapter name raises ProviderError; everything
    that goes wrong after that comes back as ``finished=False`` with a reason. With a
    ``sandbox`` the tool runs inside it and gets only the variables ``keep`` names
    besides the sandbox's allow-list.
    """
    adapter = get_adapter(adapter_or_name)
    argv = _command(adapter, prompt, model, list(extra_args), executable)
    shown = [a.replace(prompt, "<prompt>") for a in argv] if prompt else argv
    record({"kind": "command", "adapter": adapter.name, "argv": shown, "cwd": str(cwd)})
    if should_stop():
        return _end(CommandAgentResult(False, "", reason="aborted"), record)
    run_argv, run_env = argv, dict(env)
    if sandbox is not None:
        sandbox.expose = _program_folders(argv, env)
        run_argv, run_env = sandbox.command(argv, env, keep)
    try:
        proc = subprocess.Popen(
            run_argv,
            cwd=str(cwd),
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=procs.die_with(os.getpid()),
        )
    except OSError as exc:
        reason = f"{adapter.name}: could not start {argv[0]!r}: {exc}"
        return _end(CommandAgentResult(False, "", reason=reason), record)
    session = _Session(proc)
    try:
        ended = session.pump(adapter, timeout, should_stop, on_line, record)
    finally:
        session.stop()
    for line in session.rest():
        session.handle(line, adapter, lambda s: None, record)
    return _end(_judge(adapter, session, ended), record)


class _Session:
    """One running tool. Both pipes are drained by threads so neither fills and blocks it;
    stdout lines are handed to the caller's thread through a queue."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pgid = proc.pid  # start_new_session: the tool leads its own group
        procs._RUNNING[self.pgid] = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        assert proc.stdout is not None and proc.stderr is not None
        self.readers = [
            threading.Thread(target=_read, args=(proc.stdout, self.lines.put, True), daemon=True),
            threading.Thread(target=_read, args=(proc.stderr, self.stderr.append), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def pump(
        self,
        adapter: Adapter,
        timeout: float,
        should_stop: Callable[[], bool],
        on_line: Callable[[str], None],
        record: Record,
    ) -> str:
        """Hand lines on until stdout ends; returns why it stopped early ("" if it did not)."""
        deadline = time.monotonic() + timeout
        exited_at: float | None = None
        while True:
            try:
                line: object = self.lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                line = _IDLE
            if line is None:
                return ""
            if isinstance(line, str):
                self.handle(line, adapter, on_line, record)
            if should_stop():
                return "aborted"
            now = time.monotonic()
            if exited_at is None:
                if now >= deadline:
                    return f"timed out after {timeout:g}s"
                if self.proc.poll() is not None:
                    # The tool is gone; what it left in its group may hold stdout open.
                    exited_at = now
                    procs.kill_group(self.pgid, KILL_GRACE, leader=self.proc)
            elif line is _IDLE and now - exited_at > DRAIN_SECONDS:
                return ""  # a process that left our group still holds the pipe

    def handle(
        self, line: str, adapter: Adapter, on_line: Callable[[str], None], record: Record
    ) -> None:
        self.stdout.append(line)
        record(_line_record(line))
        try:
            text = adapter.describe(line)
        except Exception:  # a progress line is never worth failing the attempt for
            text = None
        if text:
            on_line(text)

    def stop(self) -> None:
        """Kill the whole group (SIGTERM, grace, SIGKILL) and reap the tool."""
        try:
            procs.kill_group(self.pgid, KILL_GRACE, leader=self.proc)
            self.proc.wait()
        finally:
            procs._RUNNING.pop(self.pgid, None)
        for reader in self.readers:
            reader.join(timeout=DRAIN_SECONDS)

    def rest(self) -> list[str]:
        """Lines read but not yet handed on when pumping stopped."""
        rest: list[str] = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return rest
            if line is not None:
                rest.append(line)


def _read(stream: IO[bytes], sink: Callable[[Any], None], mark_eof: bool = False) -> None:
    try:
        for raw in iter(stream.readline, b""):
            sink(raw.decode(errors="replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass  # the pipe went away under us: the tool is being killed
    finally:
        stream.close()
        if mark_eof:
            sink(None)


def _command(
    adapter: Adapter,
    prompt: str,
    model: str | None,
    extra: list[str],
    executable: str | os.PathLike[str] | Sequence[str] | None,
) -> list[str]:
    argv = adapter.argv(prompt, model, extra)
    if executable is None:
        return argv
    if isinstance(executable, str | os.PathLike):
        head = [os.fspath(executable)]
    else:
        head = [str(part) for part in executable]
    return [*head, *argv[1:]]


def _program_folders(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    """The folders of the tool's program and of the script it is given, so a sandbox
    that hides home directories still shows them (read-only)."""
    found = []
    for part in argv[:2]:
        where = shutil.which(part, path=env.get("PATH")) if os.sep not in part else part
        if where and os.path.exists(where):
            found += [
                os.path.dirname(os.path.abspath(where)),
                os.path.dirname(os.path.realpath(where)),
            ]
    return tuple(dict.fromkeys(found))


def _line_record(line: str) -> dict[str, Any]:
    """JSON lines are kept as objects, so a transcript reader need not parse twice."""
    if line.lstrip().startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict):
            return {"kind": "agent_event", "event": event}
    return {"kind": "agent_output", "line": line}


def _judge(adapter: Adapter, session: _Session, ended: str) -> CommandAgentResult:
    """Decide how the attempt went from the exit code, stdout and stderr.

    Usage, cost and turns are kept even on failure: the tokens were spent either way.
    """
    stdout, stderr = "\n".join(session.stdout), "\n".join(session.stderr)
    result = _parse(adapter, stdout)
    code = session.proc.returncode
    if ended:
        result.finished, result.summary, result.reason = False, "", ended
    elif code != 0 or not result.finished:
        reason = _tool_error(result) or _tool_error(_parse(adapter, stderr))
        if not reason:
            reason = result.reason if code == 0 else _exit_reason(adapter.name, code, stderr)
        result.finished, result.summary, result.reason = False, "", reason
    result.output_tail = tail(stdout)
    if stderr.strip():
        result.output_tail += "\n[stderr]\n" + tail(stderr)
    return result


def _parse(adapter: Adapter, text: str) -> CommandAgentResult:
    try:
        return adapter.parse(text)
    except Exception as exc:  # a parser bug must fail the attempt, not the worker
        return CommandAgentResult(False, "", reason=f"{adapter.name}: parse error: {exc!r}")


def _tool_error(result: CommandAgentResult) -> str:
    """The tool's own error text, if ``result`` carries one."""
    if result.finished or is_unreadable(result):
        return ""
    return result.reason


def _exit_reason(name: str, code: int, stderr: str) -> str:
    if code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with {code}"
    last = [line.strip() for line in stderr.splitlines() if line.strip()][-3:]
    return f"{name} {how}" + (f": {' | '.join(last)}" if last else "")


def _end(result: CommandAgentResult, record: Record) -> CommandAgentResult:
    record({"kind": "end", **result.to_dict(), "output_tail": result.output_tail})
    return result
