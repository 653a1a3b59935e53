"""The local API server, driven by the real anthropic and openai SDKs over loopback."""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from orchestrator.errors import BadInput
from orchestrator.testing.apiserver import (
    Fault,
    LocalAPIServer,
    Reply,
    go_duration,
    load_replies,
    max_window_usage,
    parse_go_duration,
)

KEY = "test-key"
USER = [{"role": "user", "content": "hello"}]
SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
    "required": ["path", "content"],
}
WRITE = {"name": "write_file", "description": "Write a file.", "input_schema": SCHEMA}
FINISH = {"name": "finish", "description": "Finish.", "input_schema": {"type": "object"}}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}
    for t in (WRITE, FINISH)
]
SYSTEM_TEXT = "You are a careful engineer. " * 40


def claude(server: LocalAPIServer, key: str = KEY, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=server.url, max_retries=0, **kw)


def gpt(server: LocalAPIServer, key: str = KEY, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0, **kw)


def ask_claude(client: anthropic.Anthropic, text: str = "hello", **kw: Any) -> Any:
    args: dict[str, Any] = {"model": "claude-test", "max_tokens": 200}
    args.update(kw)
    return client.messages.create(messages=[{"role": "user", "content": text}], **args)


def ask_gpt(client: openai.OpenAI, text: str = "hello", **kw: Any) -> Any:
    args: dict[str, Any] = {"model": "gpt-test", "max_completion_tokens": 200}
    args.update(kw)
    return client.chat.completions.create(messages=[{"role": "user", "content": text}], **args)


def quarter(value: Any) -> int:
    return math.ceil(len(json.dumps(value)) / 4)


# ---- shapes the SDKs parse -----------------------------------------------------------


def test_anthropic_sdk_parses_text_and_tool_use() -> None:
    reply = Reply("Writing.", [("write_file", {"path": "a.txt", "content": "A"})])
    with LocalAPIServer([reply]) as server:
        message = ask_claude(claude(server), system="Be brief.", tools=[WRITE])
        body = server.requests[0]["body"]
    assert isinstance(message, anthropic.types.Message)
    text, call = message.content
    assert isinstance(text, anthropic.types.TextBlock) and text.text == "Writing."
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert (call.name, call.input) == ("write_file", {"path": "a.txt", "content": "A"})
    assert call.id.startswith("toolu_") and message.id.startswith("msg_")
    assert message.stop_reason == "tool_use" and message.role == "assistant"
    prompt = {"system": body["system"], "messages": body["messages"], "tools": body["tools"]}
    assert message.usage.input_tokens == quarter(prompt)
    assert message.usage.output_tokens == math.ceil(len(reply.content_json()) / 4)
    assert message.usage.cache_read_input_tokens == 0


def test_openai_sdk_parses_tool_calls() -> None:
    reply = Reply("", [("write_file", {"path": "a.txt", "content": "A"}), ("finish", {})])
    with LocalAPIServer([reply]) as server:
        completion = ask_gpt(gpt(server), tools=OPENAI_TOOLS)
        body = server.requests[0]["body"]
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    first, second = choice.message.tool_calls
    assert first.function.name == "write_file" and first.id.startswith("call_")
    assert json.loads(first.function.arguments) == {"path": "a.txt", "content": "A"}
    assert second.function.name == "finish" and second.id != first.id
    usage = completion.usage
    assert usage.prompt_tokens == quarter({"messages": body["messages"], "tools": body["tools"]})
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_replies_are_shared_in_order_then_ok_and_may_be_a_callable() -> None:
    with LocalAPIServer(["first", Reply("second")]) as server:
        assert ask_claude(claude(server)).content[0].text == "first"
        assert ask_gpt(gpt(server)).choices[0].message.content == "second"
        assert ask_claude(claude(server)).content[0].text == "ok"
    seen: list[str] = []

    def answer(api: str, body: dict) -> Reply:
        seen.append(api)
        return Reply(f"{api} saw {len(body['messages'])} message(s)")

    with LocalAPIServer(answer) as server:
        assert ask_gpt(gpt(server)).choices[0].message.content == "openai saw 1 message(s)"
        assert ask_claude(claude(server)).content[0].text == "anthropic saw 1 message(s)"
    assert seen == ["openai", "anthropic"]
    broken = LocalAPIServer(lambda api, body: 1 / 0)  # a broken script: a 500, not a hang
    with broken, pytest.raises(anthropic.InternalServerError, match="ZeroDivisionError"):
        ask_claude(claude(broken))


