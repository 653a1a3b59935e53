"""Rate limits under saturation: 16 pd workers against the local API server's buckets.

Run ``python bench/bench_limits.py [--quick]``. A real ``pd run`` (subprocess) of many
small tasks, 16 ``backend-dev`` workers, the ``anthropic`` provider (the real SDK)
pointed at a ``LocalAPIServer`` running in this process, which enforces request, input
and output token buckets over a sliding window of a few seconds (the same numbers as the
mission's ``rate_limits``). Printed, never asserted:

- 429s the server returned because pd sent too much (not injected faults);
- the most any sliding window held, per bucket, from the server's own log, vs the limit;
- utilisation of the binding limit while the run is saturated;
- the permit round trip (``permit_rtt`` of the ``usage`` events) vs a bare
  ``multiprocessing.Pipe`` round trip measured in the same run, idle and under load.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from orchestrator.apiserver import LocalAPIServer, Reply, max_window_usage
from orchestrator.messages import AcquireTokens, CallDone, Grant, Message
from orchestrator.metered import MeteredProvider, PermitClient
from orchestrator.providers.base import ModelRequest, ModelResponse, Usage
from orchestrator.ratelimit import default_margin

START_METHOD = "spawn"
MODEL = "claude-haiku-4-5"
WORKERS = 16
WINDOW = 3.0  # seconds: "per minute" limits scaled to a window of a few seconds
REQUESTS = 40  # per window: the request limit, or the pace the binding token bucket sets
LOOSE = 1.5  # non-binding buckets allow this much more than the binding pace needs
MAX_TOKENS = 256  # what pd reserves of the output bucket per call, until the call settles
BUCKETS = ("requests", "input_tokens", "output_tokens")
BARS = {"utilisation": 0.95, "rtt_p99": 0.002}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}
# Put on PYTHONPATH of the pd run when pd does not fill CallDone.permit_rtt itself:
# every process of the run (coordinator, spawned workers) imports it at start-up and
# hands the round trip PermitClient already measured (last_rtt) to the "ok" CallDone.
SHIM = '''\
"""bench_limits: carry PermitClient.last_rtt in CallDone.permit_rtt (pd leaves it None)."""
try:
    from orchestrator import metered as _metered
except Exception:  # not pd's interpreter: nothing to do
    _metered = None
if _metered is not None:
    _done = _metered.PermitClient.done

    def _done_with_rtt(self, request_id, permit_id, status, **details):
        if status == "ok" and details.get("permit_rtt") is None:
            details["permit_rtt"] = self.last_rtt
        return _done(self, request_id, permit_id, status, **details)

    _metered.PermitClient.done = _done_with_rtt
'''


def say(text: str = "") -> None:
    print(text, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:,.0f} us"


def run_git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(cwd), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


# ---- the workload: tasks that write a few files, then finish -------------------------


def plan_tasks(count: int) -> dict[str, int]:
    """Task id -> number of write_file turns before ``finish`` (2 to 6, mean 4). Mixed
    lengths keep the 16 workers from finishing in lockstep waves."""
    return {f"t{i:03d}": 2 + (i * 3) % 5 for i in range(count)}


def output_tokens(task: str, turn: int) -> int:
    """What the server bills for one reply: 80..160 tokens, deterministic."""
    return 80 + (sum(map(ord, task)) * 7 + turn * 13) % 81


class Script:
    """The server's reply callable: reads the task from the prompt pd wrote."""

    def __init__(self, writes: dict[str, int]) -> None:
        self.writes = writes

    def __call__(self, api: str, body: dict[str, Any]) -> Reply:
        task = task_of(body)
        done = sum(1 for m in body["messages"] if m["role"] == "assistant")
        out = output_tokens(task, done)
        if done < self.writes.get(task, 1):
            content = f"{task} turn {done}\n"
            call = ("write_file", {"path": f"{task}/f{done}.txt", "content": content})
            return Reply(tool_calls=[call], output_tokens=out)
        return Reply(tool_calls=[("finish", {"summary": f"{task} written"})], output_tokens=out)


def task_of(body: dict[str, Any]) -> str:
    """The task id, from the "# Task <id>:" line pd puts in the first user message."""
    for message in body["messages"]:
        content = message["content"]
        text = content if isinstance(content, str) else json.dumps(content)
        if found := re.search(r"# Task (\S+):", text):
            return found.group(1)
    raise ValueError("no task in the prompt")


# ---- pd's own permit round trip figure -----------------------------------------------


