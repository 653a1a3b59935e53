#!/usr/bin/env python3
"""Stands in for the Gemini CLI: ``gemini -p PROMPT --output-format json``."""

from __future__ import annotations

import argparse
import json
import sys

import _fake


def main() -> None:
    parser = argparse.ArgumentParser(prog="gemini")
    parser.add_argument("-p", "--prompt")
    parser.add_argument("-o", "--output-format", default="text")
    parser.add_argument("--approval-mode", default="default")
    parser.add_argument("-m", "--model", default="gemini-2.5-pro")
    args = parser.parse_args()
    if args.prompt is None:
        sys.exit("fake gemini: the interactive mode is not implemented; pass -p")
    _fake.common_modes("Loaded cached credentials.")
    if _fake.mode() == "error":
        error = {"type": "Error", "message": "[API Error: 400 API key not valid.]", "code": 1}
        print(json.dumps({"error": error}, indent=2), file=sys.stderr, flush=True)
        sys.exit(1)
    if args.approval_mode != "yolo":
        sys.exit("fake gemini: write_file needs approval, which headless mode cannot ask")
    _fake.edit(args.prompt)
    _fake.emit("Loaded cached credentials.")
    output = {
        "session_id": "c0ffee00-0000-4000-8000-000000000002",
        "response": "Created done.txt with the task title.",
        "stats": {
            "models": {
                args.model: _model(3, prompt=24939, cached=21263, candidates=20, thoughts=154),
                "gemini-2.5-flash-lite": _model(
                    1, prompt=500, cached=0, candidates=40, thoughts=20
                ),
            },
            "tools": {"totalCalls": 1, "totalSuccess": 1, "totalFail": 0, "byName": {}},
            "files": {"totalLinesAdded": 1, "totalLinesRemoved": 0},
        },
    }
    _fake.emit(json.dumps(output, indent=2))


def _model(requests: int, prompt: int, cached: int, candidates: int, thoughts: int) -> dict:
    tokens = {"input": prompt - cached, "prompt": prompt, "candidates": candidates}
    tokens |= {"total": prompt + candidates + thoughts, "cached": cached, "thoughts": thoughts}
    api = {"totalRequests": requests, "totalErrors": 0, "totalLatencyMs": 5053}
    return {"api": api, "tokens": {**tokens, "tool": 0}, "roles": {}}


if __name__ == "__main__":
    main()
