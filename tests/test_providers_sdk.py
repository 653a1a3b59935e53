"""The anthropic and openai providers: real SDKs against the local API server on loopback."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anthropic
import pytest

from orchestrator.agent.loop import run_agent
from orchestrator.errors import ProviderError
from orchestrator.providers import make_provider
from orchestrator.providers.anthropic import AnthropicProvider
from orchestrator.providers.base import ModelRequest, Usage
from orchestrator.providers.errors import FatalError, PermitExpired, RetryableError
from orchestrator.providers.estimate import estimate_input_tokens
from orchestrator.providers.openai import OpenAIProvider, is_official, to_openai_messages
from orchestrator.team.tools import Toolbox
from orchestrator.testing.apiserver import Fault, LocalAPIServer, Reply

KEY = "sk-test-0123456789abcdef"
SYSTEM = "You are a test agent. Use the tools. " * 20
TOOLS = Toolbox(Path(".")).specs()
EPHEMERAL = {"type": "ephemeral"}
CONVERSATION = [
    {"role": "user", "content": [{"type": "text", "text": "Add a greeting file."}]},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Writing it."},
            {
                "type": "tool_use",
                "id": "toolu_w1",
                "name": "write_file",
                "input": {"path": "hi.txt", "content": "hi\n"},
            },
            {"type": "tool_use", "id": "toolu_r2", "name": "read_file", "input": {"path": "x"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_w1", "content": "wrote hi.txt"},
            {"type": "tool_result", "tool_use_id": "toolu_r2", "content": "no x", "is_error": True},
        ],
    },
]
PROVIDERS = ["anthropic", "openai"]


def provider(kind: str, server: LocalAPIServer, key: str = KEY, **kw: Any) -> Any:
    if kind == "anthropic":
        return AnthropicProvider("claude-test", key, base_url=server.url, **kw)
    return OpenAIProvider("gpt-test", key, base_url=server.url + "/v1", **kw)


def request(messages: list[dict] | None = None, max_tokens: int = 500) -> ModelRequest:
    messages = CONVERSATION if messages is None else messages
    return ModelRequest(SYSTEM, messages, TOOLS, max_tokens, "model-x", "t1", 1)


def logged_usage(entry: dict) -> Usage:
    """The server's log in pd's Usage terms."""
    return Usage(
        entry["input_tokens"], entry["output_tokens"], entry["cache_write"], entry["cache_read"]
    )


# ---- conversations convert both ways -------------------------------------------------


def test_anthropic_multi_turn_with_tools_and_prompt_caching() -> None:
    reply = Reply("Done.", [("finish", {"summary": "greeted"})])
    limits = {"requests": 100, "window": 60}
    with LocalAPIServer([reply, "again"], api_key=KEY, limits=limits) as server:
        claude = provider("anthropic", server)
        first = claude.complete(request())
        second = claude.complete(request())
    body = server.requests[0]["body"]
    assert body["system"] == [{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}]
    assert body["tools"][-1] == {**TOOLS[-1], "cache_control": EPHEMERAL}
    assert all("cache_control" not in t for t in body["tools"][:-1])
    assert "cache_control" not in TOOLS[-1]  # the caller's specs are not changed
    assert body["messages"] == CONVERSATION and body["model"] == "model-x"
    assert body["max_tokens"] == 500
    assert first.text == "Done." and first.stop_reason == "tool_use"
    (call,) = first.tool_calls
    assert (call.name, call.input) == ("finish", {"summary": "greeted"})
    assert call.id.startswith("toolu_")
    assert first.usage == logged_usage(server.requests[0])
    assert first.usage.cache_write_tokens > 0 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert second.usage.input_tokens == first.usage.input_tokens
    assert second.text == "again" and second.tool_calls == []
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "99"
    assert second.headers["anthropic-ratelimit-requests-limit"] == "100"


def test_openai_multi_turn_with_tool_messages_and_normalised_usage() -> None:
    reply = Reply("", [("finish", {"summary": "greeted"})])
    with LocalAPIServer([reply, "again"], api_key=KEY, limits={"requests": 9}) as server:
        gpt = provider("openai", server)
        first = gpt.complete(request())
        second = gpt.complete(request())
    body = server.requests[0]["body"]
    assert body["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Add a greeting file."},
        {
            "role": "assistant",
            "content": "Writing it.",
            "tool_calls": [
                {
                    "id": "toolu_w1",
                    "type": "function",
                    "function": {
                        "name": "write_file",
                        "arguments": json.dumps({"path": "hi.txt", "content": "hi\n"}),
                    },
                },
                {
                    "id": "toolu_r2",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "x"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_w1", "content": "wrote hi.txt"},
        {"role": "tool", "tool_call_id": "toolu_r2", "content": "Error: no x"},
    ]
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": TOOLS[0]["name"],
            "description": TOOLS[0]["description"],
            "parameters": TOOLS[0]["input_schema"],
        },
    }
    # A custom base URL means an OpenAI-compatible server: the widely read max_tokens.
    assert body["max_tokens"] == 500 and "max_completion_tokens" not in body
    (call,) = first.tool_calls
    assert (call.name, call.input) == ("finish", {"summary": "greeted"})
    assert first.stop_reason == "tool_use" and first.text == ""
    assert second.stop_reason == "end_turn" and second.text == "again"
    reported = server.requests[1]["usage"]
    cached = reported["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0 and first.usage.cache_read_tokens == 0
    assert second.usage == Usage(
        input_tokens=reported["prompt_tokens"] - cached,
        output_tokens=reported["completion_tokens"],
        cache_read_tokens=cached,
    )
    assert first.usage == logged_usage(server.requests[0])
    assert first.headers["x-ratelimit-remaining-requests"] == "8"


def test_openai_conversion_puts_tool_results_before_text_and_keeps_order() -> None:
    messages = [
        {"role": "user", "content": "plain"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "a", "name": "n", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and then"},
                {
                    "type": "tool_result",
                    "tool_use_id": "a",
                    "content": [{"type": "text", "text": "r"}],
                },
            ],
        },
    ]
    assert to_openai_messages("", messages) == [
        {"role": "user", "content": "plain"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "n", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "r"},
        {"role": "user", "content": "and then"},
    ]


def test_malformed_tool_arguments_reach_the_tool_layer_as_raw_text(tmp_path: Path) -> None:
    broken = '{"path": "a.txt", "content": '
    with LocalAPIServer([Reply(tool_calls=[("write_file", broken)])], api_key=KEY) as server:
        response = provider("openai", server).complete(request())
    (call,) = response.tool_calls
    assert call.input == {"_raw": broken}
    result = Toolbox(tmp_path).call(call.name, call.input)
    assert result.is_error and not (tmp_path / "a.txt").exists()


def test_official_openai_gets_max_completion_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    official = OpenAIProvider("gpt-test", KEY)  # no call is made
    assert official.official and official.params(request())["max_completion_tokens"] == 500
    assert "max_tokens" not in official.params(request())
    assert is_official("api.openai.com") and is_official("eu.api.openai.com")
    assert not is_official("localhost") and not is_official("openai.com.evil.example")


# ---- errors --------------------------------------------------------------------------

FAULTS = [
    (Fault("429", retry_after=1.5), RetryableError, {429}),
    (Fault("529"), RetryableError, {529, 503}),
    (Fault("500"), RetryableError, {500}),
    (Fault("malformed"), RetryableError, {200}),
    (Fault("400"), FatalError, {400}),
    (Fault("spend_limit"), FatalError, {429}),
]


@pytest.mark.parametrize("kind", PROVIDERS)
@pytest.mark.parametrize(("fault", "error", "statuses"), FAULTS, ids=[f[0].kind for f in FAULTS])
def test_each_fault_maps_to_its_error_class(
    kind: str, fault: Fault, error: type, statuses: set[int]
) -> None:
    with LocalAPIServer(api_key=KEY, faults=[fault]) as server, pytest.raises(error) as caught:
        provider(kind, server).complete(request())
    exc = caught.value
    assert exc.status in statuses and "\n" not in str(exc) and KEY not in str(exc)
    if fault.kind == "429":
        assert exc.retry_after == 2 and exc.headers["retry-after"] == "2"
    if fault.kind == "spend_limit":
        assert exc.spend_limit and "spend limit" in str(exc)
    if fault.kind == "400":
        assert ("prompt is too long" if kind == "anthropic" else "maximum context length") in str(
            exc
        )
        assert not exc.spend_limit
    if error is RetryableError and fault.kind != "429":
        assert exc.retry_after is None


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_timeout_and_a_dead_server_are_retryable(kind: str) -> None:
    with LocalAPIServer(api_key=KEY, faults=[Fault("slow", delay=1.0)]) as server:
        with pytest.raises(RetryableError, match=r"no answer within 0\.2s") as caught:
            provider(kind, server, timeout=0.2).complete(request())
        assert caught.value.status is None
        dead = provider(kind, server)
    with pytest.raises(RetryableError, match="connection failed"):
        dead.complete(request())


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_request_whose_permit_ran_out_is_stopped_before_it_is_sent(kind: str) -> None:
    with LocalAPIServer(["late", "in time"], api_key=KEY) as server:
        model = provider(kind, server)
        with pytest.raises(PermitExpired):
            model.complete(replace(request(), send_by=time.monotonic() - 0.001))
        assert server.requests == []  # it never reached the server
        fresh = model.complete(replace(request(), send_by=time.monotonic() + 60))
    assert fresh.text == "late" and len(server.requests) == 1


@pytest.mark.parametrize("kind", PROVIDERS)
def test_warming_up_goes_down_the_sdks_path_but_sends_nothing(kind: str) -> None:
    with LocalAPIServer(["first"], api_key=KEY) as server:
        model = provider(kind, server)
        model.warm()
        assert server.requests == []
        assert model.complete(request()).text == "first"  # the gate lets real calls by


@pytest.mark.parametrize("kind", PROVIDERS)
def test_server_rate_limit_is_retryable_with_its_retry_after(kind: str) -> None:
    with LocalAPIServer(api_key=KEY, limits={"requests": 1, "window": 2}) as server:
        model = provider(kind, server)
        model.complete(request())
        with pytest.raises(RetryableError) as caught:
            model.complete(request())
    assert caught.value.status == 429 and 0 < caught.value.retry_after <= 2
    assert caught.value.headers["retry-after"] in ("1", "2")


@pytest.mark.parametrize("kind", PROVIDERS)
def test_wrong_key_is_fatal_with_the_providers_message_and_never_shows_the_key(kind: str) -> None:
    wrong = "sk-wrong-key-" + "z" * 40
    with LocalAPIServer(api_key=KEY) as server:
        model = provider(kind, server, key=wrong)
        with pytest.raises(FatalError) as caught:
            model.complete(request())
    text = str(caught.value)
    assert caught.value.status == 401 and not caught.value.spend_limit
    assert caught.value.__context__ is None  # the SDK error holds the key in its request
    assert ("invalid x-api-key" if kind == "anthropic" else "Incorrect API key provided") in text
    assert text.startswith(f"{kind} API error 401: ")
    for shown in (text, repr(model), repr(caught.value)):
        assert wrong not in shown and KEY not in shown


# ---- the agent loop end to end -------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
def test_run_agent_writes_a_file_and_finishes_through_each_provider(
    kind: str, tmp_path: Path
) -> None:
    replies = [
        Reply("Writing.", [("write_file", {"path": "src/hello.txt", "content": "hello\n"})]),
        Reply("", [("finish", {"summary": "wrote hello"})]),
    ]
    records: list[dict] = []
    with LocalAPIServer(replies, api_key=KEY) as server:
        result = run_agent(
            provider(kind, server),
            Toolbox(tmp_path),
            system=SYSTEM,
            prompt="Write src/hello.txt.",
            model="model-x",
            max_tokens=1000,
            max_turns=5,
            task_id="t1",
            attempt=1,
            record=records.append,
        )
    assert (tmp_path / "src/hello.txt").read_text() == "hello\n"
    assert result.finished and result.summary == "wrote hello" and result.turns == 2
    log = server.requests
    assert [r["status"] for r in log] == [200, 200]
    assert result.usage == logged_usage(log[0]) + logged_usage(log[1])
    assert result.usage.cache_read_tokens > 0  # the second turn reused the cached prefix
    first_call = next(r for r in records if r["kind"] == "response")["tool_calls"][0]["id"]
    sent = log[1]["body"]["messages"]
    if kind == "anthropic":
        assert sent[-1]["content"][0]["tool_use_id"] == first_call
    else:
        assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == [first_call]
    tool = [r for r in records if r["kind"] == "tool"]
    assert [t["name"] for t in tool] == ["write_file", "finish"] and not tool[0]["is_error"]


# ---- construction --------------------------------------------------------------------


def test_make_provider_builds_both_and_reads_keys_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with LocalAPIServer(["from env"], api_key=KEY) as server:
        claude = make_provider("anthropic", model="claude-test", base_url=server.url, timeout=None)
        assert isinstance(claude, AnthropicProvider) and claude.name == "anthropic"
        assert claude.complete(request()).text == "from env"
    with pytest.raises(ProviderError, match="set the OPENAI_API_KEY environment variable"):
        make_provider("openai", model="gpt-test")
    local = make_provider("openai", model="llama3", base_url="http://127.0.0.1:1/v1")
    assert isinstance(local, OpenAIProvider) and local.name == "openai"  # Ollama needs no key
    with pytest.raises(ProviderError, match="unknown options"):
        make_provider("openai", model="m", api_key=KEY, cassette="x.json")
    with pytest.raises(ProviderError, match="available: scripted, anthropic, openai"):
        make_provider("gemini")
    cassette = tmp_path / "c.json"
    cassette.write_text(json.dumps({"version": 1, "tasks": {"*": [[{"text": "hi"}]]}}))
    assert make_provider("scripted", cassette=str(cassette)).name == "scripted"


@pytest.mark.parametrize("kind", PROVIDERS)
def test_estimate_is_an_upper_bound_of_what_the_server_counts(kind: str) -> None:
    with LocalAPIServer(api_key=KEY) as server:
        provider(kind, server).complete(request())
    entry = server.requests[0]
    counted = entry["input_tokens"] + entry["cache_write"] + entry["cache_read"]
    estimate = estimate_input_tokens(request())
    assert counted <= estimate <= 2 * counted
    prompt = {"system": SYSTEM, "messages": CONVERSATION, "tools": TOOLS}
    assert estimate == math.ceil(len(json.dumps(prompt).encode()) / 3)


# ---- streaming -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
def test_calls_stream_text_live_and_take_usage_from_the_last_event(kind: str) -> None:
    text = "A reply long enough to come in several pieces, as models stream them."
    reply = Reply(text, [("write_file", {"path": "a.txt", "content": "x" * 50})])
    shown: list[str] = []
    with LocalAPIServer([reply], api_key=KEY) as server:
        response = provider(kind, server).complete(replace(request(), on_text=shown.append))
    entry = server.requests[0]
    assert entry["stream"] is True
    if kind == "openai":
        assert entry["body"]["stream_options"] == {"include_usage": True}
    assert len(shown) > 1 and "".join(shown) == text == response.text
    (call,) = response.tool_calls
    assert (call.name, call.input) == ("write_file", {"path": "a.txt", "content": "x" * 50})
    assert response.usage == logged_usage(entry) and response.usage.output_tokens > 1


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_long_max_tokens_call_goes_through(kind: str) -> None:
    with LocalAPIServer(["long"], api_key=KEY) as server:
        long = replace(request(), model="claude-opus-4-1-20250805", max_tokens=64_000)
        assert provider(kind, server).complete(long).text == "long"
    assert server.requests[0]["max_tokens"] == 64_000
    if kind == "anthropic":  # what streaming avoids: the SDK refuses it unstreamed
        sdk = anthropic.Anthropic(api_key=KEY, base_url=server.url)
        with pytest.raises(ValueError, match="Streaming is required"):
            sdk.messages.create(model=long.model, max_tokens=64_000, messages=CONVERSATION[:1])


def test_tool_arguments_sent_as_an_object_are_accepted(tmp_path: Path) -> None:
    reply = Reply("", [("write_file", {"path": "a.txt", "content": "hi\n"})])
    with LocalAPIServer([reply], api_key=KEY, faults=[Fault("object_args")]) as server:
        response = provider("openai", server).complete(request())
    assert server.requests[0]["fault"] == "object_args"
    (call,) = response.tool_calls
    assert call.input == {"path": "a.txt", "content": "hi\n"}
    assert not Toolbox(tmp_path).call(call.name, call.input).is_error
    assert (tmp_path / "a.txt").read_text() == "hi\n"


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_stream_cut_off_is_malformed_and_keeps_the_usage_it_carried(kind: str) -> None:
    with LocalAPIServer(["whole"], api_key=KEY, faults=[Fault("malformed")]) as server:
        model = provider(kind, server)
        with pytest.raises(RetryableError) as caught:
            model.complete(request())
        assert model.complete(request()).text == "whole"  # the reply was kept for the retry
    exc = caught.value
    assert exc.malformed and "malformed response from the API server" in str(exc)
    assert "ended before" in str(exc)
    entry = server.requests[0]
    if kind == "anthropic":  # message_start came through: the input is billed and booked
        assert exc.usage == replace(logged_usage(entry), output_tokens=1)
    else:  # OpenAI reports usage only in the last chunk
        assert exc.usage is None
