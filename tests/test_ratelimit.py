"""The rate limiter: never more than a limit in any sliding window, as the provider counts.

Time is passed in explicitly; the stateful test uses whole seconds so that every float
the limiter computes is exact and a boundary case cannot pass or fail by rounding.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator.errors import PdError
from orchestrator.limits.bucket import (
    _COMPACT_AT,
    DIMENSIONS,
    SMOOTH_SHARE,
    BucketLimits,
    NeverFits,
)
from orchestrator.limits.ratelimit import Permit, RateLimiter
from orchestrator.providers.base import Usage


def grant(limiter: RateLimiter, key: str, inp: int, out: int, now: float) -> Permit:
    result = limiter.acquire(key, inp, out, now)
    assert isinstance(result, Permit), f"refused until {result}"
    return result


# ---- plain tests ----------------------------------------------------------------------


def test_grants_up_to_the_limit_then_names_the_time_a_slot_frees() -> None:
    limiter = RateLimiter({"p": BucketLimits(requests=2, window=10.0)}, margin=0.5)
    grant(limiter, "p", 0, 0, now=0.0)
    grant(limiter, "p", 0, 0, now=1.0)
    assert limiter.acquire("p", 0, 0, now=2.0) == 10.5  # the first grant counts 10 + 0.5 s
    assert limiter.acquire("p", 0, 0, now=10.4) == 10.5
    grant(limiter, "p", 0, 0, now=10.5)
    assert limiter.acquire("p", 0, 0, now=10.6) == 11.5


def test_default_margin_is_two_percent_of_the_window_plus_50_ms() -> None:
    """Measured (bench/bench_limits.py): 16 workers starting on 2 cores put a first call
    on the wire up to ~80 ms after its grant; 1 % + 20 ms let the provider see a window
    over the limit."""
    limiter = RateLimiter({"p": BucketLimits(requests=1, window=60.0)})
    grant(limiter, "p", 0, 0, now=0.0)
    assert limiter.acquire("p", 0, 0, now=1.0) == pytest.approx(61.25)


def test_a_model_key_must_fit_its_provider_bucket_and_its_model_bucket() -> None:
    limiter = RateLimiter(
        {"anthropic": BucketLimits(requests=3), "anthropic/a": BucketLimits(requests=1)}
    )
    grant(limiter, "anthropic/a", 0, 0, now=0)
    assert isinstance(limiter.acquire("anthropic/a", 0, 0, now=0), float)  # model bucket full
    grant(limiter, "anthropic/b", 0, 0, now=0)  # only the provider bucket applies to b
    grant(limiter, "anthropic", 0, 0, now=0)
    assert isinstance(limiter.acquire("anthropic/b", 0, 0, now=0), float)  # provider full
    grant(limiter, "openai/gpt-5", 10**9, 10**9, now=0)  # no bucket: unlimited
    assert limiter.in_flight("anthropic") == 3
    assert limiter.in_flight("anthropic/a") == 1


def test_unused_output_is_refunded_at_settle() -> None:
    limiter = RateLimiter({"p": BucketLimits(output_tokens=1000)})
    first = grant(limiter, "p", 0, 800, now=0)
    assert isinstance(limiter.acquire("p", 0, 800, now=1), float)
    limiter.settle(first.id, usage_input=0, usage_output=100, now=2)
    grant(limiter, "p", 0, 800, now=2)
    assert limiter.usage_in_window("p", now=2)["output_tokens"] == 900


def test_real_input_larger_than_the_estimate_is_counted() -> None:
    limiter = RateLimiter({"p": BucketLimits(input_tokens=1000, window=10)}, margin=0)
    first = grant(limiter, "p", 100, 0, now=0)
    limiter.settle(first.id, usage_input=900, usage_output=0, now=1)
    assert limiter.acquire("p", 200, 0, now=1) == 10.0  # waits for the 900 to slide out


def test_cancel_refunds_tokens_and_keeps_the_request_only_if_it_was_sent() -> None:
    limits = BucketLimits(requests=10, input_tokens=1000, output_tokens=1000)
    limiter = RateLimiter({"p": limits})
    unsent = grant(limiter, "p", 300, 300, now=0)
    sent = grant(limiter, "p", 300, 300, now=0)
    limiter.cancel(unsent.id, now=1, sent=False)
    limiter.cancel(sent.id, now=1, sent=True)
    used = limiter.usage_in_window("p", now=1)
    assert used == {"requests": 1, "input_tokens": 0, "output_tokens": 0}
    assert limiter.in_flight("p") == 0
    with pytest.raises(ValueError, match="not in flight"):
        limiter.settle(sent.id, 1, 1, now=2)


@pytest.mark.parametrize(("count_cache_reads", "counted"), [(False, 150), (True, 850)])
def test_settle_usage_counts_input_as_the_provider_does(
    count_cache_reads: bool, counted: int
) -> None:
    limits = BucketLimits(input_tokens=1000, count_cache_reads=count_cache_reads)
    limiter = RateLimiter({"p": limits})
    permit = grant(limiter, "p", 900, 10, now=0)
    usage = Usage(input_tokens=100, output_tokens=5, cache_write_tokens=50, cache_read_tokens=700)
    limiter.settle_usage(permit.id, usage, now=1)
    assert limiter.usage_in_window("p", now=1)["input_tokens"] == counted


@pytest.mark.parametrize(
    ("limits", "inp", "out", "words"),
    [
        (BucketLimits(input_tokens=1000), 1001, 0, "1001 input tokens"),
        (BucketLimits(output_tokens=4096), 0, 8192, "8192 output tokens"),
        (BucketLimits(requests=0), 0, 0, "1 requests"),
    ],
)
def test_a_call_too_big_for_a_bucket_is_an_error_not_a_wait(
    limits: BucketLimits, inp: int, out: int, words: str
) -> None:
    limiter = RateLimiter({"anthropic/m": limits})
    with pytest.raises(NeverFits, match=f"{words} can never fit rate limit 'anthropic/m'") as err:
        limiter.acquire("anthropic/m", inp, out, now=0)
    assert isinstance(err.value, PdError)  # what to do is in the message, for the user


def test_pause_blocks_until_its_end_and_is_never_shortened() -> None:
    limiter = RateLimiter({})
    limiter.pause("anthropic", until=30)
    limiter.pause("anthropic", until=20)
    assert limiter.acquire("anthropic/a", 0, 0, now=0) == 30
    assert limiter.acquire("anthropic", 0, 0, now=29.9) == 30
    grant(limiter, "openai/x", 0, 0, now=29.9)
    grant(limiter, "anthropic/a", 0, 0, now=30)
    limiter.pause("anthropic/a", until=40)  # one model only
    assert limiter.acquire("anthropic/a", 0, 0, now=31) == 40
    grant(limiter, "anthropic/b", 0, 0, now=31)


def test_calibrate_tightens_until_the_reset_when_the_provider_saw_more() -> None:
    limiter = RateLimiter({"p": BucketLimits(input_tokens=1000, window=60)}, margin=0)
    grant(limiter, "p", 100, 0, now=0)
    # The provider has 500 left, so 500 are used: 400 more than our own 100.
    limiter.calibrate("p/model", {"input_tokens": 500}, {"input_tokens": 10.0}, now=0)
    assert limiter.usage_in_window("p", now=0)["input_tokens"] == 500
    assert limiter.acquire("p", 600, 0, now=1) == 10.0  # when the provider's window resets
    grant(limiter, "p", 500, 0, now=1)  # exactly what is left
    grant(limiter, "p", 400, 0, now=10)


def test_calibrate_never_loosens_beyond_the_configured_limit() -> None:
    limiter = RateLimiter({"p": BucketLimits(requests=2, input_tokens=1000)}, margin=0)
    grant(limiter, "p", 600, 0, now=0)
    limiter.calibrate("p", {"requests": 10_000, "input_tokens": 10**6}, {}, now=0)
    assert isinstance(limiter.acquire("p", 401, 0, now=0), float)
    with pytest.raises(ValueError, match="unknown rate limit 'tokens'"):
        limiter.calibrate("p", {"tokens": 5}, {}, now=0)


def test_calibrate_applies_to_the_most_specific_bucket() -> None:
    limits = {"p": BucketLimits(requests=10), "p/a": BucketLimits(requests=10)}
    limiter = RateLimiter(limits, margin=0)
    limiter.calibrate("p/a", {"requests": 0}, {"requests": 5.0}, now=0)
    assert limiter.acquire("p/a", 0, 0, now=0) == 5.0
    grant(limiter, "p/b", 0, 0, now=0)  # the provider bucket itself was not tightened


def test_time_never_runs_backwards() -> None:
    limiter = RateLimiter({"p": BucketLimits(requests=1, window=10)}, margin=0)
    grant(limiter, "p", 0, 0, now=100)
    assert limiter.acquire("p", 0, 0, now=5) == 110  # an old `now` counts as 100
    assert grant(limiter, "p", 0, 0, now=110).granted_at == 110


def test_wait_times_match_a_brute_force_replay_over_a_long_run() -> None:
    """30k grants of varied sizes, compacting the log several times on the way."""
    window, margin, limit_in, limit_req = 1.0, 0.01, 1000, 20
    limits = BucketLimits(requests=limit_req, input_tokens=limit_in, window=window)
    limiter = RateLimiter({"p": limits}, margin=margin)
    rng = random.Random(7)
    live: deque[list[float]] = deque()  # [expiry, requests, input] as the test counts them
    now, grants = 0.0, 0
    while grants < 30_000:
        size = rng.randint(1, 120)
        result = limiter.acquire("p", size, 0, now)
        while live and live[0][0] <= now:
            live.popleft()
        if isinstance(result, Permit):
            grants += 1
            real = size - rng.randint(0, size)  # settle refunds part of the estimate
            limiter.settle(result.id, real, 0, now)
            live.append([now + (window + margin), 1, real])
            assert sum(e[1] for e in live) <= limit_req
            assert sum(e[2] for e in live) <= limit_in
        else:
            assert result == max(
                freed_at(live, 1, 1 + sum(e[1] for e in live) - limit_req),
                freed_at(live, 2, size + sum(e[2] for e in live) - limit_in),
            )
            now = result


def test_until_sent_a_grant_counts_from_when_its_call_went_out() -> None:
    limiter = RateLimiter({"p": BucketLimits(requests=1, window=10.0)}, 0.5, until_sent=True)
    first = grant(limiter, "p", 0, 0, now=0.0)
    assert limiter.acquire("p", 0, 0, now=1.0) == math.inf  # not sent yet: no end known
    limiter.sent(first.id, at=3.0, now=3.1)  # it reached the wire 3 s late
    assert limiter.acquire("p", 0, 0, now=3.2) == 13.5  # not 10.5, from its grant
    limiter.settle(first.id, 0, 0, now=4.0)  # settling does not move it back
    assert limiter.acquire("p", 0, 0, now=5.0) == 13.5


def test_until_sent_a_call_never_sent_holds_up_nothing_and_one_unheard_counts_to_now() -> None:
    limiter = RateLimiter({"p": BucketLimits(requests=2, window=10.0)}, 0.0, until_sent=True)
    lost, later = grant(limiter, "p", 0, 0, now=0.0), grant(limiter, "p", 0, 0, now=1.0)
    limiter.sent(later.id, at=1.0, now=1.0)
    assert limiter.acquire("p", 0, 0, now=2.0) == math.inf  # ``lost`` holds ``later`` up
    limiter.cancel(lost.id, now=2.0, sent=False)
    assert isinstance(limiter.acquire("p", 0, 0, now=2.0), Permit)
    assert limiter.acquire("p", 0, 0, now=2.0) == 11.0  # ``later`` expires on its own
    unheard = RateLimiter({"p": BucketLimits(requests=1, window=10.0)}, 0.0, until_sent=True)
    permit = grant(unheard, "p", 0, 0, now=0.0)
    unheard.settle(permit.id, 0, 0, now=4.0)  # no hook told: sent at the latest by now
    assert unheard.acquire("p", 0, 0, now=5.0) == 14.0


@settings(max_examples=80, deadline=None)
@given(
    limit=st.integers(1, 4),
    calls=st.lists(
        st.tuples(st.floats(0, 3), st.floats(0, 15), st.booleans()), min_size=1, max_size=40
    ),
)
def test_until_sent_no_window_of_send_times_goes_over_however_late_calls_go_out(
    limit: int, calls: list[tuple[float, float, bool]]
) -> None:
    """Workers ask ``gap`` apart; each granted call goes on the wire ``late`` seconds after
    its grant (a starved worker; later than a whole window, too), and the limiter hears
    of it then, other asks meanwhile. The provider counts arrivals (here: send times)
    over sliding windows: never more than the limit. The limiter's margin is a
    microsecond, for float rounding at the window's edge."""
    window = 10.0
    limits = {"p": BucketLimits(requests=limit, window=window)}
    limiter = RateLimiter(limits, 1e-6, until_sent=True)
    now, sends, pending = 0.0, [], []  # pending: (send time, permit id, settles)

    def send_due(until: float) -> None:
        for at, permit_id, settle in sorted(p for p in pending if p[0] <= until):
            pending.remove((at, permit_id, settle))
            limiter.sent(permit_id, at=at, now=at)
            sends.append(at)
            if settle:
                limiter.settle(permit_id, 0, 0, at)

    for gap, late, settle in calls:
        now += gap
        send_due(now)
        result = limiter.acquire("p", 0, 0, now)
        while not isinstance(result, Permit):
            if result == math.inf:  # waits for a call to be sent
                assert pending
                now = max(now, min(pending)[0])
            else:
                now = result
            send_due(now)
            result = limiter.acquire("p", 0, 0, now)
        pending.append((now + late, result.id, settle))
    send_due(math.inf)
    for t in sends:
        assert sum(t - window < s <= t for s in sends) <= limit


