"""Counting a call's input before making it: the Anthropic provider's token count and the
metered path that reserves from it, with the real SDK against the local API server."""

from __future__ import annotations

import math
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agent.recorder import RecordingProvider
from orchestrator.limits.client import (
    COUNT_MARGIN,
    COUNT_SLACK,
    MeteredProvider,
    PermitClient,
    estimate,
)
from orchestrator.providers.anthropic import AnthropicProvider
from orchestrator.providers.errors import FatalError, RetryableError
from orchestrator.testing.apiserver import Fault, LocalAPIServer
from orchestrator.wire.messages import AcquireTokens, CallDone, CallSent
from tests.test_metered import Desk
from tests.test_providers_sdk import KEY, logged_usage, request

DENSE = 1.0  # a tokenizer that counts a token per character: three times the estimate's


def claude(server: LocalAPIServer) -> AnthropicProvider:
    return AnthropicProvider("claude-test", KEY, base_url=server.url)


def prompt_of(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body.get(k) for k in ("model", "system", "messages", "tools")}


def billed_prompt(entry: dict[str, Any]) -> int:
    usage = logged_usage(entry)
    return usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens


def test_the_count_is_of_the_prompt_the_call_sends_and_what_it_then_bills() -> None:
    with LocalAPIServer(["one", "two"], api_key=KEY, chars_per_token=DENSE) as server:
        model = claude(server)
        counted = model.count_input_tokens(request())
        model.complete(request())  # writes the cache
        model.complete(request())  # reads it
    count, *calls = server.requests
    assert count["path"] == "/v1/messages/count_tokens"
    # The same system, tools and messages, cache breakpoints and all.
    assert prompt_of(count["body"]) == prompt_of(calls[0]["body"])
    assert counted == billed_prompt(calls[0]) == billed_prompt(calls[1])
    assert calls[0]["cache_write"] > 0 and calls[1]["cache_read"] > 0


def test_a_count_is_not_a_model_call_and_goes_out_after_the_last_permit_ran_out() -> None:
    with LocalAPIServer(api_key=KEY) as server:
        model = claude(server)
        sent: list[float] = []
        model.gate.on_send = sent.append
        model.gate.send_by = 1e-9  # the last call's permit, long past
        counted = model.count_input_tokens(request())
        model.complete(request())  # sends with no deadline
    assert counted == billed_prompt(server.calls[0])
    assert len(sent) == 1  # the call's send, not the count's: a count holds no permit
    assert [r["status"] for r in server.requests] == [200, 200]


def test_a_failed_count_is_one_try_and_a_missing_endpoint_is_not_asked_again() -> None:
    with LocalAPIServer(api_key=KEY, count_faults=[Fault("500"), Fault("400")]) as server:
        model = claude(server)
        with pytest.raises(RetryableError, match="500"):
            model.count_input_tokens(request())
        with pytest.raises(FatalError, match="400"):
            model.count_input_tokens(request())
        assert model.count_input_tokens(request()) == billed_prompt_of(model, server)
    assert [r["status"] for r in server.requests] == [500, 400, 200, 200]  # one try each
    with LocalAPIServer(api_key=KEY, models=["claude-other"]) as server:
        model = claude(server)
        with pytest.raises(FatalError, match="404"):
            model.count_input_tokens(request())
        assert model.count_input_tokens(request()) is None  # it does not count any more
    assert [r["status"] for r in server.requests] == [404]


def billed_prompt_of(model: AnthropicProvider, server: LocalAPIServer) -> int:
    model.complete(request())
    return billed_prompt(server.calls[-1])


def metered(server: LocalAPIServer, inner: Any = None) -> tuple[MeteredProvider, Desk, Any]:
    ours, theirs = Pipe()
    provider = MeteredProvider(inner or claude(server), PermitClient("w1", ours), estimate)
    return provider, Desk(theirs), ours


def permits(desk: Desk, pipe: Any) -> list[Any]:
    pipe.close()
    desk.thread.join(5)
    return desk.got


@pytest.mark.parametrize("recorded", [False, True])
def test_a_metered_call_reserves_at_least_what_a_dense_tokenizer_then_bills(
    recorded: bool, tmp_path: Path
) -> None:
    with LocalAPIServer(["done"], api_key=KEY, chars_per_token=DENSE) as server:
        inner = claude(server)
        if recorded:  # pd run --record: the recorder passes the count through
            inner = RecordingProvider(inner, tmp_path / "part.jsonl")
        provider, desk, pipe = metered(server, inner)
        assert provider.complete(request()).text == "done"
    got = permits(desk, pipe)
    [ask] = [m for m in got if isinstance(m, AcquireTokens)]
    [call] = server.calls
    billed = billed_prompt(call)
    assert ask.input_tokens == billed
    assert ask.worst_case_input == math.ceil(billed * COUNT_MARGIN) + COUNT_SLACK
    assert estimate(request())[1] < billed  # the estimate would have fallen short
    # The count took no permit: one ask, one send, one settlement, all for the call.
    assert [type(m) for m in got] == [AcquireTokens, CallSent, CallDone]


def test_with_counting_failing_the_call_goes_through_on_the_estimate() -> None:
    with LocalAPIServer(["done"], api_key=KEY, count_faults=lambda i, body: "500") as server:
        provider, desk, pipe = metered(server)
        assert provider.complete(request()).text == "done"
    [ask] = [m for m in permits(desk, pipe) if isinstance(m, AcquireTokens)]
    assert (ask.input_tokens, ask.worst_case_input) == estimate(request())
    assert [(r["path"], r["status"]) for r in server.requests] == [
        ("/v1/messages/count_tokens", 500),
        ("/v1/messages", 200),
    ]


def test_a_retried_call_is_counted_once() -> None:
    with LocalAPIServer(["done"], api_key=KEY, faults=[Fault("529")]) as server:
        provider, desk, pipe = metered(server)
        provider.sleep = lambda seconds: None
        assert provider.complete(request()).text == "done"
    permits(desk, pipe)
    paths = [r["path"] for r in server.requests]
    assert paths == ["/v1/messages/count_tokens", "/v1/messages", "/v1/messages"]
