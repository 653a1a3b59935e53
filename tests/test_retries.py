"""How a metered call retries a failing API: real SDKs against the local API server, the
permit protocol over a real pipe (its coordinator end answered by a thread)."""

from __future__ import annotations

from multiprocessing import Pipe
from typing import Any

import pytest

from orchestrator.errors import ProviderError
from orchestrator.limits.client import (
    MALFORMED_RETRIES,
    SAME_ERROR_LIMIT,
    MeteredProvider,
    PermitClient,
)
from orchestrator.providers.anthropic import AnthropicProvider
from orchestrator.providers.base import ModelRequest, Usage
from orchestrator.providers.openai import OpenAIProvider
from orchestrator.testing.apiserver import Fault, LocalAPIServer, Reply
from orchestrator.wire.messages import CallDone
from tests.test_metered import Desk

KEY = "sk-test-retries"
PROVIDERS = ["anthropic", "openai"]


def metered(kind: str, server: LocalAPIServer, slept: list[float]) -> tuple[Any, Desk, Any]:
    """A metered provider of ``kind``; returns it, the desk and the worker's pipe end."""
    ours, theirs = Pipe()
    if kind == "anthropic":
        inner: Any = AnthropicProvider("claude-test", KEY, base_url=server.url)
    else:
        inner = OpenAIProvider("gpt-test", KEY, base_url=server.url + "/v1")
    client = PermitClient("w1", ours)
    return (
        MeteredProvider(inner, client, lambda r: (10, 100), sleep=slept.append),
        Desk(theirs),
        ours,
    )


def calls_done(desk: Desk, pipe: Any) -> list[CallDone]:
    pipe.close()
    desk.thread.join(5)
    return [m for m in desk.got if isinstance(m, CallDone)]


def request() -> ModelRequest:
    return ModelRequest("", [{"role": "user", "content": "go"}], [], 100, "m", "t1", 1)


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_500_that_repeats_backs_off_then_stops_early(kind: str) -> None:
    slept: list[float] = []
    with LocalAPIServer(api_key=KEY, faults=[Fault("500")] * 8) as server:
        model, desk, pipe = metered(kind, server, slept)
        with pytest.raises(ProviderError) as caught:
            model.complete(request())
    assert len(server.calls) == SAME_ERROR_LIMIT < model.max_retries
    assert f"failed {SAME_ERROR_LIMIT} times in a row with the same error" in str(caught.value)
    assert f"{kind} API error 500" in str(caught.value)
    assert len(slept) == SAME_ERROR_LIMIT - 1 and all(s > 0 for s in slept)
    assert [d.status for d in calls_done(desk, pipe)] == ["retry"] * SAME_ERROR_LIMIT


def test_server_errors_that_differ_are_retried_on() -> None:
    faults = [Fault("500"), Fault("500"), Fault("529"), Fault("500"), Fault("500")]
    slept: list[float] = []
    with LocalAPIServer(["through"], api_key=KEY, faults=faults) as server:
        model, desk, pipe = metered("anthropic", server, slept)
        assert model.complete(request()).text == "through"
    assert [r["status"] for r in server.calls] == [500, 500, 529, 500, 500, 200]
    assert [d.status for d in calls_done(desk, pipe)] == ["retry"] * 5 + ["ok"]


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_malformed_answer_is_retried_once_and_what_it_carried_is_booked(kind: str) -> None:
    slept: list[float] = []
    with LocalAPIServer(["second try"], api_key=KEY, faults=[Fault("malformed")]) as server:
        model, desk, pipe = metered(kind, server, slept)
        assert model.complete(request()).text == "second try"
    first, second = calls_done(desk, pipe)
    cut, whole = server.calls
    assert cut["fault"] == "malformed" and whole["status"] == 200
    if kind == "anthropic":  # the cut stream carried message_start's usage: it is billed
        assert first.status == "ok"
        billed = Usage(cut["input_tokens"], 1, cut["cache_write"], cut["cache_read"])
        assert Usage.from_dict(first.usage) == billed
    else:  # nothing came with it to book: the permit goes back as a retry
        assert first.status == "retry" and "malformed response from the API server" in first.error
    assert second.status == "ok" and second.usage["output_tokens"] == whole["output_tokens"]


@pytest.mark.parametrize("kind", PROVIDERS)
def test_malformed_answers_are_not_retried_more_than_once(kind: str) -> None:
    slept: list[float] = []
    with LocalAPIServer(api_key=KEY, faults=[Fault("malformed")] * 8) as server:
        model, desk, pipe = metered(kind, server, slept)
        with pytest.raises(ProviderError) as caught:
            model.complete(request())
    assert len(server.calls) == MALFORMED_RETRIES + 1
    text = str(caught.value)
    assert f"the API server sent {MALFORMED_RETRIES + 1} malformed responses" in text
    assert "its fault, not the model's" in text
    assert len(calls_done(desk, pipe)) == MALFORMED_RETRIES + 1


def test_tool_arguments_as_an_object_through_the_meter_need_no_retry() -> None:
    reply = Reply("", [("write_file", {"path": "a", "content": "b"})])
    faults = [Fault("object_args")] * 3
    with LocalAPIServer([reply], api_key=KEY, faults=faults) as server:
        model, desk, pipe = metered("openai", server, [])
        response = model.complete(request())
    assert response.tool_calls[0].input == {"path": "a", "content": "b"}
    (done,) = calls_done(desk, pipe)
    assert done.status == "ok" and done.usage == response.usage.to_dict()
    assert len(server.calls) == 1