def test_tool_results_round_trip_and_bad_pairings_get_the_apis_400() -> None:
    with LocalAPIServer([Reply(tool_calls=[("finish", {"summary": "x"})])]) as server:
        client = claude(server)
        call = ask_claude(client, tools=[FINISH]).content[0]
        turn = [
            {"role": "user", "content": "hello"},
            {
                "role": "assistant",
                "content": [call.model_dump(include={"type", "id", "name", "input"})],
            },
        ]
        ok = [{"type": "tool_result", "tool_use_id": call.id, "content": "done"}]
        assert (
            client.messages.create(
                model="m",
                max_tokens=10,
                tools=[FINISH],
                messages=[*turn, {"role": "user", "content": ok}],
            )
            .content[0]
            .text
            == "ok"
        )
        wrong = [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "done"}]
        with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
            client.messages.create(
                model="m", max_tokens=10, messages=[*turn, {"role": "user", "content": wrong}]
            )
        with pytest.raises(openai.BadRequestError, match="role 'tool' must be a response"):
            gpt(server).chat.completions.create(
                model="m", messages=[*USER, {"role": "tool", "tool_call_id": "x", "content": "y"}]
            )
    assert [r["status"] for r in server.requests] == [200, 200, 400, 400]


# ---- auth, headers, limits -----------------------------------------------------------


def test_wrong_key_gets_each_apis_real_401_body() -> None:
    with LocalAPIServer() as server:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            ask_claude(claude(server, key="wrong-key-0123456789"))
        assert caught.value.body["error"] == {
            "type": "authentication_error",
            "message": "invalid x-api-key",
        }
        with pytest.raises(openai.AuthenticationError) as bad:
            ask_gpt(gpt(server, key="wrong-key-0123456789"))
        assert bad.value.code == "invalid_api_key"
        assert "Incorrect API key provided" in bad.value.message
        assert "wrong-key-0123456789" not in bad.value.message
        ask_claude(claude(server))
    assert [r["api_key_ok"] for r in server.requests] == [False, False, True]
    assert [r["status"] for r in server.requests] == [401, 401, 200]


def test_rate_limit_headers_are_present_and_parseable() -> None:
    limits = {"requests": 10, "input_tokens": 10_000, "output_tokens": 2_000, "window": 30}
    with LocalAPIServer(limits=limits) as server:
        raw = claude(server).messages.with_raw_response.create(
            model="m", max_tokens=50, messages=USER
        )
        first = server.requests[0]
        h = raw.headers
        assert h["anthropic-ratelimit-requests-limit"] == "10"
        assert h["anthropic-ratelimit-requests-remaining"] == "9"
        remaining = 10_000 - first["counted_input"]
        assert h["anthropic-ratelimit-input-tokens-remaining"] == str(remaining)
        assert h["anthropic-ratelimit-output-tokens-limit"] == "2000"
        reset = datetime.fromisoformat(h["anthropic-ratelimit-requests-reset"])
        assert 0 < (reset - datetime.now(UTC)).total_seconds() <= 30.5  # within the window
        # tokens-*: the most restrictive of the token buckets (here the output one).
        left = 2_000 - first["output_tokens"]
        assert (
            h["anthropic-ratelimit-tokens-limit"],
            h["anthropic-ratelimit-tokens-remaining"],
        ) == (
            "2000",
            str(left),
        )
        raw = gpt(server).chat.completions.with_raw_response.create(model="m", messages=USER)
        h = raw.headers
        # Each API has its own windows: the Anthropic call above does not count here.
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("10", "9")
        assert h["x-ratelimit-limit-tokens"] == "12000"
        used = server.requests[1]["counted_input"] + server.requests[1]["output_tokens"]
        assert int(h["x-ratelimit-remaining-tokens"]) == 12_000 - used
        assert 0 < parse_go_duration(h["x-ratelimit-reset-requests"]) <= 30


