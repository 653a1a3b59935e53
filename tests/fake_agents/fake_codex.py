#!/usr/bin/env python3
"""Stands in for the Codex CLI: ``codex exec --json [flags] -- PROMPT``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import _fake


def main() -> None:
    if sys.argv[1:2] != ["exec"]:
        sys.exit("fake codex: only `codex exec` is implemented")
    parser = argparse.ArgumentParser(prog="codex exec")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-s", "--sandbox", default="read-only")
    parser.add_argument("--skip-git-repo-check", action="store_true")
    parser.add_argument("-m", "--model", default="gpt-5-codex")
    parser.add_argument("prompt")
    args = parser.parse_args(sys.argv[2:])
    if not args.json:
        sys.exit("fake codex: only --json output is implemented")
    _fake.common_modes(_item("item_0", {"type": "agent_message", "text": "Working on it."}))
    _fake.event({"type": "thread.started", "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"})
    _fake.event({"type": "turn.started"})
    if _fake.mode() == "error":
        _fake.event({"type": "error", "message": "Reconnecting... 1/5"})
        message = "unexpected status 401 Unauthorized: Incorrect API key provided"
        _fake.event({"type": "turn.failed", "error": {"message": message}})
        sys.exit(1)
    if args.sandbox == "read-only":
        sys.exit("fake codex: the read-only sandbox cannot write done.txt")
    _fake.emit(_item("item_1", {"type": "reasoning", "text": "**Planning the edit**"}))
    ls = {"command": "bash -lc ls", "aggregated_output": "README.md\n", "exit_code": 0}
    _fake.emit(_item("item_2", {"type": "command_execution", **ls, "status": "completed"}))
    _fake.edit(args.prompt)
    change = {"path": os.path.join(os.getcwd(), "done.txt"), "kind": "add"}
    _fake.emit(_item("item_3", {"type": "file_change", "changes": [change], "status": "completed"}))
    _fake.emit(_item("item_4", {"type": "agent_message", "text": "Created done.txt."}))
    usage = {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}
    _fake.event({"type": "turn.completed", "usage": usage})


def _item(item_id: str, details: dict) -> str:
    return json.dumps({"type": "item.completed", "item": {"id": item_id, **details}})


if __name__ == "__main__":
    main()