def freed_at(live: deque[list[float]], column: int, excess: float) -> float:
    """When enough of the oldest entries have expired to free ``excess`` (brute force)."""
    if excess <= 0:
        return -math.inf
    for entry in live:
        excess -= entry[column]
        if excess <= 0:
            return entry[0]
    raise AssertionError("never frees")


def test_thousands_of_calls_in_the_window_keep_the_limit_and_the_log_compact() -> None:
    """What it costs per grant is measured by bench/bench_limits.py (a ratio); here, that
    a log of tens of thousands of grants still keeps the window and is compacted."""
    limiter = RateLimiter({"p": BucketLimits(requests=5000, input_tokens=10**9, window=10.0)})
    bucket = limiter._buckets["p"]
    now, grants, longest = 0.0, 0, 0
    while grants < 50_000:
        result = limiter.acquire("p", 7, 3, now)
        if isinstance(result, Permit):
            limiter.settle(result.id, 5, 1, now)
            grants += 1
            now += 0.0001
        else:
            now = result
        assert limiter.usage_in_window("p", now)["requests"] <= 5000
        longest = max(longest, len(bucket.expiries))
    assert 5000 <= longest <= 2 * (5000 + _COMPACT_AT)


@settings(max_examples=15, deadline=None)
@given(
    dim=st.sampled_from(DIMENSIONS),
    window=st.integers(2, 60),
    limit=st.integers(50, 150),
    smooth=st.booleans(),
)
def test_a_saturating_stream_uses_at_least_95_percent_of_the_limit(
    dim: str, window: int, limit: int, smooth: bool
) -> None:
    size = 1 if dim == "requests" else 37  # tokens: limit is 50-150 calls of 37
    limits = BucketLimits(**{dim: limit * size}, window=float(window), smooth=smooth)
    limiter = RateLimiter({"p": limits})
    inp, out = (size, 0) if dim == "input_tokens" else (0, size)
    now, granted, horizon = 0.0, 0, 50 * window
    while now < horizon:
        result = limiter.acquire("p", inp, out, now)
        if isinstance(result, Permit):
            granted += size
            limiter.settle(result.id, inp, out, now)
        else:
            now = result
    # Any window holds at most the limit, so [0, horizon) holds at most 50 limits.
    assert granted / (50 * limit * size) >= 0.95