def pd_reports_permit_rtt() -> bool:
    """Does a successful call's CallDone carry ``permit_rtt``? (One metered call in this
    process against a coordinator stub that grants at once.)"""
    sent: list[Message] = []

    def send(message: Message) -> None:
        sent.append(message)
        if isinstance(message, AcquireTokens):
            client.deliver(Grant(request_id=message.request_id, permit_id=1, queued=0.0))

    class Inner:
        name = "anthropic"

        def complete(self, request: ModelRequest) -> ModelResponse:
            return ModelResponse(text="ok", tool_calls=[], stop_reason="end_turn", usage=Usage(1, 1))

    client = PermitClient("w1", send)
    provider = MeteredProvider(Inner(), client, lambda request: (1, 1))  # type: ignore[arg-type]
    provider.complete(ModelRequest("", [{"role": "user", "content": "x"}], [], 8, MODEL, "t", 1))
    done = [m for m in sent if isinstance(m, CallDone)]
    return bool(done) and done[-1].permit_rtt is not None


# ---- bare Pipe round trips, idle and while pd runs -----------------------------------


def _echo(conn: Connection) -> None:
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        if not data:
            return
        conn.send_bytes(data)


def _payload() -> bytes:
    """An AcquireTokens-sized message, as a worker sends for every call."""
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


def _ping(conn: Connection, trips: int, interval: float, stop: Any = None) -> list[float]:
    payload, times = _payload(), []
    for i in range(trips + 20):
        if stop is not None and stop.is_set():
            break
        start = time.perf_counter()
        conn.send_bytes(payload)
        conn.recv_bytes()
        if i >= 20:  # the first trips pay for start-up
            times.append(time.perf_counter() - start)
        if interval:
            time.sleep(interval)
    return times


def _pinger(conn: Connection, out: Connection, stop: Any, interval: float) -> None:
    """A process of its own, so its pings do not take the server's GIL."""
    out.send(_ping(conn, 10**9, interval, stop))
    conn.send_bytes(b"")


class Pipes:
    """An echo process and, optionally, a pinger process that samples all along."""

    def __init__(self) -> None:
        self.ctx = mp.get_context(START_METHOD)
        self.near, far = self.ctx.Pipe(duplex=True)
        self.echo = self.ctx.Process(target=_echo, args=(far,), daemon=True)
        self.echo.start()
        far.close()
        self.pinger: Any = None

    def idle(self, trips: int) -> list[float]:
        return _ping(self.near, trips, 0.0)

    def start_background(self, interval: float = 0.005) -> None:
        self.results, sink = self.ctx.Pipe(duplex=False)
        self.stop = self.ctx.Event()
        self.pinger = self.ctx.Process(
            target=_pinger, args=(self.near, sink, self.stop, interval), daemon=True
        )
        self.pinger.start()
        sink.close()

    def stop_background(self) -> list[float]:
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


@dataclass
class RunResult:
    code: int
    output: str
    wall: float
    events: list[dict[str, Any]]
    log: list[dict[str, Any]]
    cpu_pd: float = 0.0  # every process of the pd run, git included
    cpu_server: float = 0.0  # this process: the server's threads
    cpu_coordinator: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class CpuSampler(threading.Thread):
    """Samples the coordinator's CPU time (it exits with the run, so keep the last)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.last, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        try:
            proc = psutil.Process(self.pid)
            while not self.done.wait(0.25):
                times = proc.cpu_times()
                self.last = times.user + times.system
        except psutil.Error:
            return


def pd_run(
    tmp: Path,
    name: str,
    writes: dict[str, int],
    limits: dict[str, float] | None,
    workers: int,
    shim: bool,
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
    if shim:
        (tmp / "shim").mkdir(exist_ok=True)
        (tmp / "shim" / "sitecustomize.py").write_text(SHIM)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp / "shim"), env.get("PYTHONPATH")]))
    server = LocalAPIServer(Script(writes), limits=limits, keep_bodies=False)
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
        before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        before_self = resource.getrusage(resource.RUSAGE_SELF)
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
        sampler = CpuSampler(proc.pid)
        sampler.start()
        try:
            output, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        wall = time.perf_counter() - start
        sampler.done.set()
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        after_self = resource.getrusage(resource.RUSAGE_SELF)
        loaded = pipes.stop_background() if pipes is not None else []
        log = list(server.requests)
    runs = sorted((home / ".pd" / "runs").iterdir()) if (home / ".pd" / "runs").is_dir() else []
    events = []
    if runs:
        lines = (runs[-1] / "events.jsonl").read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
    result = RunResult(proc.returncode, output, wall, events, log)
    result.cpu_pd = (after_children.ru_utime + after_children.ru_stime) - (
        before_children.ru_utime + before_children.ru_stime
    )
    result.cpu_server = (after_self.ru_utime + after_self.ru_stime) - (
        before_self.ru_utime + before_self.ru_stime
    )
    result.cpu_coordinator = sampler.last
    result.extra["loaded_pipe"] = loaded
    return result


def check_run(result: RunResult, tasks: int) -> bool:
    merged = sum(e["kind"] == "task_merged" for e in result.events)
    if result.code == 0 and merged == tasks:
        return True
    say(f"    !! pd run exited {result.code}, {merged}/{tasks} tasks merged; output tail:")
    for line in result.output.splitlines()[-15:]:
        say(f"       {line}")
    return False


# ---- figures ------------------------------------------------------------------------


def per_call(log: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and max of what one accepted call counts in each bucket."""
    ok = [e for e in log if e["status"] == 200]
    inputs = [e["counted_input"] for e in ok]
    outputs = [e["output_tokens"] for e in ok]
    totals = [e["input_tokens"] + e["cache_read"] + e["cache_write"] for e in ok]
    return {
        "calls": len(ok),
        "input": statistics.mean(inputs),
        "output": statistics.mean(outputs),
        "prompt_max": max(totals),
        "prompt_mean": statistics.mean(totals),
    }


