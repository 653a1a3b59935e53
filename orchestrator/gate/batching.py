"""How many candidates one gate run takes, and how a failed group is split.

Why one half: a gate run answers one yes/no question, so it carries at most one bit.
Finding which of K candidates are broken, each broken with probability p, takes
K·H(p) bits (H(p) = -p·log2 p - (1-p)·log2(1-p)), hence at least K·H(p) runs on
average (the information-theoretic bound; 15.0 runs for K=32, p=0.1). A run comes near
one bit only when its outcome is a fair coin, so every choice below sizes a run to pass
with probability 1/2:

- a batch of b untested candidates passes with probability (1-p)^b, so
  b = round(ln 2 / -ln(1-p)) (7 for p=0.1, 34 for p=0.02);
- when p ≥ (3-√5)/2 ≈ 0.38 testing one by one is optimal (Ungar, 1960), so b = 1;
- a group G of n known to hold a broken candidate (its run failed) is split by testing
  its first h: P(first h clean | G holds one) = (1-p)^h·(1-(1-p)^(n-h)) / (1-(1-p)^n),
  and h is chosen to bring that nearest 1/2 (n/2 for small p). If the h pass they land,
  and the other n-h are known to hold the broken one: they are split next without
  being run as a whole (Hwang's generalized binary splitting saves that run).

p itself is learnt: a Beta(a, b) prior with mean ``prior`` and weight ``strength``
pseudo-candidates, updated by every candidate landed (good) or rejected (broken); the
posterior mean is (a + broken) / (a + b + broken + good).
"""

from __future__ import annotations

import math

UNGAR = (3 - math.sqrt(5)) / 2


def failure_rate(prior: float, broken: int, good: int, strength: float = 10.0) -> float:
    """The posterior mean of the per-candidate failure rate (Beta prior, see above)."""
    a = prior * strength
    return (a + broken) / (strength + broken + good)


def batch_size(p: float, limit: int) -> int:
    """Untested candidates per run so that the run passes with probability ~1/2."""
    if p >= UNGAR:
        return 1
    if p <= 0:
        return max(1, limit)
    return max(1, min(limit, round(math.log(0.5) / math.log1p(-p))))


def split_size(n: int, p: float) -> int:
    """How many of a failed group of ``n`` to run first, so the run is a fair coin."""
    if n <= 2:
        return 1
    q = 1 - min(max(p, 1e-9), 1 - 1e-9)
    whole = 1 - q**n

    def clean_first(h: int) -> float:
        return q**h * (1 - q ** (n - h)) / whole

    return min(range(1, n), key=lambda h: (abs(clean_first(h) - 0.5), h))


def entropy_bound(k: int, p: float) -> float:
    """K·H(p): the fewest runs on average that can tell K candidates' states apart."""
    if p <= 0 or p >= 1:
        return 0.0
    return k * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
