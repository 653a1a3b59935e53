"""Rate limits under saturation: 16 pd workers against the local API server's buckets.

Run ``python bench/bench_limits.py [--quick] [--trace]``. A real ``pd run`` (subprocess)
of many small tasks, 16 ``backend-dev`` workers, the ``anthropic`` provider (the real
SDK) pointed at a ``LocalAPIServer`` running in this process, which enforces request,
input and output token buckets over a sliding window of a few seconds (the same numbers
as the mission's ``rate_limits``). Printed, never asserted:

- 429s the server returned because pd sent too much (not injected faults);
- the most any sliding window held, per bucket, from the server's own log, vs the limit;
- utilisation of the binding limit while all 16 workers are up and have work;
- the permit round trip (``permit_rtt`` of the ``usage`` events) vs a bare
  ``multiprocessing.Pipe`` round trip measured in the same run, idle and under load. It
  is the time from the ask until the grant is in the worker's hands and usable, less
  the limiter's own wait. A queued call's grant is sent up to ``GRANT_AHEAD`` before its
  start, so for those it is the ask's way to the coordinator plus any lateness of the
  grant past its start; ``--trace`` shows the grant's own way back as a leg of its own.
  The header says how the permit threads are scheduled here (real-time where allowed).

``--trace`` also times each permit's legs, the grant-to-arrival delay the limiter's
margin must cover, and the coordinator loop's steps (a shim in every pd process).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import multiprocessing as mp
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
from _common import GIT_ENV, echo, pct, run_git, say

from orchestrator.limits.bucket import default_margin
from orchestrator.system import oshints
from orchestrator.testing.apiserver import LocalAPIServer, Reply, max_window_usage
from orchestrator.wire.messages import AcquireTokens

START_METHOD = "spawn"
MODEL = "claude-haiku-4-5"
WORKERS = 16
WINDOW = 3.0  # seconds: "per minute" limits scaled to a window of a few seconds
REQUESTS = 40  # calls per window the binding bucket allows (at the mean call size)
LOOSE = 1.5  # the other buckets allow this much more than that pace needs
MAX_TOKENS = 256  # what pd reserves of the output bucket per call, until the call settles
BUCKETS = ("requests", "input_tokens", "output_tokens")
BAR_UTILISATION = 0.95
BAR_RTT_P99 = 0.002
PING_EVERY = 0.005  # seconds between the background Pipe pings during the run

# A sitecustomize.py put on the PYTHONPATH of the pd run (--trace): every process of the
# run (coordinator, spawned workers, merger) imports it at start-up. PD_BENCH_TRACE=DIR:
# stamp each permit's legs (time.monotonic, one clock for every process on Linux) and
# time the coordinator loop's steps, into DIR.
SHIM = '''\
"""bench_limits shim (see bench/bench_limits.py); inert unless PD_BENCH_* is set."""
import os as _os

_TRACE = _os.environ.get("PD_BENCH_TRACE")


def _install():
    import json, threading, time
    from orchestrator.limits import client

    if not _TRACE:
        return
    import atexit, collections
    from orchestrator.record import control
    from orchestrator.engine import coordinator
    from orchestrator.limits import permitdesk
    from orchestrator.record import store
    from orchestrator.wire.messages import Grant

    out = open(_os.path.join(_TRACE, f"{_os.getpid()}.jsonl"), "a", buffering=1)
    local, steps = threading.local(), collections.defaultdict(list)

    def log(**record):
        out.write(json.dumps(record) + "\\n")

    acquire, answer = client.PermitClient.acquire, client.PermitClient._answer

    def traced_answer(self, request_id, should_stop):
        got = answer(self, request_id, should_stop)
        local.got = time.monotonic()
        return got

    def traced_acquire(self, ask, should_stop):
        sent = time.monotonic()
        request_id, permit_id = acquire(self, ask, should_stop)
        local.w, local.r = self.worker_id, request_id
        log(k="acq", w=self.worker_id, r=request_id, sent=sent, got=local.got,
            go=time.monotonic(), task=ask.get("task_id"), n=getattr(local, "n", None))
        return request_id, permit_id

    client.PermitClient.acquire = traced_acquire
    client.PermitClient._answer = traced_answer
    complete = client.MeteredProvider.complete

    def traced_complete(self, request):
        local.n = len(request.messages)
        return complete(self, request)

    client.MeteredProvider.complete = traced_complete
    from orchestrator.providers import sdkgate

    gate = sdkgate.SendGate.__call__

    def traced_gate(self, request):
        log(k="gate", w=getattr(local, "w", None), r=getattr(local, "r", None),
            now=time.monotonic())
        return gate(self, request)

    sdkgate.SendGate.__call__ = traced_gate
    ask = permitdesk.PermitDesk.ask

    def traced_ask(self, message, role, now):
        log(k="ask", w=message.worker_id, r=message.request_id, now=now)
        return ask(self, message, role, now)

    permitdesk.PermitDesk.ask = traced_ask
    try_ = permitdesk.PermitDesk._try

    def traced_try(self, call, now, queue):
        answer = try_(self, call, now, queue)
        if isinstance(answer, Grant):
            log(k="grant", w=call.ask.worker_id, r=call.ask.request_id, now=now,
                real=time.monotonic())
        return answer

    permitdesk.PermitDesk._try = traced_try

    def timed(owner, name, label):
        original = getattr(owner, name, None)
        if original is None:
            return

        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                steps[label].append((time.monotonic(), time.perf_counter() - began))

        setattr(owner, name, wrapper)

    for name in ("_step", "_assign", "_handle", "_check_health", "_write_state", "emit"):
        timed(coordinator.Coordinator, name, name)
    timed(control, "take_requests", "take_requests")
    timed(store.RunStore, "sync", "store.sync")
    timed(permitdesk.PermitDesk, "pump", "desk.pump")

    def dump():
        if any(steps.values()):
            with open(_os.path.join(_TRACE, f"steps-{_os.getpid()}.json"), "w") as handle:
                json.dump(steps, handle)

    atexit.register(dump)


if _TRACE:
    try:
        _install()
    except ImportError:  # not pd's interpreter
        pass
'''


def permit_scheduling() -> str:
    """What pd's permit threads get here (``orchestrator.system.oshints``), asked in a thread
    of our own that ends at once."""
    got: list[str] = []
    probe = threading.Thread(target=lambda: got.append(oshints.quick()))
    probe.start()
    probe.join()
    off = " (PD_REALTIME=0)" if os.environ.get(oshints.REALTIME_ENV) == "0" else ""
    return f"{got[0]}{off}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:,.0f} us"


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return (
        f"p50 {ms(statistics.median(values))}, p99 {ms(pct(values, 0.99))}, "
        f"max {ms(max(values))} ({len(values)})"
    )


# ---- the workload: tasks that write a few files, then finish -------------------------


def plan_tasks(count: int) -> dict[str, int]:
    """Task id -> write_file turns before ``finish`` (2 to 6, so 3 to 7 calls, mean 5).
    Mixed lengths keep the 16 workers from finishing in lockstep waves."""
    return {f"t{i:03d}": 2 + (i * 3) % 5 for i in range(count)}


def output_tokens(task: str, turn: int) -> int:
    """What the server bills for one reply: 80..160 tokens, deterministic."""
    return 80 + (sum(map(ord, task)) * 7 + turn * 13) % 81


def task_of(body: dict[str, Any]) -> str:
    """The task id, from the "# Task <id>:" line pd puts in the first user message."""
    for message in body["messages"]:
        content = message["content"]
        text = content if isinstance(content, str) else json.dumps(content)
        if found := re.search(r"# Task (\S+):", text):
            return found.group(1)
    raise ValueError("no task in the prompt")


class Script:
    """The server's reply callable: write_file a few times, then finish."""

    def __init__(self, writes: dict[str, int]) -> None:
        self.writes = writes

    def __call__(self, api: str, body: dict[str, Any]) -> Reply:
        task = task_of(body)
        done = sum(1 for m in body["messages"] if m["role"] == "assistant")
        out = output_tokens(task, done)
        if done < self.writes.get(task, 1):
            call = ("write_file", {"path": f"{task}/f{done}.txt", "content": f"{task} {done}\n"})
            return Reply(tool_calls=[call], output_tokens=out)
        return Reply(tool_calls=[("finish", {"summary": f"{task} written"})], output_tokens=out)


