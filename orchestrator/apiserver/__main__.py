"""``python -m orchestrator.apiserver``: run the local API server until interrupted.

Point pd at it with ``--base-url http://127.0.0.1:PORT`` (Anthropic) or
``http://127.0.0.1:PORT/v1`` (OpenAI-compatible), and the key given by ``--api-key``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from orchestrator.apiserver.script import load_replies
from orchestrator.apiserver.server import LocalAPIServer


def parse_limits(text: str) -> dict[str, float]:
    """``requests=50,input_tokens=20000,output_tokens=4000,window=60``."""
    limits: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--limits: {part!r} is not NAME=VALUE")
        try:
            limits[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--limits: {value!r} is not a number") from None
    return limits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.apiserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--limits", type=parse_limits, default=None, help=parse_limits.__doc__)
    parser.add_argument("--replies", help="a JSON list of replies (default: always 'ok')")
    parser.add_argument("--output-mode", choices=["script", "max"], default="script")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per reply")
    args = parser.parse_args(argv)
    try:
        replies = load_replies(args.replies) if args.replies else None
        server = LocalAPIServer(
            replies,
            limits=args.limits,
            api_key=args.api_key,
            output_mode=args.output_mode,
            latency=args.latency,
            host=args.host,
            port=args.port,
            keep_bodies=False,
        )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(f"listening on {server.url} (OpenAI base URL: {server.url}/v1)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
