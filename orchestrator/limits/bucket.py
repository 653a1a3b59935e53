"""One rate-limit bucket: its limits, and the log of grants it counts over its window.

Apart from ``ratelimit.py``, which decides grants across a key's buckets and tracks
permits, because this is the data structure those decisions stand on.

Grants expire in log order: an entry's expiry is the latest of its own and every earlier
entry's (``Bucket.expiries`` holds that running maximum; a call not yet sent holds up
the entries behind it for the few milliseconds until its send is known). That keeps
finding when enough has expired one prefix-sum search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.errors import PdError
from orchestrator.providers.base import Usage

DIMENSIONS = ("requests", "input_tokens", "output_tokens")
_COMPACT_AT = 4096  # drop expired log entries once this many pile up
# Smoothing spaces grants a little closer than the window allows on average, so that it
# only spreads bursts and never lowers the rate a saturated bucket sustains.
SMOOTH_SHARE = 0.9


class NeverFits(PdError):
    """A call needs more than a whole window of a bucket allows: waiting cannot help, so
    the permit desk denies it at once with this message."""


@dataclass(frozen=True)
class BucketLimits:
    """What one bucket allows per sliding ``window`` seconds; None means unlimited.

    ``count_cache_reads``: whether cache-read tokens count toward the input limit when a
    permit is settled from a ``Usage``. Anthropic counts input plus cache writes only;
    OpenAI counts every prompt token.

    ``smooth``: space grants at least ``SMOOTH_SHARE * window / requests`` apart, so calls
    go out at the limit's pace instead of in bursts whenever a window's worth of slots
    frees at once. Providers that refill continuously (a 60-per-minute limit enforced as
    one a second) expect that pace, and a burst of workers waking at the same instant
    slows every one of them down on a small machine.
    """

    requests: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    window: float = 60.0
    count_cache_reads: bool = False
    smooth: bool = False

    def __post_init__(self) -> None:
        for name in DIMENSIONS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"rate limit {name} must be a whole number >= 0, not {value!r}")
        if not self.window > 0:
            raise ValueError(f"rate limit window must be > 0 seconds, not {self.window!r}")

    def limit(self, dim: int) -> int | None:
        return (self.requests, self.input_tokens, self.output_tokens)[dim]

    def counted_input(self, usage: Usage) -> int:
        """The input tokens this provider counts against its input limit."""
        reads = usage.cache_read_tokens if self.count_cache_reads else 0
        return usage.input_tokens + usage.cache_write_tokens + reads


def default_margin(window: float) -> float:
    """How much longer than the window a grant counts: covers the delay from the SDK's
    request hook (the send time the limiter is told) to the provider's arrival stamp."""
    return 0.02 * window + 0.05


class _Fenwick:
    """Prefix sums with point updates, so a refused acquire finds its wait in O(log n)."""

    __slots__ = ("tree",)

    def __init__(self, values: list[int] | None = None) -> None:
        self.tree = [0]
        for value in values or []:
            self.append(value)

    def append(self, value: int) -> None:
        i = len(self.tree)
        self.tree.append(value + self.prefix(i - 1) - self.prefix(i - (i & -i)))

    def add(self, index: int, delta: int) -> None:
        i, n = index + 1, len(self.tree)
        while i < n:
            self.tree[i] += delta
            i += i & -i

    def prefix(self, count: int) -> int:
        """Sum of the first ``count`` values."""
        total = 0
        while count > 0:
            total += self.tree[count]
            count -= count & -count
        return total

    def search(self, target: int) -> int:
        """Index of the first value at which the running sum reaches ``target`` (> 0)."""
        tree, pos, rest = self.tree, 0, target
        n = len(tree) - 1
        step = 1 << (n.bit_length() - 1) if n else 0
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] < rest:
                pos, rest = nxt, rest - tree[nxt]
            step >>= 1
        return pos