def test_rate_limit_headers_are_there_even_without_configured_limits() -> None:
    with LocalAPIServer() as server:
        h = (
            claude(server)
            .messages.with_raw_response.create(model="m", max_tokens=50, messages=USER)
            .headers
        )
        for bucket in ("requests", "tokens", "input-tokens", "output-tokens"):
            for part in ("limit", "remaining", "reset"):
                assert h[f"anthropic-ratelimit-{bucket}-{part}"], (bucket, part)
        assert int(h["anthropic-ratelimit-requests-remaining"]) == (
            int(h["anthropic-ratelimit-requests-limit"]) - 1
        )
        h = gpt(server).chat.completions.with_raw_response.create(model="m", messages=USER).headers
        for bucket in ("requests", "tokens"):
            for part in ("limit", "remaining", "reset"):
                assert h[f"x-ratelimit-{part}-{bucket}"], (bucket, part)
        assert int(h["x-ratelimit-remaining-requests"]) == (
            int(h["x-ratelimit-limit-requests"]) - 1
        )


def test_sliding_window_limits_refuse_with_429_and_no_window_overflows() -> None:
    limits = {"requests": 6, "output_tokens": 40, "window": 0.5}
    refused: list[float] = []
    with LocalAPIServer([Reply("x", output_tokens=5)] * 200, limits=limits) as server:
        client = claude(server)

        def hammer() -> None:
            for _ in range(15):
                try:
                    ask_claude(client)
                except anthropic.RateLimitError as exc:
                    refused.append(exc.response.headers["retry-after"])
                    assert exc.body["error"]["type"] == "rate_limit_error"

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    log = server.requests
    accepted = [r for r in log if r["status"] == 200]
    assert len(log) == 60 and refused and len(accepted) + len(refused) == 60
    assert set(refused) == {"1"}  # whole seconds, rounded up, as the real APIs send
    assert all(0 < r["retry_after"] <= 0.5 for r in log if r["status"] == 429)
    usage = max_window_usage(log, 0.5)
    assert usage["requests"] <= 6 and usage["output_tokens"] <= 40
    assert usage["requests"] == 6  # the limit was reached, so the check above means something
    assert sorted(r["index"] for r in log) == list(range(60))


def test_retry_after_is_when_the_request_fits_and_input_counts_cache_writes() -> None:
    with LocalAPIServer(limits={"input_tokens": 60, "window": 1.0}) as server:
        client = claude(server)
        ask_claude(client, "a" * 100)  # about 40 tokens
        with pytest.raises(anthropic.RateLimitError) as caught:
            ask_claude(client, "b" * 100)
        wait = float(caught.value.response.headers["retry-after"])
        assert wait == 1.0  # the window is 1 s: whole seconds never tell less than that
        time.sleep(wait)
        ask_claude(client, "c" * 100)
        with pytest.raises(anthropic.RateLimitError, match="60 input tokens per 1 seconds"):
            ask_claude(client, "d" * 400)  # can never fit: wait a whole window
    assert [r["status"] for r in server.requests] == [200, 429, 200, 429]
    assert 0.5 < server.requests[1]["retry_after"] <= wait
    assert max_window_usage(server.requests, 1.0)["input_tokens"] <= 60


