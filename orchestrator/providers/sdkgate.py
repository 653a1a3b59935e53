"""The last check before a model request goes out, and a dry run of the SDK's path.

The limiter's windows hold for calls that reach the provider within its margin of their
grant. The worker checks its permit before calling the SDK, but building and sending a
request can take longer than the margin on a starved machine (and a worker's first
request pays for the SDK's lazy imports), so the check is repeated where nothing is left
between it and the wire: an HTTP client request hook.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.errors import ProviderError
from orchestrator.providers.base import ModelRequest, ModelResponse
from orchestrator.providers.errors import PermitExpired


class SendGate:
    """An HTTP client request hook: stops a request whose permit has run out, just before
    it goes on the wire. The limiter's windows hold for calls that reach the provider
    within its margin of their grant; on a starved machine building a request in the
    SDK can take longer than the margin, so the check before the SDK call is not enough.
    """

    def __init__(self) -> None:
        self.send_by = 0.0  # time.monotonic(); 0: no deadline
        # Told the moment a request goes out (pd's limiter counts the call from then).
        self.on_send: Callable[[float], None] | None = None
        self._open = False  # requests go out unchecked and untold (``not_a_call``)

    @contextlib.contextmanager
    def not_a_call(self) -> Iterator[None]:
        """Requests sent inside are not model calls (a token count): they hold no permit,
        so there is none to check, and the limiter has no call to count."""
        self._open = True
        try:
            yield
        finally:
            self._open = False

    def __call__(self, request: Any) -> None:
        if self._open:
            return
        now = time.monotonic()
        if self.send_by and now > self.send_by:
            raise PermitExpired("the rate-limit permit ran out before the request was sent")
        if self.on_send is not None:
            self.on_send(now)


def warm_up(complete: Callable[[ModelRequest], ModelResponse], model: str) -> None:
    """Go down the SDK's whole request path once, stopped at the gate, so that a worker's
    first real call does not pay for first-use work while its permit's clock runs. Nothing
    is sent: the gate sees a deadline long past."""
    prompt = [{"role": "user", "content": "-"}]
    request = ModelRequest("", prompt, [], 1, model, "", 0, send_by=1e-9)
    with contextlib.suppress(ProviderError):
        complete(request)
