"""The forkserver's warm-up goes through each real SDK's whole path, parse included,
against the warm-up module's own responder (not the test server)."""

from __future__ import annotations

from orchestrator.providers.anthropic import AnthropicProvider
from orchestrator.providers.openai import OpenAIProvider
from orchestrator.providers.warmup import KEY, responder, warm


def test_each_sdk_parses_the_canned_answer() -> None:
    with responder() as url:
        answers = [
            warm(AnthropicProvider("claude-haiku-4-5", KEY, base_url=url)),
            warm(OpenAIProvider("gpt-4o-mini", KEY, base_url=url + "/v1")),
        ]
    for answer in answers:
        assert answer is not None
        assert [(c.name, c.input) for c in answer.tool_calls] == [("finish", {"summary": "-"})]
        assert (answer.usage.input_tokens, answer.usage.output_tokens) == (1, 1)


def test_a_real_run_never_imports_the_test_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, orchestrator.providers.prewarm, orchestrator.engine.coordinator, "
        "orchestrator.cli.run; print(sorted(m for m in sys.modules if 'testing' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