def test_max_window_usage_counts_accepted_requests_only() -> None:
    def entry(t: float, status: int = 200, inp: int = 10, out: int = 1) -> dict:
        return {"arrived": t, "status": status, "counted_input": inp, "output_tokens": out}

    log = [entry(0.0), entry(0.5), entry(0.9, 429), entry(1.0), entry(1.2, inp=50), entry(3.0)]
    assert max_window_usage(log, 1.0) == {"requests": 3, "input_tokens": 70, "output_tokens": 3}
    assert max_window_usage(log, 0.1) == {"requests": 1, "input_tokens": 50, "output_tokens": 1}
    assert max_window_usage([], 1.0) == {"requests": 0, "input_tokens": 0, "output_tokens": 0}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3723, "1h2m3s"), (0, "0s")],
)
def test_openai_reset_durations_read_like_openais(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
    assert parse_go_duration(text) == pytest.approx(seconds)


# ---- usage numbers -------------------------------------------------------------------


def test_anthropic_prompt_caching_writes_then_reads_the_marked_prefix() -> None:
    system = [{"type": "text", "text": SYSTEM_TEXT, "cache_control": {"type": "ephemeral"}}]
    tools = [WRITE, {**FINISH, "cache_control": {"type": "ephemeral"}}]
    with LocalAPIServer() as server:
        client = claude(server)
        first = ask_claude(client, "one", system=system, tools=tools).usage
        second = ask_claude(client, "two, longer", system=system, tools=tools).usage
        plain = ask_claude(client, "three", system=SYSTEM_TEXT).usage
    prefix = math.ceil(sum(len(json.dumps(block)) for block in [*tools, *system]) / 4)
    assert first.cache_creation_input_tokens == prefix > 250
    assert (first.cache_read_input_tokens, second.cache_creation_input_tokens) == (0, 0)
    assert second.cache_read_input_tokens == prefix
    body = server.requests[0]["body"]
    whole = quarter({"system": body["system"], "messages": body["messages"], "tools": tools})
    assert first.input_tokens == whole - prefix  # input excludes the cache, as Anthropic does
    assert plain.cache_read_input_tokens == plain.cache_creation_input_tokens == 0
    log = server.requests
    assert log[0]["counted_input"] == whole  # the limit counts input + cache writes
    assert log[1]["counted_input"] == log[1]["input_tokens"]  # ... but not cache reads
    assert (log[1]["cache_read"], log[0]["cache_write"]) == (prefix, prefix)


def test_openai_reports_cached_tokens_inside_prompt_tokens() -> None:
    system = {"role": "system", "content": SYSTEM_TEXT}
    with LocalAPIServer() as server:
        client = gpt(server)
        args = {"model": "gpt-test", "tools": OPENAI_TOOLS}
        first = client.chat.completions.create(messages=[system, *USER], **args).usage
        second = client.chat.completions.create(
            messages=[system, {"role": "user", "content": "something else"}], **args
        ).usage
    assert first.prompt_tokens_details.cached_tokens == 0
    cached = second.prompt_tokens_details.cached_tokens
    assert cached >= quarter(system) and cached < second.prompt_tokens
    body = server.requests[1]["body"]
    assert second.prompt_tokens == quarter({"messages": body["messages"], "tools": body["tools"]})
    assert server.requests[1]["input_tokens"] == second.prompt_tokens - cached  # pd's Usage
    assert server.requests[1]["counted_input"] == second.prompt_tokens


def test_output_mode_max_always_spends_max_tokens() -> None:
    with LocalAPIServer(output_mode="max") as server:
        assert ask_claude(claude(server), max_tokens=321).usage.output_tokens == 321
        assert ask_gpt(gpt(server), max_completion_tokens=123).usage.completion_tokens == 123
        assert (
            ask_gpt(gpt(server), max_completion_tokens=None, max_tokens=77).usage.completion_tokens
            == 77
        )
    with LocalAPIServer([Reply("x", output_tokens=500)]) as server:
        assert ask_claude(claude(server), max_tokens=100).usage.output_tokens == 100  # capped


def test_extra_input_tokens_are_billed_and_counted_on_top_of_the_prompt() -> None:
    with LocalAPIServer(["a", Reply("b", extra_input_tokens=5000)]) as server:
        plain = ask_claude(claude(server)).usage.input_tokens
        assert ask_claude(claude(server)).usage.input_tokens == plain + 5000
    assert server.requests[1]["counted_input"] == server.requests[0]["counted_input"] + 5000
    with LocalAPIServer([{"text": "c", "extra_input_tokens": 7}, "d"]) as server:
        padded, plain = (ask_gpt(gpt(server)).usage.prompt_tokens for _ in range(2))
    assert padded == plain + 7


# ---- faults --------------------------------------------------------------------------


def test_injected_faults_have_the_real_shapes() -> None:
    faults = [Fault("429", retry_after=1.5), Fault("529"), Fault("500"), Fault("400")]
    faults += [Fault("spend_limit"), Fault("529"), Fault("spend_limit"), Fault("malformed")]
    with LocalAPIServer(["kept"], faults=faults) as server:
        client, other = claude(server), gpt(server)
        with pytest.raises(anthropic.RateLimitError) as limited:
            ask_claude(client)
        assert limited.value.response.headers["retry-after"] == "2"  # whole seconds, up
        assert "retry-after-ms" not in limited.value.response.headers
        with pytest.raises(anthropic.InternalServerError) as overloaded:
            ask_claude(client)
        assert overloaded.value.status_code == 529
        assert overloaded.value.body["error"]["type"] == "overloaded_error"
        with pytest.raises(anthropic.InternalServerError, match="Internal server error"):
            ask_claude(client)
        with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
            ask_claude(client)
        with pytest.raises(anthropic.RateLimitError) as spend:
            ask_claude(client)
        assert spend.value.error_code == "enforced_spend_limit_reached"
        assert "API usage limits" in spend.value.body["error"]["message"]
        with pytest.raises(openai.InternalServerError) as busy:
            ask_gpt(other)
        assert busy.value.status_code == 503
        with pytest.raises(openai.RateLimitError) as quota:
            ask_gpt(other)
        assert quota.value.code == "insufficient_quota"
        with pytest.raises(ValueError):  # broken JSON in a 200
            ask_gpt(other)
        assert ask_gpt(other).choices[0].message.content == "kept"  # malformed kept the reply
    statuses = [r["status"] for r in server.requests]
    assert statuses == [429, 529, 500, 400, 429, 503, 429, 200, 200]
    assert [r["fault"] for r in server.requests][:2] == ["429", "529"]
    assert server.requests[0]["retry_after"] == 1.5


def test_slow_fault_outlasts_a_client_timeout() -> None:
    with LocalAPIServer(
        faults=lambda i, api, body: Fault("slow", delay=1.0) if i == 0 else None
    ) as s:
        with pytest.raises(openai.APITimeoutError):  # it gave up before the answer came
            ask_gpt(gpt(s, timeout=0.2))
        assert ask_gpt(gpt(s)).choices[0].message.content == "ok"


# ---- streaming -----------------------------------------------------------------------


def test_anthropic_streams_the_events_the_real_api_sends() -> None:
    text = "Streaming text comes in pieces."
    reply = Reply(text, [("write_file", {"path": "a.txt", "content": "hi"})])
    with LocalAPIServer([reply]) as server:
        stream = claude(server).messages.create(
            model="claude-test", max_tokens=200, messages=USER, tools=[WRITE], stream=True
        )
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert "".join(d.text for d in deltas if d.type == "text_delta") == text
    tool_json = "".join(d.partial_json for d in deltas if d.type == "input_json_delta")
    assert json.loads(tool_json) == {"path": "a.txt", "content": "hi"}
    assert sum(d.type == "text_delta" for d in deltas) > 1  # in pieces, not at once
    start, end = events[0].message.usage, events[-2].usage
    entry = server.requests[0]
    assert start.input_tokens == entry["input_tokens"] and start.output_tokens == 1
    assert (
        end.output_tokens == entry["output_tokens"] and events[-2].delta.stop_reason == "tool_use"
    )
    assert entry["stream"] is True


def test_openai_streams_chunks_with_tool_call_deltas_and_usage_last() -> None:
    reply = Reply("Hi.", [("write_file", {"path": "a.txt", "content": "hi"})])
    with LocalAPIServer([reply]) as server:
        stream = gpt(server).chat.completions.create(
            model="gpt-test",
            messages=USER,
            tools=OPENAI_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    *body, last = chunks
    assert (
        last.choices == [] and last.usage.completion_tokens == server.requests[0]["output_tokens"]
    )
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "tool_calls"
    deltas = [c.choices[0].delta for c in body]
    assert "".join(d.content or "" for d in deltas) == "Hi."
    calls = [t for d in deltas for t in d.tool_calls or []]
    assert calls[0].id and calls[0].function.name == "write_file"
    arguments = "".join(t.function.arguments or "" for t in calls)
    assert json.loads(arguments) == {"path": "a.txt", "content": "hi"} and len(calls) > 2


def test_a_malformed_stream_is_cut_off_halfway() -> None:
    with LocalAPIServer(faults=[Fault("malformed")]) as server:
        events = list(
            claude(server).messages.create(model="m", max_tokens=50, messages=USER, stream=True)
        )
    assert events[0].type == "message_start" and "message_stop" not in [e.type for e in events]


# ---- models and token counts ---------------------------------------------------------


def test_an_unknown_model_is_a_404_in_each_apis_shape() -> None:
    with LocalAPIServer(models=["claude-test", "gpt-test"]) as server:
        with pytest.raises(anthropic.NotFoundError) as lost:
            ask_claude(claude(server), model="claude-nonesuch")
        assert lost.value.body["error"] == {
            "type": "not_found_error",
            "message": "model: claude-nonesuch",
        }
        with pytest.raises(openai.NotFoundError) as missing:
            ask_gpt(gpt(server), model="gpt-nonesuch")
        assert missing.value.code == "model_not_found"
        assert "The model `gpt-nonesuch` does not exist" in missing.value.message
        assert ask_claude(claude(server)).content[0].text == "ok"
    assert [r["status"] for r in server.requests] == [404, 404, 200]


def test_models_are_listed_in_each_apis_shape_and_tokens_counted() -> None:
    with LocalAPIServer(models=["claude-test", "gpt-test"]) as server:
        listed = claude(server).models.list()
        assert [m.id for m in listed.data] == ["claude-test", "gpt-test"]
        assert listed.data[0].type == "model"
        assert [m.id for m in gpt(server).models.list()] == ["claude-test", "gpt-test"]
        counted = claude(server).messages.count_tokens(model="claude-test", messages=USER)
        answered = ask_claude(claude(server))
    assert counted.input_tokens == answered.usage.input_tokens > 0
    assert max_window_usage(server.requests, 60)["requests"] == 1  # only the real call
    assert [r["path"] for r in server.requests][:3] == [
        "/v1/models",
        "/v1/models",
        "/v1/messages/count_tokens",
    ]


@pytest.mark.parametrize("chars_per_token", [4.0, 1.0])
def test_a_token_count_is_what_the_same_prompt_is_then_billed(chars_per_token: float) -> None:
    """Cache breakpoints, tools and a denser tokenizer included: the count is the prompt
    the call then bills, whether written to the cache (first call) or read from it."""
    system = [{"type": "text", "text": SYSTEM_TEXT, "cache_control": {"type": "ephemeral"}}]
    tools = [WRITE, {**FINISH, "cache_control": {"type": "ephemeral"}}]
    prompt = {"system": system, "tools": tools, "messages": [{"role": "user", "content": "go"}]}
    with LocalAPIServer(["a", "b"], chars_per_token=chars_per_token) as server:
        client = claude(server)
        counted = client.messages.count_tokens(model="claude-test", **prompt).input_tokens
        billed = [client.messages.create(model="claude-test", max_tokens=50, **prompt).usage]
        billed.append(client.messages.create(model="claude-test", max_tokens=50, **prompt).usage)
    totals = [
        u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens for u in billed
    ]
    assert totals == [counted, counted]
    assert billed[0].cache_creation_input_tokens > 0 and billed[1].cache_read_input_tokens > 0
    assert counted == math.ceil(len(json.dumps(prompt)) / chars_per_token)


def test_count_faults_fail_token_counts_and_leave_the_model_calls_faults_in_place() -> None:
    """A count is not a model call: ``faults`` stay numbered by model call, counts get theirs."""
    with LocalAPIServer(
        ["answered"], faults=[None, Fault("529")], count_faults=[Fault("500"), None]
    ) as server:
        client = claude(server)
        with pytest.raises(anthropic.InternalServerError) as failed:
            client.messages.count_tokens(model="claude-test", messages=USER)
        assert failed.value.status_code == 500
        assert failed.value.body["error"]["type"] == "api_error"
        assert ask_claude(client).content[0].text == "answered"  # model call 0: no fault
        assert client.messages.count_tokens(model="claude-test", messages=USER).input_tokens
        with pytest.raises(anthropic.InternalServerError):  # model call 1: its 529
            ask_claude(client)
    assert [(r["path"], r["status"]) for r in server.requests] == [
        ("/v1/messages/count_tokens", 500),
        ("/v1/messages", 200),
        ("/v1/messages/count_tokens", 200),
        ("/v1/messages", 529),
    ]
    assert [r["index"] for r in server.calls] == [1, 3]


def test_each_api_has_its_own_rate_limit_windows() -> None:
    with LocalAPIServer(limits={"requests": 1, "window": 60}) as server:
        ask_claude(claude(server))
        ask_gpt(gpt(server))  # the Anthropic call does not use up OpenAI's window
        with pytest.raises(anthropic.RateLimitError):
            ask_claude(claude(server))
        with pytest.raises(openai.RateLimitError):
            ask_gpt(gpt(server))
    assert [r["status"] for r in server.requests] == [200, 200, 429, 429]


# ---- transport -----------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    with LocalAPIServer(["a", "b"]) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        body = json.dumps({"model": "m", "max_tokens": 5, "messages": USER})
        texts, sockets = [], []
        for _ in range(2):
            conn.request("POST", "/v1/messages", body, {"x-api-key": KEY})
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("connection") != "close"
            texts.append(json.loads(response.read())["content"][0]["text"])
            sockets.append(conn.sock)
        conn.request("GET", "/v1/nothing", headers={"x-api-key": KEY})
        missing = conn.getresponse()
        assert missing.status == 404 and json.loads(missing.read())["type"] == "error"
        conn.close()
    assert texts == ["a", "b"] and sockets[0] is sockets[1] is not None


def test_standalone_server_from_the_command_line(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps([{"text": "from file", "tool_calls": [{"name": "finish"}]}]))
    cmd = [sys.executable, "-m", "orchestrator.testing.apiserver", "--port", "0", "--api-key", "k1"]
    cmd += ["--limits", "requests=3,window=60", "--replies", str(replies)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), proc.stderr.read()
        url = line.split()[2]
        client = openai.OpenAI(api_key="k1", base_url=url + "/v1", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="m", messages=USER)
        message = raw.parse().choices[0].message
        assert message.content == "from file" and message.tool_calls[0].function.name == "finish"
        assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_the_command_line_injects_faults_and_serves_only_its_models(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    write = {"name": "write_file", "input": {"path": "a", "content": "b"}}
    replies.write_text(json.dumps([{"text": "first"}, {"tool_calls": [write]}]))
    cmd = [sys.executable, "-m", "orchestrator.testing.apiserver", "--port", "0", "--api-key", "k1"]
    cmd += ["--faults", "500*2,ok,object_args", "--models", "gpt-test", "--replies", str(replies)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[2]
        client = openai.OpenAI(api_key="k1", base_url=url + "/v1", max_retries=0)
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="gpt-test", messages=USER)
        first = client.chat.completions.create(model="gpt-test", messages=USER)
        assert first.choices[0].message.content == "first"
        raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=USER)
        (call,) = json.loads(raw.http_response.text)["choices"][0]["message"]["tool_calls"]
        assert call["function"]["arguments"] == {"path": "a", "content": "b"}  # an object
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-other", messages=USER)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_the_command_line_fails_token_counts_and_tokenizes_densely() -> None:
    cmd = [sys.executable, "-m", "orchestrator.testing.apiserver", "--port", "0"]
    cmd += ["--count-faults", "500,ok", "--chars-per-token", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[2]
        client = anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0)
        with pytest.raises(anthropic.InternalServerError):
            client.messages.count_tokens(model="claude-test", messages=USER)
        counted = client.messages.count_tokens(model="claude-test", messages=USER)
        billed = ask_claude(client).usage
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    prompt = {"system": None, "messages": USER, "tools": []}
    assert counted.input_tokens == billed.input_tokens == len(json.dumps(prompt))


@pytest.mark.parametrize(
    ("spec", "problem"),
    [("boom", "unknown fault 'boom'"), ("500*,ok", "must come last"), ("500*x", "not a number")],
)
def test_a_bad_fault_spec_is_one_line_and_exit_2(spec: str, problem: str) -> None:
    cmd = [sys.executable, "-m", "orchestrator.testing.apiserver", "--faults", spec]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and problem in result.stderr.splitlines()[-1]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"text": "a list was meant"}', "replies must be a JSON list"),
        ("[1, 2", "not JSON"),
        ('[{"tool_calls": [{"input": {}}]}]', "reply 1"),
    ],
)
def test_a_bad_replies_file_is_a_bad_input_naming_the_file(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "replies.json"
    path.write_text(content)
    with pytest.raises(BadInput, match=problem) as err:
        load_replies(path)
    assert str(path) in str(err.value) and "(fix: " in str(err.value)
    with pytest.raises(BadInput, match="does not exist"):
        load_replies(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("limits", "problem"), [({"tokens": 5}, "unknown limits"), ({"window": 0}, "window")]
)
def test_bad_limits_are_a_bad_input_saying_what_is_known(
    limits: dict[str, float], problem: str
) -> None:
    with pytest.raises(BadInput, match=problem) as err:
        LocalAPIServer(limits=limits)
    assert "(fix: " in str(err.value)


def test_a_bad_replies_file_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "replies.json"
    path.write_text("{}")
    cmd = [sys.executable, "-m", "orchestrator.testing.apiserver", "--replies", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}: replies must be a JSON list (fix: write a list of replies, "
        'e.g. [{"text": "done"}])'
    ]