class StampedServer(LocalAPIServer):
    """Also keeps when ``handle`` began (``received``): the log's ``arrived`` is stamped
    later, under the lock, after the body was parsed and hashed."""

    def _entry(self, index: int, dialect: Any, path: str) -> dict[str, Any]:
        entry = super()._entry(index, dialect, path)
        entry["received"] = entry["arrived"]
        return entry


# ---- pd's own permit round trip figure -----------------------------------------------


# ---- bare Pipe round trips, idle and while pd runs -----------------------------------


def _payload() -> bytes:
    """An AcquireTokens-sized message, as a worker sends before every call."""
    ask = AcquireTokens(
        worker_id="w16",
        request_id=123,
        task_id="t063",
        provider="anthropic",
        model=MODEL,
        input_tokens=4321,
        max_output=MAX_TOKENS,
        worst_case_input=5678,
    )
    return ask.to_bytes()


def _ping(conn: Connection, trips: int, every: float, stop: Any = None) -> list[tuple]:
    """(monotonic start, seconds) per round trip, after 20 warm-up trips."""
    payload, times = _payload(), []
    for i in range(trips + 20):
        if stop is not None and stop.is_set():
            break
        at = time.monotonic()
        start = time.perf_counter()
        conn.send_bytes(payload)
        conn.recv_bytes()
        if i >= 20:
            times.append((at, time.perf_counter() - start))
        if every:
            time.sleep(every)
    return times


