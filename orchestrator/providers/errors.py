"""How a real provider's failures reach pd: retry through the limiter, or fail at once.

Both SDKs run with their own retries off, so every failure lands here once and is sorted
into one of two classes. Messages are the provider's own, on one line, with the API key
cut out wherever it might have been echoed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orchestrator.errors import PdError, ProviderError
from orchestrator.providers.base import Usage

_T = TypeVar("_T")
# Statuses worth another try: rate limited, overloaded, timeouts, server trouble.
RETRY_STATUSES = {408, 429, 529}
_SPEND_WORDS = re.compile(
    r"spend limit|usage limits|credit balance|insufficient_quota|exceeded your current quota",
    re.IGNORECASE,
)


class RetryableError(ProviderError):
    """Worth another try later: 429 (not a spend limit), 529, 5xx, timeouts, connection
    errors, malformed responses. ``retry_after`` is the server's wish, in seconds;
    ``usage`` what an answer that came back (and is billed) reported before it failed;
    ``malformed``: the server's answer could not be read, a fault of the server."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        usage: Usage | None = None,
        malformed: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        self.usage = usage
        self.malformed = malformed


class Malformed(PdError):
    """Raised while reading an answer that breaks the API's own format."""


@dataclass
class Seen:
    """What a streamed answer delivered before it failed: its usage is still booked."""

    usage: Usage | None = None
    headers: dict[str, str] = field(default_factory=dict)


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
    run: Callable[[Seen], _T],
    sdk_error: type[Exception],
    failure: Callable[[Any], Exception],
    secret: str,
) -> _T:
    """One streamed SDK call, its failures sorted into Retryable or Fatal.

    ``run`` sends the request and reads the stream, noting headers and usage in ``seen``
    as they arrive, so an answer that breaks halfway still reports what it cost.
    Errors are raised outside the except blocks: the SDK's exception, whose request
    carries the key in its headers, must not ride along as ``__context__``.
    """
    seen = Seen()
    try:
        return run(seen)
    except sdk_error as exc:
        # The SDK wraps what a request hook raised as a connection error.
        cause = exc.__cause__
        problem = cause if isinstance(cause, PermitExpired) else failure(exc)
    except Malformed as exc:
        problem = malformed(provider, one_line(exc, secret, 200), seen)
    except (ValueError, TypeError, AttributeError, LookupError, AssertionError) as exc:
        detail = one_line(f"{type(exc).__name__}: {exc}", secret, 200)
        problem = malformed(provider, detail, seen)
    except Exception as exc:
        if not _is_transport(exc):
            raise
        detail = one_line(f"{type(exc).__name__}: {exc}", secret, 200)
        problem = RetryableError(
            f"{provider}: the connection broke during the answer ({detail})",
            headers=seen.headers,
            usage=seen.usage,
        )
    if isinstance(problem, RetryableError) and problem.usage is None:
        problem.usage = seen.usage
    raise problem


def malformed(provider: str, detail: str, seen: Seen) -> RetryableError:
    """An answer that breaks the API's format: the server's fault, retried once at most."""
    return RetryableError(
        f"{provider}: malformed response from the API server ({detail})",
        200,
        None,
        seen.headers,
        usage=seen.usage,
        malformed=True,
    )


def _is_transport(exc: Exception) -> bool:
    """An HTTP transport error (httpx's, whatever the SDK vendors it as): the connection
    broke while the stream was read, after the SDK's own error mapping was done."""
    return any(c.__module__.split(".")[0].startswith("httpx") for c in type(exc).__mro__)


def show(on_text: Callable[[str], None] | None, text: str) -> None:
    """Pass a text delta to the live display; a display that fails must not fail the call."""
    if on_text is not None and text:
        with contextlib.suppress(Exception):
            on_text(text)
