#!/usr/bin/env python3
"""Stands in for Claude Code: ``claude -p PROMPT --output-format stream-json --verbose``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import _fake

SESSION = "6f1c2a9e-0000-4000-8000-000000000001"
USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 2048,
    "cache_read_input_tokens": 4096,
    "output_tokens": 345,
    "server_tool_use": {"web_search_requests": 0},
    "service_tier": "standard",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="claude")
    parser.add_argument("-p", "--print", action="store_true")
    parser.add_argument("prompt")
    parser.add_argument("--output-format", default="text")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--permission-mode", default="default")
    parser.add_argument("--model", default="claude-sonnet-4-5")
    args = parser.parse_args()
    if args.output_format == "stream-json" and not args.verbose:
        sys.exit("Error: When using --print, --output-format=stream-json requires --verbose")
    _fake.common_modes(_assistant([{"type": "text", "text": "Working on it."}], args.model))
    _fake.event(
        {
            "type": "system",
            "subtype": "init",
            "cwd": os.getcwd(),
            "session_id": SESSION,
            "tools": ["Bash", "Edit", "Read", "Write"],
            "model": args.model,
            "permissionMode": args.permission_mode,
        }
    )
    if _fake.mode() == "error":
        _fake.event(_result(is_error=True, text="Invalid API key · Please run /login"))
        sys.exit(1)
    _fake.edit(args.prompt)
    path = os.path.join(os.getcwd(), "done.txt")
    write = {"type": "tool_use", "id": "toolu_01", "name": "Write", "input": {"file_path": path}}
    _fake.emit(_assistant([write], args.model))
    _fake.event(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "File created"}
                ],
            },
            "session_id": SESSION,
        }
    )
    text = "Wrote done.txt with the task title."
    _fake.emit(_assistant([{"type": "text", "text": text}], args.model))
    _fake.event(_result(is_error=False, text=text))


def _assistant(content: list[dict], model: str) -> str:
    message = {"id": "msg_01", "type": "message", "role": "assistant", "model": model}
    message |= {"content": content, "usage": {"input_tokens": 4, "output_tokens": 100}}
    return json.dumps({"type": "assistant", "message": message, "session_id": SESSION})


def _result(is_error: bool, text: str) -> dict:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": is_error,
        "duration_ms": 4321,
        "duration_api_ms": 4000,
        "num_turns": 1 if is_error else 3,
        "result": text,
        "session_id": SESSION,
        "total_cost_usd": 0 if is_error else 0.0123456,
        "usage": {k: 0 for k in USAGE if k.endswith("tokens")} if is_error else USAGE,
    }


if __name__ == "__main__":
    main()