def _pinger(conn: Connection, out: Connection, stop: Any, every: float) -> None:
    """A process of its own, so its pings take neither the server's GIL nor its core."""
    out.send(_ping(conn, 10**9, every, stop))
    conn.send_bytes(b"")


class Pipes:
    """An echo process; idle pings from here, or pings from a pinger process all along
    the pd run (the same Pipe under the same load as the permits)."""

    def __init__(self) -> None:
        self.ctx = mp.get_context(START_METHOD)
        self.near, far = self.ctx.Pipe(duplex=True)
        self.echo = self.ctx.Process(target=echo, args=(far,), daemon=True)
        self.echo.start()
        far.close()
        self.pinger: Any = None

    def idle(self, trips: int) -> list[float]:
        return [seconds for _, seconds in _ping(self.near, trips, 0.0)]

    def start_background(self) -> None:
        self.results, sink = self.ctx.Pipe(duplex=False)
        self.stop = self.ctx.Event()
        self.pinger = self.ctx.Process(
            target=_pinger, args=(self.near, sink, self.stop, PING_EVERY), daemon=True
        )
        self.pinger.start()
        sink.close()

    def stop_background(self) -> list[tuple]:
        self.stop.set()
        try:
            samples = self.results.recv() if self.results.poll(10) else []
        except (EOFError, OSError):  # the pinger died: no loaded baseline this time
            samples = []
        self.pinger.join(5)
        return samples

    def close(self) -> None:
        if self.pinger is None:
            self.near.send_bytes(b"")
        self.echo.join(2)
        if self.echo.is_alive():
            self.echo.kill()
        self.near.close()


# ---- one pd run against the server -----------------------------------------------------


