"""The worker side of the permit protocol, with the coordinator's answers given in-process."""

from __future__ import annotations

import time

from orchestrator.messages import AcquireTokens, CallDone, Grant, Message
from orchestrator.metered import MeteredProvider, PermitClient
from orchestrator.providers.base import ModelRequest, ModelResponse, Usage


class Recorder:
    """Answers each AcquireTokens with a Grant; the first ones already past send_by."""

    def __init__(self, late_grants: int) -> None:
        self.late = late_grants
        self.sent: list[Message] = []
        self.client = PermitClient("w1", self.send)

    def send(self, message: Message) -> None:
        self.sent.append(message)
        if isinstance(message, AcquireTokens):
            deadline = time.monotonic() - 1 if self.late > 0 else time.monotonic() + 60
            self.late -= 1
            self.client.deliver(
                Grant(request_id=message.request_id, permit_id=message.request_id, send_by=deadline)
            )


class Model:
    name = "anthropic"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        return ModelResponse("ok", [], "end_turn", Usage(10, 2))


def request() -> ModelRequest:
    return ModelRequest("", [{"role": "user", "content": "x"}], [], 8, "m", "t", 1)


def test_a_permit_past_its_send_by_is_returned_unused_and_asked_again() -> None:
    coordinator, model = Recorder(late_grants=2), Model()
    provider = MeteredProvider(model, coordinator.client, lambda r: (10, 100), max_retries=0)
    assert provider.complete(request()).text == "ok"
    done = [m for m in coordinator.sent if isinstance(m, CallDone)]
    assert [d.status for d in done] == ["expired", "expired", "ok"]
    assert model.calls == 1  # never sent on an expired permit
    assert done[-1].permit_rtt is not None and done[-1].usage["input_tokens"] == 10
