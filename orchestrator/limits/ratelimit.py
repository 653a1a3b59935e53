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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from orchestrator.limits.bucket import DIMENSIONS, Bucket, BucketLimits, default_margin
from orchestrator.providers.base import Usage


@dataclass(frozen=True)
class Permit:
    """A granted call; small and picklable because it travels over the worker pipe."""

    id: int
    key: str
    input_tokens: int
    max_output: int
    granted_at: float


@dataclass
class _Grant:
    permit: Permit
    entries: list[tuple[Bucket, int]]
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
            key: Bucket(key, lim, default_margin(lim.window) if margin is None else margin)
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

    def _scope_buckets(self, key: str) -> list[Bucket]:
        return [self._buckets[n] for n in _scope(key) if n in self._buckets]


def _scope(key: str) -> list[str]:
    """The bucket names a key is checked against: its provider, then the key itself."""
    provider = key.split("/", 1)[0]
    return [provider] if provider == key else [provider, key]