class Sampler(threading.Thread):
    """Every 0.25 s: the machine's CPU busy share, the coordinator's CPU time (it exits
    with the run, so the last sample is kept), and that of the coordinator's forkserver
    and its children (workers, merger): nobody this process waits for reaps them, so
    ``RUSAGE_CHILDREN`` never sees their time."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.coordinator, self.done = pid, 0.0, threading.Event()
        self.busy: list[tuple[float, float]] = []  # (monotonic, % of all cores)
        self.forked: dict[int, float] = {}  # pid -> CPU seconds at its last sample
        self.steal = 0.0  # CPU seconds the hypervisor gave other guests (0 off a VM)

    @property
    def forked_cpu(self) -> float:
        return sum(self.forked.values())

    def run(self) -> None:
        psutil.cpu_percent(None)
        stolen = getattr(psutil.cpu_times(), "steal", 0.0)
        try:
            proc = psutil.Process(self.pid)
            while not self.done.wait(0.25):
                self.busy.append((time.monotonic(), psutil.cpu_percent(None)))
                self.steal = getattr(psutil.cpu_times(), "steal", 0.0) - stolen
                times = proc.cpu_times()
                self.coordinator = times.user + times.system
                self._sample_forked(proc)
        except psutil.Error:
            return

    def _sample_forked(self, proc: psutil.Process) -> None:
        for server in proc.children():
            try:
                if "forkserver" not in " ".join(server.cmdline()):
                    continue
                times = server.cpu_times()
                self.forked[server.pid] = times.user + times.system  # its reaped ones below
                for child in server.children():
                    t = child.cpu_times()  # with the commands it ran and reaped
                    self.forked[child.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                continue


@dataclass
class RunResult:
    code: int
    output: str
    wall: float
    events: list[dict[str, Any]]
    log: list[dict[str, Any]]
    cpu_pd: float = 0.0  # every process of the pd run, git included
    cpu_bench: float = 0.0  # this process: mostly the server's threads
    sampler: Sampler | None = None
    loaded: list[tuple] = field(default_factory=list)  # background Pipe pings
    trace: list[dict[str, Any]] = field(default_factory=list)
    steps: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _cpu(usage: Any) -> float:
    return usage.ru_utime + usage.ru_stime


def pd_run(
    tmp: Path,
    name: str,
    writes: dict[str, int],
    limits: dict[str, float] | None,
    workers: int,
    shim: dict[str, str],
    pipes: Pipes | None = None,
) -> RunResult:
    """``pd run`` of the mission against a fresh server with ``limits`` (None: none)."""
    home, repo = tmp / name / "home", tmp / name / "repo"
    home.mkdir(parents=True)
    repo.mkdir(parents=True)
    run_git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("bench\n")
    run_git(repo, "add", "-A")
    run_git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "first")
    env = {**os.environ, **GIT_ENV, "PD_HOME": str(home), "ANTHROPIC_API_KEY": "test-key"}
    env.pop("OPENAI_API_KEY", None)
    trace_dir = tmp / name / "trace"
    if shim:
        (tmp / "shim").mkdir(exist_ok=True)
        (tmp / "shim" / "sitecustomize.py").write_text(SHIM)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(tmp / "shim"), env.get("PYTHONPATH")])
        )
        env.update(shim)
        if "PD_BENCH_TRACE" in shim:
            trace_dir.mkdir()
            env["PD_BENCH_TRACE"] = str(trace_dir)
    server = StampedServer(Script(writes), limits=limits, keep_bodies="PD_BENCH_TRACE" in shim)
    with server:
        mission: dict[str, Any] = {
            "name": f"bench-limits-{name}",
            "test_command": "true",
            "team": [{"role": "backend-dev", "count": workers}],
            "tasks": [{"id": t, "title": f"write {t}", "role": "backend-dev"} for t in writes],
            "provider": {
                "name": "anthropic",
                "model": MODEL,
                "max_tokens": MAX_TOKENS,
                "base_url": server.url,
            },
        }
        if limits:
            mission["rate_limits"] = {
                "anthropic": {
                    "requests_per_minute": int(limits["requests"]),
                    "input_tokens_per_minute": int(limits["input_tokens"]),
                    "output_tokens_per_minute": int(limits["output_tokens"]),
                    "window_seconds": limits["window"],
                }
            }
        path = home / "mission.json"
        path.write_text(json.dumps(mission, indent=1))
        command = [sys.executable, "-m", "orchestrator", "run", str(path), "--repo", str(repo)]
        children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(0)
        if pipes is not None:
            pipes.start_background()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*command, "--quiet"],
            cwd=home,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            output, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        wall = time.perf_counter() - start
        sampler.done.set()
        cpu_pd = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - _cpu(children)
        cpu_pd += sampler.forked_cpu
        cpu_bench = _cpu(resource.getrusage(0)) - _cpu(own)
        loaded = pipes.stop_background() if pipes is not None else []
        log = list(server.calls)
    events = []
    runs = home / ".pd" / "runs"
    if runs.is_dir() and (found := sorted(runs.iterdir())):
        lines = (found[-1] / "events.jsonl").read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
    result = RunResult(proc.returncode, output, wall, events, log, cpu_pd, cpu_bench, sampler)
    result.loaded = loaded
    if trace_dir.is_dir():
        for entry in log:
            if body := entry.pop("body", None):
                entry["task"], entry["n"] = task_of(body), len(body["messages"])
        for part in sorted(trace_dir.glob("*.jsonl")):
            result.trace += [json.loads(line) for line in part.read_text().splitlines()]
        for part in trace_dir.glob("steps-*.json"):
            result.steps.update(json.loads(part.read_text()))
    return result


def check_run(result: RunResult, tasks: int) -> bool:
    merged = sum(e["kind"] == "task_merged" for e in result.events)
    if result.code == 0 and merged == tasks:
        return True
    say(f"    !! pd run exited {result.code}, {merged}/{tasks} tasks merged; output tail:")
    for line in result.output.splitlines()[-15:]:
        say(f"       {line}")
    return False


# ---- limits ---------------------------------------------------------------------------


def per_call(log: list[dict[str, Any]]) -> dict[str, float]:
    """Mean sizes of an accepted call, as the server's buckets count them."""
    ok = [e for e in log if e["status"] == 200]
    prompts = [e["input_tokens"] + e["cache_read"] + e["cache_write"] for e in ok]
    return {
        "calls": len(ok),
        "input": statistics.mean(e["counted_input"] for e in ok),
        "output": statistics.mean(e["output_tokens"] for e in ok),
        "prompt_mean": statistics.mean(prompts),
        "prompt_max": max(prompts),
    }


