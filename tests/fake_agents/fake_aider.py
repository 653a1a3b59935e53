#!/usr/bin/env python3
"""Stands in for Aider: ``aider --message PROMPT --yes-always --no-auto-commits``."""

from __future__ import annotations

import argparse
import sys

import _fake

BANNER = [
    "Aider v0.86.1",
    "Main model: anthropic/claude-sonnet-4-5 with diff edit format, infinite output",
    "Weak model: anthropic/claude-3-5-haiku-20241022",
    "Git repo: .git with 1 files",
    "Repo-map: using 4096 tokens, auto refresh",
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="aider")
    parser.add_argument("--message", "--msg", "-m")
    parser.add_argument("--yes-always", action="store_true")
    parser.add_argument("--auto-commits", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--pretty", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--gitignore", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--model", default="anthropic/claude-sonnet-4-5")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    if args.message is None:
        sys.exit("fake aider: the interactive chat is not implemented; pass --message")
    if args.auto_commits:
        sys.exit("fake aider: would have committed by itself")
    _fake.common_modes("Working on it.")
    _fake.emit(*BANNER, "")
    if _fake.mode() == "error":
        print(
            "litellm.AuthenticationError: AnthropicException - invalid x-api-key",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    _fake.edit(args.message)
    _fake.emit(
        "I will create done.txt.",
        "",
        "Tokens: 2.4k sent, 1.5k cache write, 215 received."
        " Cost: $0.0097 message, $0.0097 session.",
        "Applied edit to done.txt",
        "\x1b[32mWrote done.txt with the task title.\x1b[0m",
        "Tokens: 12k sent, 3.1k cache hit, 987 received. Cost: $0.01 message, $0.0197 session.",
    )


if __name__ == "__main__":
    main()
