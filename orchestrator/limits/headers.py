"""The providers' rate-limit headers, read into what the limiter's ``calibrate`` takes.

Apart from the desk because this is parsing of two providers' wire formats (Anthropic's
RFC 3339 reset times, OpenAI's Go-style durations), which the local API server's tests
use too, and not a decision about any call.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime

_ANTHROPIC = {
    "requests": "requests",
    "input-tokens": "input_tokens",
    "output-tokens": "output_tokens",
}


def parse_ratelimit_headers(
    headers: dict[str, str], wall_now: float
) -> tuple[dict[str, int], dict[str, float]]:
    """Remaining counts and seconds to reset, from either provider's header names."""
    remaining: dict[str, int] = {}
    resets: dict[str, float] = {}
    h = {k.lower(): v for k, v in headers.items()}
    for name, dim in _ANTHROPIC.items():
        left = h.get(f"anthropic-ratelimit-{name}-remaining")
        if left is not None and left.isdigit():
            remaining[dim] = int(left)
            reset = h.get(f"anthropic-ratelimit-{name}-reset")
            if reset:
                try:
                    at = datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp()
                    resets[dim] = max(0.0, at - wall_now)
                except ValueError:
                    pass
    left = h.get("x-ratelimit-remaining-requests")
    if left is not None and left.isdigit():
        remaining["requests"] = int(left)
        with suppress(ValueError):  # no (or an unreadable) reset: a whole window is assumed
            resets["requests"] = parse_go_duration(h.get("x-ratelimit-reset-requests", ""))
    return remaining, resets


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