def choose_limits(binding: str, sizes: dict[str, float]) -> dict[str, float]:
    """The binding bucket allows REQUESTS calls per window at the pilot's mean call size;
    the others LOOSE times that pace, plus room for calls in flight: until a call settles
    pd counts its prompt estimate (a third of the prompt's bytes, cached prefix included,
    where the server counts a quarter of the characters, cache reads excluded) and its
    ``max_tokens`` of output."""
    in_flight = 4
    estimate = math.ceil(sizes["prompt_max"] * 4 / 3 * 1.2)
    pace = {
        "requests": REQUESTS,
        "input_tokens": REQUESTS * sizes["input"],
        "output_tokens": REQUESTS * sizes["output"],
    }
    room = {"requests": 0, "input_tokens": in_flight * estimate, "output_tokens": 0}
    room["output_tokens"] = in_flight * MAX_TOKENS
    limits: dict[str, float] = {"window": WINDOW}
    for bucket in BUCKETS:
        loose = pace[bucket] * LOOSE + room[bucket]
        limits[bucket] = math.ceil(pace[bucket] if bucket == binding else loose)
    # A call larger than a whole window is refused by pd outright.
    limits["input_tokens"] = max(limits["input_tokens"], estimate)
    limits["output_tokens"] = max(limits["output_tokens"], MAX_TOKENS)
    return limits


# ---- figures ------------------------------------------------------------------------


def amount(entry: dict[str, Any], bucket: str) -> int:
    if bucket == "requests":
        return 1
    return entry["counted_input"] if bucket == "input_tokens" else entry["output_tokens"]


@dataclass
class Phases:
    """Times on the server's monotonic clock (every process shares it on Linux)."""

    first: float  # the first accepted request
    ready: float  # the last worker reported ready: from here all 16 are up
    start: float  # the first accepted request from ``ready`` on
    end: float  # the first worker found no task left
    offset: float  # wall clock minus monotonic


def phases(result: RunResult, accepted: list[dict[str, Any]]) -> Phases:
    offset = accepted[0]["arrived_wall"] - accepted[0]["arrived"]
    ready = [e["at"] - offset for e in result.events if e["kind"] == "worker_ready"]
    started = [e["at"] - offset for e in result.events if e["kind"] == "task_started"]
    handed = [e["at"] - offset for e in result.events if e["kind"] == "task_submitted"]
    all_up = max(ready, default=accepted[0]["arrived"])
    later = [t for t in handed if started and t > max(started)]
    end = min(later) if later else accepted[-1]["arrived"]
    start = next((e["arrived"] for e in accepted if e["arrived"] >= all_up), end)
    return Phases(accepted[0]["arrived"], all_up, start, end, offset)


def utilisation(
    accepted: list[dict[str, Any]], limits: dict[str, float], start: float, end: float
) -> tuple[float, dict[str, float]]:
    """Per bucket: what a sliding window (t - window, t] held, over the limit, averaged
    over every t (10 ms apart) whose window lies in [start, end]; with the span in windows.

    That is the accepted amount per window over the limit. It does not depend on where
    the period starts, though grants may come in bursts (unsmoothed: a window's worth at a
    time, as the first burst's slots free up again), and no client can get above 100 %."""
    arrivals = [e["arrived"] for e in accepted]
    steps = int((end - start - WINDOW) / 0.01) + 1
    if end - start < WINDOW:
        return (end - start) / WINDOW, {bucket: float("nan") for bucket in BUCKETS}
    used = {}
    for bucket in BUCKETS:
        running = [0]
        for e in accepted:
            running.append(running[-1] + amount(e, bucket))
        total = 0
        for i in range(steps):
            t = start + WINDOW + i * 0.01
            total += running[bisect.bisect_right(arrivals, t)]
            total -= running[bisect.bisect_right(arrivals, t - WINDOW)]
        used[bucket] = total / steps / limits[bucket]
    return (end - start) / WINDOW, used


def slot_lags(accepted: list[dict[str, Any]], limit: int, start: float, end: float) -> list[float]:
    """Request bucket: the i-th accepted request takes the slot the (i - limit)-th frees;
    its arrival minus that one's, minus the window, is how long the slot stood empty."""
    arrivals = [e["arrived"] for e in accepted]
    return [
        arrivals[i] - arrivals[i - limit] - WINDOW
        for i in range(limit, len(arrivals))
        if start + WINDOW <= arrivals[i] <= end
    ]


