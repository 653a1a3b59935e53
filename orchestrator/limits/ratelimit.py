"""Sliding-window rate limiter shared by every worker of a run (pure logic; caller's clock).

The coordinator owns one ``RateLimiter``. A worker asks it for a ``Permit`` before each
model call and settles the permit with the real usage afterwards. Every method takes
``now`` (monotonic seconds), as huey's ``loop(now)`` does, so tests drive time; a ``now``
older than one already seen counts as the latest seen, so time never runs backwards.

Keys: a permit for ``"anthropic/claude-sonnet-4-5"`` must fit the provider bucket
``"anthropic"`` and the model bucket ``"anthropic/claude-sonnet-4-5"``, whichever of the
two are configured. A key with no configured bucket is unlimited (pauses still apply).

Why no provider window ever goes over a limit: a grant is logged at grant time g and
counts until s + window + margin, where s is when the call was actually sent (the SDK's
HTTP request hook tells, see ``sent``; until then it counts without end). The provider
counts it at arrival a, somewhere in [s, s + margin]. Every grant whose arrival falls in
one provider window (t - window, t] was therefore still counted when the latest of them
was granted, and that grant was only made because the counted sum, itself included,
stayed within the limit. A call that reaches the wire late (a starved worker) thus costs
neither a 429 nor a permit thrown away: it simply counts for longer.

Grants expire in log order: an entry's expiry is the latest of its own and every earlier
entry's (``_Bucket.expiries`` holds that running maximum; a call not yet sent holds up
the entries behind it for the few milliseconds until its send is known). That keeps
finding when enough has expired one prefix-sum search.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from orchestrator.providers.base import Usage

DIMENSIONS = ("requests", "input_tokens", "output_tokens")
_COMPACT_AT = 4096  # drop expired log entries once this many pile up
# Smoothing spaces grants a little closer than the window allows on average, so that it
# only spreads bursts and never lowers the rate a saturated bucket sustains.
SMOOTH_SHARE = 0.9


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


@dataclass(frozen=True)
class Permit:
    """A granted call; small and picklable because it travels over the worker pipe."""

    id: int
    key: str
    input_tokens: int
    max_output: int
    granted_at: float


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


class _Bucket:
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
                raise ValueError(
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


@dataclass
class _Grant:
    permit: Permit
    entries: list[tuple[_Bucket, int]]
    sent: bool = False  # its send time is known


class RateLimiter:
    """Grants calls so that no configured bucket ever sees more than its limit.

    ``until_sent``: a grant counts without end until ``sent`` (or its settlement) says
    when its call went out, then for a window and margin from there, so however late a
    call reaches the wire, it is counted where the provider counts it. Without it (a
    caller that cannot tell the send time), a grant counts from its grant time, and a
    ``sent`` later than the margin only makes it count longer.
    """

    def __init__(
        self,
        limits: Mapping[str, BucketLimits],
        margin: float | None = None,
        until_sent: bool = False,
    ) -> None:
        self.until_sent = until_sent
        if margin is not None and margin < 0:
            raise ValueError(f"rate limit margin must be >= 0 seconds, not {margin!r}")
        self._buckets = {
            key: _Bucket(key, lim, default_margin(lim.window) if margin is None else margin)
            for key, lim in limits.items()
        }
        self._pauses: dict[str, float] = {}
        self._grants: dict[int, _Grant] = {}
        self._next_id = 1
        self._now = -math.inf

    def acquire(self, key: str, input_tokens: int, max_output: int, now: float) -> Permit | float:
        """Grant now, or return the earliest time (> now) at which this call could be."""
        ready = self.earliest(key, input_tokens, max_output, now)
        if ready > self._now:
            return float(ready)
        need = (1, input_tokens, max_output)
        entries = [(b, b.add(self._now, need, self.until_sent)) for b in self._scope_buckets(key)]
        permit = Permit(self._next_id, key, input_tokens, max_output, self._now)
        self._next_id += 1
        self._grants[permit.id] = _Grant(permit, entries)
        return permit

    def earliest(self, key: str, input_tokens: int, max_output: int, now: float) -> float:
        """When ``acquire`` would grant this call, absent other grants; raises if never."""
        if input_tokens < 0 or max_output < 0:
            raise ValueError("token counts of a call must be >= 0")
        now = self._advance(now)
        need = (1, input_tokens, max_output)
        ready = now
        for name in _scope(key):
            ready = max(ready, self._pauses.get(name, now))
            bucket = self._buckets.get(name)
            if bucket is not None:
                bucket.check_size(need)
                ready = max(ready, bucket.ready_at(need, now))
        return float(ready)

    def sent(self, permit_id: int, at: float, now: float) -> None:
        """The call went on the wire at ``at``: it counts until ``at`` + window + margin.
        Unknown permits (settled already) are ignored; ``at`` is kept within [grant, now]."""
        now = self._advance(now)
        grant = self._grants.get(permit_id)
        if grant is None or grant.sent:
            return
        grant.sent = True
        at = min(max(at, grant.permit.granted_at), now)
        for bucket, entry in grant.entries:
            bucket.close(entry, at + bucket.span, later_only=not self.until_sent)

    def settle(self, permit_id: int, usage_input: int, usage_output: int, now: float) -> None:
        """Replace the reservation by what the provider counted (input may be larger)."""
        if usage_input < 0 or usage_output < 0:
            raise ValueError("token counts of a call must be >= 0")
        self._reconcile(permit_id, now, lambda _: usage_input, usage_output)

    def settle_usage(self, permit_id: int, usage: Usage, now: float) -> None:
        """Like ``settle``, counting input per bucket as its provider does (cache reads)."""
        self._reconcile(permit_id, now, lambda lim: lim.counted_input(usage), usage.output_tokens)

    def cancel(self, permit_id: int, now: float, sent: bool) -> None:
        """The call failed: tokens are refunded; the request still counts if it was sent."""
        self._reconcile(permit_id, now, lambda _: 0, 0, requests=1 if sent else 0)

    def pause(self, key: str, until: float) -> None:
        """Grant nothing under ``key`` (a provider pauses all its models) before ``until``."""
        self._pauses[key] = max(until, self._pauses.get(key, until))

    def calibrate(
        self,
        key: str,
        remaining: Mapping[str, int],
        resets_in: Mapping[str, float],
        now: float,
    ) -> None:
        """Tighten from rate-limit headers when the provider has seen more use than we have.

        The difference (another client on the same key, a restarted run) is held until
        the provider's reset. It only tightens: never beyond the configured limits.
        Applied to the most specific configured bucket of ``key``.
        """
        now = self._advance(now)
        buckets = self._scope_buckets(key)
        for name in [*remaining, *resets_in]:
            if name not in DIMENSIONS:
                raise ValueError(f"unknown rate limit {name!r}; use one of {DIMENSIONS}")
        if not buckets:
            return
        bucket = buckets[-1]
        for name, left in remaining.items():
            until = now + resets_in.get(name, bucket.limits.window)
            bucket.tighten(DIMENSIONS.index(name), left, until, now)

    def in_flight(self, key: str) -> int:
        """Permits granted and not yet settled or cancelled, under ``key`` or its models."""
        return sum(
            g.permit.key == key or g.permit.key.startswith(key + "/") for g in self._grants.values()
        )

    def usage_in_window(self, key: str, now: float) -> dict[str, int]:
        """What the bucket named ``key`` counts as used right now (calibration included)."""
        if key not in self._buckets:
            raise KeyError(f"no rate limit bucket {key!r}")
        now = self._advance(now)
        bucket = self._buckets[key]
        bucket.expire(now)
        return {name: bucket.used(d) + bucket.held(d, now) for d, name in enumerate(DIMENSIONS)}

    def _advance(self, now: float) -> float:
        self._now = max(self._now, now)
        return self._now

    def _reconcile(
        self,
        permit_id: int,
        now: float,
        counted: Callable[[BucketLimits], int],
        output: int,
        requests: int = 1,
    ) -> None:
        self._advance(now)
        grant = self._grants.pop(permit_id, None)
        if grant is None:
            raise ValueError(f"permit {permit_id} is not in flight")
        for bucket, entry in grant.entries:
            bucket.set(entry, (requests, counted(bucket.limits), output))
            if self.until_sent and not grant.sent:
                # Sent at some unknown moment up to now (no hook told), or never (then it
                # counts nothing and must not hold up the entries behind it).
                bucket.close(entry, self._now + bucket.span if requests else -math.inf)

    def _scope_buckets(self, key: str) -> list[_Bucket]:
        return [self._buckets[n] for n in _scope(key) if n in self._buckets]


def _scope(key: str) -> list[str]:
    """The bucket names a key is checked against: its provider, then the key itself."""
    provider = key.split("/", 1)[0]
    return [provider] if provider == key else [provider, key]


def parse_go_duration(text: str) -> float:
    """Go-style durations as OpenAI's rate-limit reset headers give them: ``1s``,
    ``6m0s``, ``20ms``, ``1h2m3.5s``. Anything else is a ValueError."""
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if unit not in units or not number:
            raise ValueError(f"not a duration: {text!r}")
        total += float(number) * units[unit]
        number, i = "", i + len(unit)
    if number:
        raise ValueError(f"not a duration: {text!r}")
    return total
