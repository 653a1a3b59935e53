"""How a real provider's failures reach pd: retry through the limiter, or fail at once.

Both SDKs run with their own retries off, so every failure lands here once and is sorted
into one of two classes. Messages are the provider's own, on one line, with the API key
cut out wherever it might have been echoed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.errors import ProviderError

# Statuses worth another try: rate limited, overloaded, timeouts, server trouble.
RETRY_STATUSES = {408, 429, 529}
_SPEND_WORDS = re.compile(
    r"spend limit|usage limits|credit balance|insufficient_quota|exceeded your current quota",
    re.IGNORECASE,
)


class RetryableError(ProviderError):
    """Worth another try later: 429 (not a spend limit), 529, 5xx, timeouts, connection
    errors, malformed responses. ``retry_after`` is the server's wish, in seconds."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.headers = dict(headers or {})


class FatalError(ProviderError):
    """Retrying cannot help: bad request, bad key, no access, unknown model, too large,
    or a spend limit reached (``spend_limit``)."""

    def __init__(self, message: str, status: int | None = None, spend_limit: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.spend_limit = spend_limit


class PermitExpired(ProviderError):
    """The call's permit ran out before its request went out; it was not sent."""


def status_error(
    provider: str,
    status: int,
    message: str,
    headers: Mapping[str, str],
    *,
    spend_limit: bool = False,
) -> ProviderError:
    """The error for an HTTP error answer; ``message`` is already one clean line."""
    text = f"{provider} API error {status}: {message}"
    if status == 429 and spend_limit:
        return FatalError(f"{text} (a spend limit: not retried)", status, spend_limit=True)
    if status in RETRY_STATUSES or status >= 500:
        return RetryableError(text, status, retry_after_seconds(headers), headers)
    return FatalError(text, status, spend_limit=spend_limit)


def says_spend_limit(*texts: Any) -> bool:
    """Whether an error's type, code or message says a spend or credit limit was hit."""
    return any(isinstance(t, str) and _SPEND_WORDS.search(t) for t in texts)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (milliseconds) or ``retry-after`` (seconds, maybe fractional)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP date: rare from these APIs; the limiter backs off instead
        if seconds >= 0:
            return seconds
    return None


def one_line(text: Any, secret: str | None, limit: int = 500) -> str:
    """Collapse whitespace, cut the key out, cap the length."""
    line = " ".join(str(text).split())
    if secret:
        line = line.replace(secret, "[redacted]")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The rate-limit and retry headers of a response, names lower-cased."""
    return {
        k.lower(): v
        for k, v in headers.items()
        if "ratelimit" in k.lower() or k.lower() in ("retry-after", "retry-after-ms")
    }


def call_sdk(
    provider: str,
    create: Callable[[], Any],
    sdk_error: type[Exception],
    failure: Callable[[Any], Exception],
    to_response: Callable[[Any, dict[str, str]], Any],
    secret: str,
) -> Any:
    """One raw SDK call, its failures sorted into Retryable or Fatal.

    Errors are raised outside the except blocks: the SDK's exception, whose request
    carries the key in its headers, must not ride along as ``__context__``.
    """
    try:
        raw = create()
    except sdk_error as exc:
        # The SDK wraps what a request hook raised as a connection error.
        cause = exc.__cause__
        problem = cause if isinstance(cause, PermitExpired) else failure(exc)
    else:
        headers = limit_headers(raw.headers)
        try:
            return to_response(raw.parse(), headers)
        except (sdk_error, ValueError, TypeError, AttributeError, LookupError) as exc:
            detail = one_line(f"{type(exc).__name__}: {exc}", secret, 200)
            problem = RetryableError(
                f"{provider}: malformed response ({detail})", raw.status_code, None, headers
            )
    raise problem