@dataclass
class Row:
    name: str
    value: str
    bar: str = ""
    baseline: str = ""
    ratio: str = ""
    mark: str = ""


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def analyse(
    result: RunResult, limits: dict[str, float], idle: list[float], binding: str, ok: bool
) -> list[Row]:
    log = result.log
    accepted = sorted((e for e in log if e["status"] == 200), key=lambda e: e["arrived"])
    if not accepted:
        say("    no accepted request: nothing to measure")
        return []
    p = phases(result, accepted)
    refused = [e for e in log if e["status"] == 429 and e["fault"] is None]
    other = [e for e in log if e["status"] not in (200, 429)]
    usage = [e for e in result.events if e["kind"] == "usage"]
    failed = [e for e in result.events if e["kind"] == "call_failed"]
    say(
        f"    run {result.wall:.1f} s, exit {result.code}; all {WORKERS} workers up "
        f"{p.ready - p.first:+.1f} s after the first request; saturated "
        f"part {p.end - p.start:.1f} s (all up, until the first worker finds no task left)"
    )
    say(
        f"    server log {len(log)} requests: {len(accepted)} accepted, {len(refused)} "
        f"refused with 429 because pd sent too much ({sum(e['arrived'] < p.ready for e in refused)}"
        f" before all workers were up), {len(other)} other; pd: {len(usage)} usage events, "
        f"{len(failed)} failed calls"
    )
    margin = default_margin(WINDOW)
    for e in refused:
        say(
            f"      429 at {e['arrived'] - p.first:+.2f} s, retry-after {e['retry_after']} s: "
            f"the server still counted a call pd no longer did, so that call was stamped "
            f"by the server about {ms(margin + e['retry_after'])} or more after the SDK's "
            f"request hook sent it (pd's margin allows {ms(margin)}; the server's own "
            f"admission lag counts too)"
        )
    peak = max_window_usage(log, WINDOW)
    k, used = utilisation(accepted, limits, p.start, p.end)
    _, from_first = utilisation(accepted, limits, p.first, p.end)
    title = f"utilisation, all up ({k:.1f} windows)"
    say(
        f"    {'bucket':<14} {'limit':>6} {'max window':>11} {'of limit':>9} {title:>36} "
        f"{'from the first request':>24}"
    )
    for bucket in BUCKETS:
        say(
            f"    {bucket:<14} {limits[bucket]:>6.0f} {peak[bucket]:>11,} "
            f"{peak[bucket] / limits[bucket]:>9.1%} {used[bucket]:>36.1%} "
            f"{from_first[bucket]:>24.1%}"
        )
    bound = binding
    top = max(BUCKETS, key=lambda b: used[b] if not math.isnan(used[b]) else -1.0)
    say(
        f"    binding: {bound} (the others allow {LOOSE:g}x its pace, plus room for calls "
        f"in flight); the most used over the run: {top}"
    )
    limit = int(limits["requests"])
    if bound == "requests" and (lags := slot_lags(accepted, limit, p.start, p.end)):
        mean = statistics.mean(lags)
        say(
            f"    a request slot freed at the server is taken again {ms(mean)} later on "
            f"average (p50 {ms(statistics.median(lags))}, p90 {ms(pct(lags, 0.9))}); pd "
            f"counts each grant {ms(margin)} (its margin) beyond the window; "
            f"window / (window + mean) = {WINDOW / (WINDOW + mean):.1%}"
        )
    received = [e["arrived"] - e["received"] for e in accepted if "received" in e]
    say(f"    server: admission stamped after handle() began: {spread(received)}")
    cores = os.cpu_count() or 1
    samples = result.sampler.busy if result.sampler else []
    busy = [b for t, b in samples if p.start <= t <= p.end]
    machine = sum(b for _, b in samples) / 100 * cores * 0.25  # CPU seconds, every process
    others = max(0.0, machine - result.cpu_pd - result.cpu_bench)
    say(
        f"    CPU: pd {result.cpu_pd:.1f} s (coordinator {result.sampler.coordinator:.1f} s), "
        f"this process (server) {result.cpu_bench:.1f} s, other processes on the machine "
        f"about {others:.1f} s; {machine / (cores * result.wall):.0%} of {cores} cores busy "
        f"over the run" + (f", {statistics.mean(busy):.0f}% while saturated" if busy else "")
    )
    if result.sampler and result.sampler.steal:  # a VM's host busy elsewhere: noisy figures
        say(f"    steal: the host ran other guests for {result.sampler.steal:.2f} s of CPU")
    rows = [Row("429s caused by pd", f"{len(refused)}", "= 0", mark=mark(not refused))]
    for bucket in BUCKETS:
        fits = peak[bucket] <= limits[bucket]
        rows.append(
            Row(
                f"max window: {bucket}",
                f"{peak[bucket]:,}",
                f"<= {limits[bucket]:,.0f}",
                mark=mark(fits),
            )
        )
    good = used[bound] >= BAR_UTILISATION
    rows.append(
        Row(
            f"utilisation ({bound})",
            f"{used[bound]:.1%}",
            f">= {BAR_UTILISATION:.0%}",
            mark=mark(good),
        )
    )
    rows += rtt_rows(result, p, usage, idle, accepted)
    if result.trace:
        trace_report(result, p, margin)
    if not ok:
        rows.append(Row("run completed", "no", "every task merged", mark="MISS"))
    return rows