def choose_limits(binding: str, sizes: dict[str, float]) -> dict[str, float]:
    """The binding bucket allows REQUESTS calls per window at the measured mean size;
    the others LOOSE times that. Token limits also leave room for the reservations of
    calls in flight: pd reserves its prompt estimate (about a third of the prompt's bytes,
    cached prefix included) and ``max_tokens`` until the call settles."""
    in_flight = 4  # calls granted and not yet settled, when the window is full
    reserve_in = math.ceil(sizes["prompt_max"] * 4 / 3 * 1.1)  # bytes/3 vs the server's chars/4
    pace = {
        "requests": REQUESTS,
        "input_tokens": REQUESTS * sizes["input"],
        "output_tokens": REQUESTS * sizes["output"],
    }
    headroom = {"requests": 0, "input_tokens": in_flight * reserve_in, "output_tokens": 0}
    headroom["output_tokens"] = in_flight * MAX_TOKENS
    limits: dict[str, float] = {"window": WINDOW}
    for bucket in BUCKETS:
        if bucket == binding:
            limits[bucket] = math.ceil(pace[bucket])
        else:
            limits[bucket] = math.ceil(pace[bucket] * LOOSE + headroom[bucket])
    # Every single call must fit a whole window, or pd refuses it outright.
    limits["input_tokens"] = max(limits["input_tokens"], reserve_in)
    limits["output_tokens"] = max(limits["output_tokens"], MAX_TOKENS)
    return limits


def amount(entry: dict[str, Any], bucket: str) -> int:
    if bucket == "requests":
        return 1
    return entry["counted_input"] if bucket == "input_tokens" else entry["output_tokens"]


def saturated_period(result: RunResult, accepted: list[dict[str, Any]]) -> tuple[float, float]:
    """(start, end) in the server's monotonic clock: from the first accepted request until
    the first worker runs out of tasks (the first task handed in after the last start)."""
    start = accepted[0]["arrived"]
    offset = accepted[0]["arrived_wall"] - accepted[0]["arrived"]
    started = [e["at"] for e in result.events if e["kind"] == "task_started"]
    submitted = [e["at"] for e in result.events if e["kind"] == "task_submitted"]
    later = [t for t in submitted if started and t > max(started)]
    end = (min(later) - offset) if later else accepted[-1]["arrived"]
    return start, end