class Bucket:
    """One configured bucket: a log of grants in grant order, and calibration holds."""

    def __init__(self, name: str, limits: BucketLimits, margin: float) -> None:
        self.name = name
        self.limits = limits
        self.span = limits.window + margin  # how long a grant counts
        self.base = 0  # global index of expiries[0]; grows as the log is compacted
        self.head = 0  # first entry that has not expired
        self.sends: list[float] = []  # each entry's own expiry (inf: not sent yet)
        self.expiries: list[float] = []  # running maximum of ``sends``: non-decreasing
        self.values: tuple[list[int], ...] = ([], [], [])
        self.trees = [_Fenwick(), _Fenwick(), _Fenwick()]
        self.total = [0, 0, 0]
        self.expired = [0, 0, 0]  # sum of values[d][:head]
        self.holds = [(0, -math.inf)] * 3  # (amount, until) the provider says is used
        smooth = limits.smooth and limits.requests
        self.gap = SMOOTH_SHARE * limits.window / limits.requests if smooth else 0.0
        self.last_grant = -math.inf

    def expire(self, now: float) -> None:
        expiries, head = self.expiries, self.head
        while head < len(expiries) and expiries[head] <= now:
            for d in range(3):
                self.expired[d] += self.values[d][head]
            head += 1
        self.head = head
        if head >= _COMPACT_AT and 2 * head >= len(expiries):
            del expiries[:head]
            del self.sends[:head]
            for d in range(3):
                del self.values[d][:head]
                self.trees[d] = _Fenwick(self.values[d])
                self.total[d] -= self.expired[d]
                self.expired[d] = 0
            self.base += head
            self.head = 0

    def used(self, dim: int) -> int:
        return self.total[dim] - self.expired[dim]

    def held(self, dim: int, now: float) -> int:
        amount, until = self.holds[dim]
        return amount if until > now else 0

    def add(self, now: float, amounts: tuple[int, int, int], until_sent: bool) -> int:
        """Log a grant; it counts a window (and margin) from ``now``, or, ``until_sent``,
        until ``close`` says when it was sent."""
        self.last_grant = now
        expiry = math.inf if until_sent else now + self.span
        self.sends.append(expiry)
        self.expiries.append(max(expiry, self.expiries[-1]) if self.expiries else expiry)
        for d, amount in enumerate(amounts):
            self.values[d].append(amount)
            self.trees[d].append(amount)
            self.total[d] += amount
        return self.base + len(self.expiries) - 1

    def close(self, entry: int, expiry: float, later_only: bool = False) -> None:
        """The entry's call was sent (or never will be): it expires at ``expiry``, or
        when the entries before it do, and the entries after it may expire in turn.
        ``later_only``: never earlier than it was to expire already."""
        k = entry - self.base
        if k < 0:
            return
        if later_only:
            expiry = max(expiry, self.sends[k])
        sends, expiries = self.sends, self.expiries
        sends[k] = expiry
        latest = expiries[k - 1] if k > 0 else -math.inf
        for j in range(k, len(sends)):
            latest = max(latest, sends[j])
            if j > k and expiries[j] == latest:
                break
            expiries[j] = latest

    def set(self, entry: int, amounts: tuple[int, int, int]) -> None:
        k = entry - self.base
        if k < 0:
            return  # compacted away long after it expired: it no longer counts
        for d, value in enumerate(amounts):
            delta = value - self.values[d][k]
            self.values[d][k] = value
            self.trees[d].add(k, delta)
            self.total[d] += delta
            if k < self.head:
                self.expired[d] += delta

    def check_size(self, need: tuple[int, int, int]) -> None:
        for d, amount in enumerate(need):
            limit = self.limits.limit(d)
            if limit is not None and amount > limit:
                what = DIMENSIONS[d].replace("_", " ")
                raise NeverFits(
                    f"a call needing {amount} {what} can never fit rate limit {self.name!r} "
                    f"({limit} per {self.limits.window:g}s); lower max_tokens or shorten the "
                    f"prompt, or raise the limit"
                )

    def ready_at(self, need: tuple[int, int, int], now: float) -> float:
        """Earliest time at which ``need`` fits, if nothing else is granted meanwhile."""
        self.expire(now)
        ready = max(now, self.last_grant + self.gap)
        for d, amount in enumerate(need):
            limit = self.limits.limit(d)
            if limit is None:
                continue
            used, held = self.used(d), self.held(d, now)
            if used + held + amount <= limit:
                continue
            # Either enough of the log expires while the hold lasts, or the hold ends
            # and enough of the log has expired by then; whichever comes first.
            excess = used + held + amount - limit
            best = self._freed_at(d, excess) if excess <= used else math.inf
            if held:
                rest = used + amount - limit
                after = self._freed_at(d, rest) if rest > 0 else now
                best = min(best, max(self.holds[d][1], after))
            ready = max(ready, best)
        return ready

    def _freed_at(self, dim: int, excess: int) -> float:
        """When enough has expired; inf while a call it waits for has not been sent."""
        return self.expiries[self.trees[dim].search(self.expired[dim] + excess)]

    def tighten(self, dim: int, remaining: int, until: float, now: float) -> None:
        limit = self.limits.limit(dim)
        if limit is None or until <= now:
            return
        self.expire(now)
        unseen = min(limit, limit - max(0, remaining) - self.used(dim))
        if unseen > self.held(dim, now):
            self.holds[dim] = (unseen, until)