def rtt_rows(
    result: RunResult,
    p: Phases,
    usage: list[dict[str, Any]],
    idle: list[float],
    accepted: list[dict[str, Any]],
) -> list[Row]:
    """Permit round trips against the bare Pipe: every call vs the idle Pipe; calls once
    every worker is up vs the Pipe pinged during the run at the moments calls were made
    (the load comes with the grants)."""
    calls = [
        (e["at"] - p.offset, e["permit_rtt"]) for e in usage if e.get("permit_rtt") is not None
    ]
    if not calls:
        say("    permit round trip: no usage event carries permit_rtt")
        return [Row("permit round trip p99", "n/a", f"< {ms(BAR_RTT_P99)}", mark="MISS")]
    every = [rtt for _, rtt in calls]
    up = [rtt for at, rtt in calls if at >= p.start]
    arrivals = [e["arrived"] for e in accepted]

    def near_a_call(at: float) -> bool:  # within 50 ms before to 10 ms after an arrival
        i = bisect.bisect_left(arrivals, at - 0.01)
        return i < len(arrivals) and arrivals[i] <= at + 0.05

    saturated = [(at, s) for at, s in result.loaded if p.start <= at <= p.end]
    near = [s for at, s in saturated if near_a_call(at)]
    say(f"    permit round trip, every call:       {spread(every)}")
    say(f"    permit round trip, all workers up:   {spread(up)}")
    say(f"    bare Pipe, idle before the run:      {spread(idle)}")
    say(f"    bare Pipe, saturated, every {ms(PING_EVERY)}: {spread([s for _, s in saturated])}")
    say(f"    bare Pipe, saturated, near calls:    {spread(near)}")
    rows = []
    pairs = [("", every, idle, "idle Pipe")]
    if up and near:
        pairs.append((", all up", up, near, "Pipe near calls"))
    for label, values, base, name in pairs:
        p50, p99 = statistics.median(values), pct(values, 0.99)
        b50, b99 = statistics.median(base), pct(base, 0.99)
        rows.append(
            Row(
                f"permit round trip p50{label}",
                ms(p50),
                "",
                f"{name} p50 {ms(b50)}",
                f"{p50 / b50:,.1f}x",
            )
        )
        rows.append(
            Row(
                f"permit round trip p99{label}",
                ms(p99),
                f"< {ms(BAR_RTT_P99)}",
                f"{name} p99 {ms(b99)}",
                f"{p99 / b99:,.1f}x",
                mark(p99 < BAR_RTT_P99),
            )
        )
    return rows


def trace_report(result: RunResult, p: Phases, margin: float) -> None:
    """Where a permit's time goes, and how late the server sees a granted call."""
    key: Callable[[dict[str, Any]], tuple] = lambda r: (r["w"], r["r"])  # noqa: E731
    acq = {key(r): r for r in result.trace if r["k"] == "acq"}
    asked = {key(r): r for r in result.trace if r["k"] == "ask"}
    granted = {key(r): r for r in result.trace if r["k"] == "grant"}
    gated = {key(r): r for r in result.trace if r["k"] == "gate" and r["w"]}
    arrivals: dict[tuple, list[float]] = {}
    for e in result.log:
        if e["status"] in (200, 429) and "task" in e:
            arrivals.setdefault((e["task"], e["n"]), []).append(e["arrived"])
    legs: dict[str, dict[bool, list[float]]] = {}

    def add(name: str, up: bool, value: float) -> None:
        legs.setdefault(name, {False: [], True: []})[up].append(value)

    for k, a in acq.items():
        if k not in asked or k not in granted:
            continue
        # ``grant``: when the call may start; the desk sends it up to GRANT_AHEAD sooner.
        ask, grant, sent = asked[k]["now"], granted[k]["now"], granted[k]["real"]
        up = grant >= p.ready
        add("worker sends -> coordinator takes the ask", up, ask - a["sent"])
        add("coordinator sends grant -> worker has it", up, a["got"] - sent)
        add("start -> worker has it (< 0: ahead)", up, a["got"] - grant)
        add("queued in the limiter (until start)", up, grant - ask)
        add("start -> worker sends the call", up, a["go"] - grant)
        if k in gated:
            add("worker sends -> the SDK's request hook", up, gated[k]["now"] - a["go"])
        seen = [t for t in arrivals.get((a["task"], a["n"]), []) if t >= grant]
        if seen:
            add("start -> server admits the request", up, min(seen) - grant)
            if k in gated:
                add("request hook -> server admits", up, min(seen) - gated[k]["now"])
    say(f"    trace (pd's margin covers start -> admission: {ms(margin)}):")
    for name, split in legs.items():
        say(f"      {name:<44} starting: {spread(split[False])}")
        say(f"      {'':<44} all up:   {spread(split[True])}")
    if result.steps:
        say("    coordinator loop (all up): step pieces, total and slowest")
        for name, samples in result.steps.items():
            values = [d for t, d in samples if p.start <= t <= p.end]
            if values:
                say(
                    f"      {name:<15} {len(values):>5} calls, {sum(values):6.3f} s, p99 "
                    f"{ms(pct(values, 0.99))}, max {ms(max(values))}"
                )


