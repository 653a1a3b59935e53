"""Sliding-window rate limits as the local API server enforces and reports them.

A request counts in full at its arrival time (requests, input and output tokens), and
stays counted for ``window`` seconds: a new request is admitted only if every bucket,
with it added, stays within its limit over ``(now - window, now]``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.errors import BadInput

BUCKETS = ("requests", "input_tokens", "output_tokens")
# Buckets not configured still hold (and are reported, as the real APIs always report
# theirs): a high tier's limits per minute.
DEFAULT_LIMITS = {"requests": 4_000, "input_tokens": 2_000_000, "output_tokens": 400_000}


class SlidingWindows:
    """Request, input and output buckets over one window; not thread-safe (caller locks).
    A bucket not given in ``limits`` gets its ``DEFAULT_LIMITS`` value."""

    def __init__(self, limits: Mapping[str, float] | None) -> None:
        limits = dict(limits or {})
        self.window = float(limits.pop("window", 60.0))
        if unknown := set(limits) - set(BUCKETS):
            known = ", ".join([*BUCKETS, "window"])
            raise BadInput("limits", f"unknown limits {sorted(unknown)}", f"use {known}")
        if self.window <= 0:
            raise BadInput("limits", "window must be > 0 seconds", "give a positive window")
        self.limits: dict[str, int] = dict(DEFAULT_LIMITS)
        self.limits |= {k: int(v) for k, v in limits.items() if v is not None}
        self._entries: deque[tuple[float, int, int]] = deque()
        self._used = {"requests": 0, "input_tokens": 0, "output_tokens": 0}

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        while self._entries and self._entries[0][0] <= cutoff:
            _, inp, out = self._entries.popleft()
            self._used["requests"] -= 1
            self._used["input_tokens"] -= inp
            self._used["output_tokens"] -= out

    def admit(
        self, now: float, input_tokens: int, output_tokens: int
    ) -> tuple[float, list[str]] | None:
        """Record the request and return None, or refuse it: (seconds until it would fit,
        the buckets it would overflow)."""
        self._expire(now)
        ask = {"requests": 1, "input_tokens": input_tokens, "output_tokens": output_tokens}
        over = {k for k, limit in self.limits.items() if self._used[k] + ask[k] > limit}
        if not over:
            self._entries.append((now, input_tokens, output_tokens))
            for k, v in ask.items():
                self._used[k] += v
            return None
        return self._wait(now, ask, over), sorted(over)

    def _wait(self, now: float, ask: dict[str, int], over: set[str]) -> float:
        """Seconds until enough old entries expire; a whole window if it can never fit."""
        if any(ask[k] > self.limits[k] for k in over):
            return self.window
        used = dict(self._used)
        for arrived, inp, out in self._entries:
            used["requests"] -= 1
            used["input_tokens"] -= inp
            used["output_tokens"] -= out
            if all(used[k] + ask[k] <= self.limits[k] for k in over):
                return max(0.001, arrived + self.window - now)
        return self.window

    def state(self, now: float) -> dict[str, tuple[int, int, float]]:
        """Per configured bucket: (limit, remaining, seconds until fully replenished)."""
        self._expire(now)
        full = self._entries[-1][0] + self.window - now if self._entries else 0.0
        return {
            k: (limit, max(0, limit - self._used[k]), max(0.0, full))
            for k, limit in self.limits.items()
        }


NOT_CALLS = ("/v1/models", "/v1/messages/count_tokens")  # answered outside the windows


def max_window_usage(requests: Iterable[Mapping[str, Any]], window: float) -> dict[str, int]:
    """The most requests/input/output any window ``(t - window, t]`` held, over accepted
    model calls of a server log (``status == 200``); input is what the limits count."""
    log = sorted(
        (r["arrived"], r.get("counted_input", 0), r.get("output_tokens", 0))
        for r in requests
        if r.get("status") == 200 and r.get("path") not in NOT_CALLS
    )
    best = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    start, inp, out = 0, 0, 0
    for end, (t, i, o) in enumerate(log):
        inp, out = inp + i, out + o
        while log[start][0] <= t - window:
            inp, out = inp - log[start][1], out - log[start][2]
            start += 1
        best["requests"] = max(best["requests"], end - start + 1)
        best["input_tokens"] = max(best["input_tokens"], inp)
        best["output_tokens"] = max(best["output_tokens"], out)
    return best


def go_duration(seconds: float) -> str:
    """OpenAI's reset format (Go durations): ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h0m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text
