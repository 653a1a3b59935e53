"""The agent loop: ask the model, run the tools it asks for, repeat until ``finish``.

The loop knows nothing about processes, money or git: the worker wraps it with
permits, budgets and commits. Everything it sees and does goes to ``record`` as
JSON-serialisable dicts, so a transcript can explain any attempt after the fact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.providers.base import ModelRequest, ModelResponse, Provider, ToolCall, Usage
from orchestrator.team.tools import Toolbox, ToolResult

NUDGE = "Use a tool, or call finish with a summary."
CONTEXT_SHARE = 0.8  # of the model's window: room left for the next turn's tool output
SKIPPED = "not run: finish was called earlier in this turn"
TEXT_ONLY_LIMIT = 3  # text-only turns in a row that end an attempt: the model is not working


@dataclass
class AgentResult:
    """How an attempt ended; ``handoff`` briefs the next attempt when it did not finish."""

    finished: bool
    summary: str
    turns: int
    usage: Usage = field(default_factory=Usage)
    reason: str = ""
    handoff: str = ""
    # Tools offered by the end (discover_skills may add some) and tools called, in order
    # of first call; ``finish`` is left out of both.
    skills_offered: list[str] = field(default_factory=list)
    skills_used: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None  # the ending tool's input (a plan, a review)

    def skill_use(self) -> dict[str, list[str]]:
        """What the attempt's message reports for ``pd report``."""
        return {"offered": self.skills_offered, "used": self.skills_used}


def run_agent(
    provider: Provider,
    toolbox: Toolbox,
    *,
    system: str,
    prompt: str,
    model: str,
    max_tokens: int,
    max_turns: int,
    task_id: str,
    attempt: int,
    record: Callable[[dict[str, Any]], None] = lambda e: None,
    on_tool: Callable[[str], None] = lambda s: None,
    should_stop: Callable[[], bool] = lambda: False,
    context_limit: int | None = None,
    on_text: Callable[[str], None] | None = None,
) -> AgentResult:
    """Run one attempt. ProviderError propagates: the caller decides retry or fail.

    With ``context_limit`` (the model's input window in tokens), an attempt whose prompt
    has grown past ``CONTEXT_SHARE`` of it ends with a handoff note instead of failing
    on the next call; the next attempt starts fresh from that note. A model that answers
    ``TEXT_ONLY_LIMIT`` turns in a row without calling a tool ends the attempt, so the
    reason says so instead of a turn limit reached by nudges. ``on_text`` gets the
    reply's text as it streams in (providers that stream call it per delta).
    """
    messages: list[dict[str, Any]] = [_user([{"type": "text", "text": prompt}])]
    usage, last_text, sent, shown, idle = Usage(), "", 0, None, 0
    for turn in range(1, max_turns + 1):
        if should_stop():
            return _ended("aborted", turn - 1, usage, toolbox, last_text, record)
        tools = toolbox.specs()  # every turn: discover_skills may have added tools
        request = ModelRequest(
            system, list(messages), tools, max_tokens, model, task_id, attempt, on_text=on_text
        )
        record(_request_record(request, turn, messages[sent:], tools != shown))
        sent, shown = len(messages), tools
        response = provider.complete(request)
        if on_text is not None:
            on_text("\n")  # the answer is over: its last line is whole
        record({"kind": "response", "turn": turn, **response.to_dict()})
        usage += response.usage
        last_text = response.text or last_text
        messages.append(response.to_message())
        if not response.tool_calls:
            idle += 1
            if idle >= TEXT_ONLY_LIMIT:
                reason = f"the model answered {idle} turns in a row without calling a tool"
                return _ended(reason, turn, usage, toolbox, last_text, record)
            messages.append(_user([{"type": "text", "text": NUDGE}]))
            continue
        idle = 0
        results, done = _run_tools(toolbox, response, turn, record, on_tool)
        messages.append(_user(results))
        if done is not None:
            offered, used = skill_use(toolbox)
            result = AgentResult(
                True,
                done.summary,
                turn,
                usage,
                skills_offered=offered,
                skills_used=used,
                final=done.final,
            )
            end = {"kind": "end", "finished": True, "turns": turn, "usage": usage.to_dict()}
            record({**end, "skills_offered": offered, "skills_used": used})
            return result
        if context_limit and _prompt_size(response) > CONTEXT_SHARE * context_limit:
            reason = f"context window nearly full ({_prompt_size(response)} of {context_limit})"
            return _ended(reason, turn, usage, toolbox, last_text, record)
    reason = f"turn limit ({max_turns}) reached"
    return _ended(reason, max_turns, usage, toolbox, last_text, record)