# ---- summary ------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    header = ("figure", "pd", "bar", "baseline (this run)", "pd/baseline", "")
    body = [(r.name, r.value, r.bar, r.baseline, r.ratio, r.mark) for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    say()
    say("summary (bars from issue 3; informational: the script never fails on them)")
    for line in [header, *body]:
        cells = [
            c.ljust(w) if i in (0, 3, 5) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        say("  " + "  ".join(cells).rstrip())


def limiter_cost(grants: int) -> tuple[float, float]:
    """Seconds per grant of ``RateLimiter.acquire`` + ``settle`` with 5,000 calls in the
    window, and with 10 (the baseline), on an injected clock: the ratio shows whether a
    full window makes a grant dearer (a scan of the log would make it ~500x dearer)."""
    from orchestrator.limits.bucket import BucketLimits
    from orchestrator.limits.ratelimit import Permit, RateLimiter

    def per_grant(in_window: int) -> float:
        window = 10.0
        limiter = RateLimiter({"p": BucketLimits(requests=in_window, window=window)})
        now, done = 0.0, 0
        began = time.perf_counter()
        while done < grants:
            result = limiter.acquire("p", 7, 3, now)
            if isinstance(result, Permit):
                limiter.settle(result.id, 5, 1, now)
                done += 1
                now += window / in_window / 2  # twice the pace the limit allows: saturated
            else:
                now = result
        return (time.perf_counter() - began) / grants

    return min(per_grant(5000) for _ in range(3)), min(per_grant(10) for _ in range(3))


class BusyLoad:
    """``--load``: two busy loops beside the run (``python -c "while 1: pass"``), as when
    other work shares the machine's cores."""

    def __init__(self, count: int) -> None:
        self.procs = [
            subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(count)
        ]

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks (~10 s saturated)")
    parser.add_argument("--tasks", type=int, help="number of tasks (default 96; 48 with --quick)")
    parser.add_argument(
        "--binding", choices=BUCKETS, default="requests", help="the bucket made to bind"
    )
    parser.add_argument(
        "--trace", action="store_true", help="time permit legs and coordinator loop steps"
    )
    parser.add_argument(
        "--load", action="store_true", help='two busy loops (python -c "while 1: pass") beside it'
    )
    args = parser.parse_args(argv)
    tasks = args.tasks or (48 if args.quick else 96)
    began = time.perf_counter()
    say(
        f"pd limits bench ({'quick' if args.quick else 'full'}); python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; permit waits: {permit_scheduling()}"
        + ("; with 2 busy loops beside it (--load)" if args.load else "")
    )
    full, few = limiter_cost(5_000 if args.quick else 20_000)
    say(
        f"limiter: {full * 1e6:.1f} us per grant with 5,000 calls in the window, "
        f"{few * 1e6:.1f} us with 10: ratio {full / few:.2f}"
    )
    load = BusyLoad(2) if args.load else None
    shim = {}
    if args.trace:
        shim["PD_BENCH_TRACE"] = "1"
    pipes = Pipes()
    rows: list[Row] = []
    try:
        idle = pipes.idle(300 if args.quick else 2000)
        with tempfile.TemporaryDirectory(prefix="pd-bench-limits-") as raw:
            tmp = Path(raw)
            say("[0] pilot: 2 tasks, 2 workers, no limits: what one call counts")
            pilot = pd_run(tmp, "pilot", plan_tasks(2), None, 2, {})
            if not check_run(pilot, 2):
                return 0
            sizes = per_call(pilot.log)
            say(
                f"    {sizes['calls']} calls in {pilot.wall:.1f} s: per call {sizes['input']:.0f} "
                f"input tokens counted, {sizes['output']:.0f} output; prompts "
                f"{sizes['prompt_mean']:.0f} tokens (max {sizes['prompt_max']}) with the cache"
            )
            limits = choose_limits(args.binding, sizes)
            writes = plan_tasks(tasks)
            say(
                f"[1] saturation: {tasks} tasks ({sum(writes.values()) + tasks} calls), "
                f"{WORKERS} workers; per {WINDOW:g} s window: {limits['requests']:.0f} "
                f"requests, {limits['input_tokens']:.0f} input tokens, "
                f"{limits['output_tokens']:.0f} output tokens"
            )
            result = pd_run(tmp, "main", writes, limits, WORKERS, shim, pipes)
            ok = check_run(result, tasks)
        rows = analyse(result, limits, idle, args.binding, ok)
    finally:
        pipes.close()
        if load is not None:
            load.close()
    print_table(rows)
    say(f"\ntotal {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