# ---- stateful test --------------------------------------------------------------------

KEYS = ["p", "p/a", "p/b", "q"]


def scope(key: str) -> list[str]:
    provider = key.split("/")[0]
    return [provider] if provider == key else [provider, key]


class Sent:
    """One granted call as the test (and the provider) sees it."""

    def __init__(self, permit: Permit, delay: int) -> None:
        self.permit = permit
        self.arrival = permit.granted_at + delay  # when the provider counts it
        self.amounts = [1, permit.input_tokens, permit.max_output]
        self.open = True


class LimiterMachine(RuleBasedStateMachine):
    @initialize(data=st.data())
    def configure(self, data: st.DataObject) -> None:
        def limit(lo: int, hi: int) -> int | None:
            return data.draw(st.none() | st.integers(lo, hi))

        self.limits: dict[str, BucketLimits] = {}
        for name in data.draw(st.sets(st.sampled_from(KEYS), min_size=1)):
            window = data.draw(st.integers(5, 40))
            self.limits[name] = BucketLimits(
                limit(1, 6), limit(40, 300), limit(40, 300), window, smooth=data.draw(st.booleans())
            )
        self.margin = data.draw(st.integers(0, 3))
        self.limiter = RateLimiter(self.limits, margin=float(self.margin))
        self.now = 0
        self.sent: list[Sent] = []
        self.pauses: dict[str, int] = {}

    def fits(self, key: str, inp: int, out: int) -> bool:
        return all(
            (lim := self.limits[name].limit(d)) is None or need <= lim
            for name in scope(key)
            if name in self.limits
            for d, need in enumerate((1, inp, out))
        )

    def record(self, result: Permit | float, data: st.DataObject) -> None:
        assert isinstance(result, Permit)
        assert result.granted_at == self.now
        assert all(self.now >= self.pauses.get(n, 0) for n in scope(result.key))
        self.sent.append(Sent(result, data.draw(st.integers(0, self.margin))))

    @rule(
        key=st.sampled_from(KEYS), inp=st.integers(0, 120), out=st.integers(0, 120), data=st.data()
    )
    def acquire(self, key: str, inp: int, out: int, data: st.DataObject) -> None:
        if not self.fits(key, inp, out):
            with pytest.raises(NeverFits, match="can never fit"):
                self.limiter.acquire(key, inp, out, self.now)
            return
        result = self.limiter.acquire(key, inp, out, self.now)
        if isinstance(result, float):
            smoothed = any(self.gap(n) for n in scope(key))
            assert result > self.now and (smoothed or result == int(result))
            ready = math.ceil(result)
            if ready - 1 > self.now and ready == result:  # the earliest, not just a safe one
                assert self.limiter.earliest(key, inp, out, ready - 1) == ready
            self.now = ready
            result = self.limiter.acquire(key, inp, out, self.now)
        self.record(result, data)

    def gap(self, name: str) -> float:
        limits = self.limits.get(name)
        if limits is None or not limits.smooth or not limits.requests:
            return 0.0
        return SMOOTH_SHARE * limits.window / limits.requests

    @invariant()
    def smoothed_buckets_space_their_grants(self) -> None:
        for name in self.limits:
            times = sorted(s.permit.granted_at for s in self.sent if name in scope(s.permit.key))
            assert all(b - a >= self.gap(name) - 1e-9 for a, b in itertools.pairwise(times))

    @rule(seconds=st.integers(0, 30))
    def advance(self, seconds: int) -> None:
        self.now += seconds

    @precondition(lambda self: any(s.open for s in self.sent))
    @rule(data=st.data(), fraction=st.fractions(0, 1), out_fraction=st.fractions(0, 1))
    def settle(self, data: st.DataObject, fraction: object, out_fraction: object) -> None:
        call = data.draw(st.sampled_from([s for s in self.sent if s.open]))
        inp = int(call.amounts[1] * fraction)
        out = int(call.amounts[2] * out_fraction)
        self.limiter.settle(call.permit.id, inp, out, self.now)
        call.amounts[1:] = [inp, out]
        call.open = False

    @precondition(lambda self: any(s.open for s in self.sent))
    @rule(data=st.data(), was_sent=st.booleans())
    def cancel(self, data: st.DataObject, was_sent: bool) -> None:
        call = data.draw(st.sampled_from([s for s in self.sent if s.open]))
        self.limiter.cancel(call.permit.id, self.now, sent=was_sent)
        call.amounts = [1 if was_sent else 0, 0, 0]
        call.open = False

    @rule(key=st.sampled_from(KEYS), seconds=st.integers(0, 20))
    def pause(self, key: str, seconds: int) -> None:
        self.limiter.pause(key, self.now + seconds)
        self.pauses[key] = max(self.pauses.get(key, 0), self.now + seconds)

    @rule(
        key=st.sampled_from(KEYS),
        remaining=st.dictionaries(st.sampled_from(DIMENSIONS), st.integers(0, 300)),
        reset=st.integers(1, 30),
    )
    def calibrate(self, key: str, remaining: dict[str, int], reset: int) -> None:
        resets = {name: float(reset) for name in remaining}
        self.limiter.calibrate(key, remaining, resets, self.now)

    @invariant()
    def no_provider_window_over_a_limit(self) -> None:
        if not hasattr(self, "limiter"):
            return
        for name, limits in self.limits.items():
            calls = sorted(
                (s for s in self.sent if name in scope(s.permit.key)), key=lambda s: s.arrival
            )
            for d in range(3):
                limit = limits.limit(d)
                if limit is None:
                    continue
                for last in calls:  # the window (arrival - window, arrival]
                    total = sum(
                        s.amounts[d]
                        for s in calls
                        if last.arrival - limits.window < s.arrival <= last.arrival
                    )
                    assert total <= limit, (name, DIMENSIONS[d], last.arrival, total)

    @invariant()
    def in_flight_counts_open_permits_under_a_key(self) -> None:
        if hasattr(self, "limiter"):
            for key in KEYS:
                under = [s for s in self.sent if s.open and key in scope(s.permit.key)]
                assert self.limiter.in_flight(key) == len(under)


LimiterMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLimiter = LimiterMachine.TestCase


def test_smoothing_spaces_grants_at_the_request_pace_and_the_window_still_holds() -> None:
    window, limit = 10.0, 20
    limiter = RateLimiter({"p": BucketLimits(requests=limit, window=window, smooth=True)}, 0)
    now, grants = 0.0, []
    while len(grants) < 100:
        result = limiter.acquire("p", 0, 0, now)
        if isinstance(result, Permit):
            grants.append(now)
        else:
            now = result
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert min(gaps) >= SMOOTH_SHARE * window / limit - 1e-9  # no bursts, from the start
    assert all(sum(1 for g in grants if t - window + 1e-9 < g <= t) <= limit for t in grants)
    rough = RateLimiter({"p": BucketLimits(requests=limit, window=window)}, 0)
    assert all(isinstance(rough.acquire("p", 0, 0, 0.0), Permit) for _ in range(limit))


def test_smoothing_without_a_request_limit_changes_nothing() -> None:
    limiter = RateLimiter({"p": BucketLimits(input_tokens=100, window=10, smooth=True)}, 0)
    assert all(isinstance(limiter.acquire("p", 10, 0, 0.0), Permit) for _ in range(10))