def _run_tools(
    toolbox: Toolbox,
    response: ModelResponse,
    turn: int,
    record: Callable[[dict[str, Any]], None],
    on_tool: Callable[[str], None],
) -> tuple[list[dict[str, Any]], ToolResult | None]:
    """Run the turn's calls in order; every tool_use gets a tool_result, as APIs require."""
    blocks: list[dict[str, Any]] = []
    done: ToolResult | None = None
    for call in response.tool_calls:
        refused = ""
        if done is not None:
            result, refused = ToolResult(SKIPPED, is_error=True), "skipped"
        elif not toolbox.knows(call.name):
            result, refused = toolbox.call(call.name, call.input), "unknown tool"
            on_tool(f"refused unknown tool {_short(call.name)!r}")
        else:
            on_tool(describe_call(call))
            result = toolbox.call(call.name, call.input)
            if result.finished:
                done = result
        entry = {
            "kind": "tool",
            "turn": turn,
            "id": call.id,
            "name": call.name,
            "input": call.input,
            "result": result.content,
            "is_error": result.is_error,
        }
        record({**entry, "refused": refused} if refused else entry)
        blocks.append(
            {
                "type": "tool_result",
                "tool_use_id": call.id,
                "content": result.content,
                "is_error": result.is_error,
            }
        )
    return blocks, done


def describe_call(call: ToolCall) -> str:
    """One short progress line, e.g. ``write_file src/x.py`` or ``run_command: pytest -q``."""
    args = call.input if isinstance(call.input, dict) else {}
    if call.name == "run_command":
        line = f"run_command: {args.get('command', '')}"
    elif call.name in ("search_files", "search_code"):
        line = f"search_files {args.get('pattern', '')!r} in {args.get('path', '.')}"
    elif call.name == "finish":
        line = "finish"
    elif call.name == "submit_plan":
        line = f"submit_plan: {len(args.get('tasks') or [])} tasks"
    elif call.name == "submit_review":
        line = f"submit_review: {args.get('verdict', '')}"
    else:
        line = f"{call.name} {args.get('path', '.')}"
    line = " ".join(line.split())
    return line if len(line) <= 120 else line[:117] + "..."


def _short(name: str) -> str:
    """A tool name as the model gave it, cut to fit a progress line."""
    name = " ".join(str(name).split())
    return name if len(name) <= 60 else name[:57] + "..."


def build_handoff(reason: str, turns: int, touched: Iterable[str], last_text: str) -> str:
    """A short note for the next attempt: why this one stopped, what it changed, last words."""
    files = ", ".join(sorted(touched)) or "none"
    note = " ".join(last_text.split())
    if len(note) > 600:
        note = note[:597] + "..."
    lines = [
        f"The previous attempt stopped ({reason}) after {turns} turns without calling finish.",
        f"Files it touched: {files}",
    ]
    if note:
        lines.append(f"Its last note: {note}")
    return "\n".join(lines)


def _ended(
    reason: str,
    turns: int,
    usage: Usage,
    toolbox: Toolbox,
    last_text: str,
    record: Callable[[dict[str, Any]], None],
) -> AgentResult:
    handoff = build_handoff(reason, turns, toolbox.touched, last_text)
    offered, used = skill_use(toolbox)
    record(
        {
            "kind": "end",
            "finished": False,
            "reason": reason,
            "turns": turns,
            "usage": usage.to_dict(),
            "handoff": handoff,
            "skills_offered": offered,
            "skills_used": used,
        }
    )
    return AgentResult(
        False,
        "",
        turns,
        usage,
        reason=reason,
        handoff=handoff,
        skills_offered=offered,
        skills_used=used,
    )


def skill_use(toolbox: Toolbox) -> tuple[list[str], list[str]]:
    """(offered, used) tool names of an attempt, without the ending tool."""
    end = toolbox.ending.name
    offered = [s["name"] for s in toolbox.specs() if s["name"] != end]
    return offered, [name for name in toolbox.used if name != end]


def _request_record(
    request: ModelRequest, turn: int, new: list[dict[str, Any]], tools_changed: bool
) -> dict[str, Any]:
    """Only the messages added since the last request, so transcripts stay linear in size;
    the tools on the first turn and again whenever they change."""
    entry: dict[str, Any] = {
        "kind": "request",
        "turn": turn,
        "model": request.model,
        "max_tokens": request.max_tokens,
        "task_id": request.task_id,
        "attempt": request.attempt,
        "new_messages": new,
    }
    if turn == 1:
        entry["system"] = request.system
    if tools_changed:
        entry["tools"] = request.tools
    return entry


def _user(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _prompt_size(response: ModelResponse) -> int:
    """Tokens of the conversation so far, as the provider counted them on this call."""
    u = response.usage
    return u.input_tokens + u.cache_read_tokens + u.cache_write_tokens + u.output_tokens