def utilisation(
    accepted: list[dict[str, Any]], limits: dict[str, float], start: float, end: float
) -> tuple[int, dict[str, float], dict[str, float]]:
    """Over k whole windows [start, start + k * window): used / (limit * k), per bucket.

    Each of those windows lies inside one of the server's sliding windows, so 100 % is
    the most any client can get; the first window is the initial burst, so the figure
    without it ("steady") is printed too."""
    k = int((end - start) // WINDOW)
    whole, steady = {}, {}
    for bucket in BUCKETS:
        used = [amount(e, bucket) for e in accepted if start <= e["arrived"] < start + k * WINDOW]
        later = [
            amount(e, bucket)
            for e in accepted
            if start + WINDOW <= e["arrived"] < start + k * WINDOW
        ]
        whole[bucket] = sum(used) / (limits[bucket] * k) if k else float("nan")
        steady[bucket] = sum(later) / (limits[bucket] * (k - 1)) if k > 1 else float("nan")
    return k, whole, steady


def slot_lags(accepted: list[dict[str, Any]], start: float, end: float) -> list[float]:
    """Request bucket: the i-th accepted request takes the slot the (i - limit)-th frees;
    its arrival minus that one's, minus the window, is how long the slot stood empty."""
    arrivals = [e["arrived"] for e in accepted]
    n = REQUESTS
    return [
        arrivals[i] - arrivals[i - n] - WINDOW
        for i in range(n, len(arrivals))
        if start + WINDOW <= arrivals[i] <= end
    ]


# ---- summary ------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    value: str
    bar: str
    baseline: str = ""
    ratio: str = ""
    mark: str = ""


def print_table(rows: list[Row]) -> None:
    header = ("figure", "pd", "bar", "baseline (this run)", "pd/baseline", "")
    body = [(r.name, r.value, r.bar, r.baseline, r.ratio, r.mark) for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    say()
    say("summary (bars from issue 3; informational, the script never fails on them)")
    for line in [header, *body]:
        cells = [
            c.ljust(w) if i in (0, 3, 5) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        say("  " + "  ".join(cells).rstrip())


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks (a ~10 s run)")
    parser.add_argument(
        "--binding",
        choices=BUCKETS,
        default="requests",
        help="which bucket the limits make binding (default: requests)",
    )
    parser.add_argument("--tasks", type=int, help="number of tasks (default 30, full 60)")
    args = parser.parse_args(argv)
    tasks = args.tasks or (30 if args.quick else 60)
    began = time.perf_counter()
    say(
        f"pd limits bench ({'quick' if args.quick else 'full'}); python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    reports = pd_reports_permit_rtt()
    if not reports:
        say(
            "note: pd leaves CallDone.permit_rtt unset (orchestrator/metered.py: "
            "MeteredProvider.complete never passes PermitClient.last_rtt), so every usage "
            "event has permit_rtt null; this run adds it with a sitecustomize shim"
        )
    pipes = Pipes()
    rows: list[Row] = []
    try:
        idle = pipes.idle(300 if args.quick else 2000)
        with tempfile.TemporaryDirectory(prefix="pd-bench-limits-") as raw:
            tmp = Path(raw)
            say("[0] pilot: 2 tasks, 2 workers, no limits (per-call token sizes)")
            pilot = pd_run(tmp, "pilot", plan_tasks(2), None, 2, shim=False)
            if not check_run(pilot, 2):
                return 0
            sizes = per_call(pilot.log)
            say(
                f"    {sizes['calls']} calls: counted input {sizes['input']:.0f} tokens, "
                f"output {sizes['output']:.0f}, whole prompt {sizes['prompt_mean']:.0f} "
                f"(max {sizes['prompt_max']}) per call; {pilot.wall:.1f} s"
            )
            limits = choose_limits(args.binding, sizes)
            writes = plan_tasks(tasks)
            calls = sum(writes.values()) + len(writes)
            say(
                f"[1] saturation: {tasks} tasks ({calls} calls), {WORKERS} workers; limits per "
                f"{WINDOW:g} s window: {limits['requests']:.0f} requests, "
                f"{limits['input_tokens']:.0f} input, {limits['output_tokens']:.0f} output "
                f"tokens ({args.binding} meant to bind); margin {default_margin(WINDOW):.3f} s"
            )
            result = pd_run(
                tmp, "main", writes, limits, WORKERS, shim=not reports, pipes=pipes
            )
            ok = check_run(result, tasks)
        rows = analyse(result, limits, idle, args.binding, ok)
    finally:
        pipes.close()
    print_table(rows)
    say(f"\ntotal {time.perf_counter() - began:.1f} s")
    return 0


def analyse(
    result: RunResult, limits: dict[str, float], idle: list[float], binding: str, ok: bool
) -> list[Row]:
    log = result.log
    accepted = sorted((e for e in log if e["status"] == 200), key=lambda e: e["arrived"])
    refused = [e for e in log if e["status"] == 429 and e["fault"] is None]
    other = [e for e in log if e["status"] not in (200, 429)]
    usage = [e for e in result.events if e["kind"] == "usage"]
    retries = [e for e in result.events if e["kind"] == "call_failed"]
    say(
        f"    run: {result.wall:.1f} s, exit {result.code}; server log {len(log)} requests: "
        f"{len(accepted)} accepted, {len(refused)} refused (429, pd sent too much), "
        f"{len(other)} other; {len(usage)} usage events, {len(retries)} failed calls"
    )
    if not accepted:
        return []
    peak = max_window_usage(log, WINDOW)
    start, end = saturated_period(result, accepted)
    k, whole, steady = utilisation(accepted, limits, start, end)
    say(
        f"    saturated: {end - start:.1f} s from the first accepted request to the first "
        f"worker out of tasks; {k} whole windows of {WINDOW:g} s"
    )
    say("    bucket          limit   max window  of limit   utilisation   steady (w/o 1st)")
    for bucket in BUCKETS:
        say(
            f"    {bucket:<14} {limits[bucket]:>6.0f} {peak[bucket]:>12,} "
            f"{peak[bucket] / limits[bucket]:>9.1%} {whole[bucket]:>13.1%} "
            f"{steady[bucket]:>18.1%}"
        )
    bound = max(BUCKETS, key=lambda b: whole[b])
    say(f"    binding bucket: {bound} (meant: {binding})")
    if bound == "requests":
        lags = slot_lags(accepted, start, end)
        if lags:
            mean = statistics.mean(lags)
            margin = default_margin(WINDOW)
            say(
                f"    request slot turnover: a freed slot is taken {ms(statistics.median(lags))}"
                f" later (median; p90 {ms(pct(lags, 0.9))}, mean {ms(mean)}); pd's margin is "
                f"{ms(margin)}; window/(window + mean) = {WINDOW / (WINDOW + mean):.1%}"
            )
    cpu_total = result.cpu_pd + result.cpu_server
    cores = os.cpu_count() or 1
    say(
        f"    CPU: pd {result.cpu_pd:.1f} s (coordinator {result.cpu_coordinator:.1f} s), "
        f"server {result.cpu_server:.1f} s; {cpu_total / (cores * result.wall):.0%} of "
        f"{cores} cores over the run"
    )
    rtts = [e["permit_rtt"] for e in usage if e.get("permit_rtt") is not None]
    loaded = result.extra.get("loaded_pipe") or []
    base50, base99 = statistics.median(idle), pct(idle, 0.99)
    say(
        f"    bare Pipe round trip: idle p50 {ms(base50)}, p99 {ms(base99)} "
        f"({len(idle)} trips)"
        + (
            f"; during the run p50 {ms(statistics.median(loaded))}, p99 "
            f"{ms(pct(loaded, 0.99))} ({len(loaded)} trips, every 5 ms)"
            if loaded
            else ""
        )
    )
    rows = [
        Row("429s caused by pd", f"{len(refused)}", "= 0", mark=mark(not refused)),
    ]
    for bucket in BUCKETS:
        rows.append(
            Row(
                f"max window: {bucket}",
                f"{peak[bucket]:,}",
                f"<= {limits[bucket]:,.0f}",
                mark=mark(peak[bucket] <= limits[bucket]),
            )
        )
    rows.append(
        Row(
            f"utilisation ({bound})",
            f"{whole[bound]:.1%}",
            f">= {BARS['utilisation']:.0%}",
            mark=mark(whole[bound] >= BARS["utilisation"]),
        )
    )
    if rtts:
        say(
            f"    permit round trip: p50 {ms(statistics.median(rtts))}, p90 "
            f"{ms(pct(rtts, 0.9))}, p99 {ms(pct(rtts, 0.99))}, max {ms(max(rtts))} "
            f"({len(rtts)} calls)"
        )
        p50, p99 = statistics.median(rtts), pct(rtts, 0.99)
        rows.append(
            Row("permit round trip p50", ms(p50), "", f"idle Pipe p50 {ms(base50)}",
                f"{p50 / base50:.3g}x")
        )
        rows.append(
            Row(
                "permit round trip p99",
                ms(p99),
                f"< {ms(BARS['rtt_p99'])}",
                f"idle Pipe p99 {ms(base99)}",
                f"{p99 / base99:.3g}x",
                mark(p99 < BARS["rtt_p99"]),
            )
        )
        if loaded:
            l99 = pct(loaded, 0.99)
            rows.append(
                Row(
                    "permit round trip p99",
                    ms(p99),
                    "",
                    f"loaded Pipe p99 {ms(l99)}",
                    f"{p99 / l99:.3g}x",
                )
            )
    else:
        say("    permit round trip: no usage event carries permit_rtt")
        rows.append(Row("permit round trip p99", "n/a", f"< {ms(BARS['rtt_p99'])}", mark="MISS"))
    if not ok:
        rows.append(Row("run completed", "no", "every task merged", mark="MISS"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
