"""``python -m orchestrator.testing.apiserver``: run the local API server until interrupted.

Point pd at it with ``--base-url http://127.0.0.1:PORT`` (Anthropic) or
``http://127.0.0.1:PORT/v1`` (OpenAI-compatible), and the key given by ``--api-key``.
It answers POST /v1/messages (and /v1/messages/count_tokens), POST /v1/chat/completions,
both streamed as server-sent events when asked, and GET /v1/models.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from orchestrator.errors import PdError
from orchestrator.testing.apiserver.script import FAULT_KINDS, Fault, load_replies
from orchestrator.testing.apiserver.server import LocalAPIServer

NO_FAULT = ("ok", "-")


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


class FaultPlan:
    """Faults by request number, from ``--faults``: ``500*3,ok,malformed,429*`` is a
    500 for requests 0-2, none for 3, a cut-off answer for 4, then 429 for every one after.
    ``KIND*N`` repeats a fault N times; a bare ``KIND*`` (last only) repeats it forever."""

    def __init__(self, text: str) -> None:
        self.kinds: list[str | None] = []
        self.forever: str | None = None
        parts = [p.strip() for p in text.split(",") if p.strip()]
        for i, part in enumerate(parts):
            kind, star, count = part.partition("*")
            if kind not in (*FAULT_KINDS, *NO_FAULT):
                known = ", ".join((*FAULT_KINDS, "ok"))
                raise argparse.ArgumentTypeError(f"unknown fault {kind!r} ({known})")
            fault = None if kind in NO_FAULT else kind
            if star and not count:
                if i != len(parts) - 1:
                    raise argparse.ArgumentTypeError(f"{part!r} must come last")
                self.forever = fault
                continue
            if star and not count.isdigit():
                raise argparse.ArgumentTypeError(f"{part!r}: the count is not a number")
            self.kinds += [fault] * (int(count) if star else 1)

    def __call__(self, index: int, *request: object) -> Fault | None:
        kind = self.kinds[index] if index < len(self.kinds) else self.forever
        return Fault(kind) if kind else None


def parse_models(text: str) -> list[str]:
    """Comma-separated model names; any other model is a 404 (default: every model)."""
    return [m.strip() for m in text.split(",") if m.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.testing.apiserver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=FAULT_HELP,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--limits", type=parse_limits, default=None, help=parse_limits.__doc__)
    parser.add_argument("--replies", help="a JSON list of replies (default: always 'ok')")
    parser.add_argument("--output-mode", choices=["script", "max"], default="script")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per reply")
    parser.add_argument(
        "--faults",
        type=FaultPlan,
        default=None,
        metavar="SPEC",
        help="faults to inject by model call number, e.g. 500*3,ok,malformed,429* (see below)",
    )
    parser.add_argument("--models", type=parse_models, default=None, help=parse_models.__doc__)
    parser.add_argument(
        "--count-faults",
        type=FaultPlan,
        default=None,
        metavar="SPEC",
        help="faults for POST /v1/messages/count_tokens by count number (error kinds, slow)",
    )
    parser.add_argument(
        "--chars-per-token",
        type=float,
        default=4.0,
        help="how densely prompts are tokenized (default 4; lower bills more input)",
    )
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
            faults=args.faults,
            models=args.models,
            count_faults=args.count_faults,
            chars_per_token=args.chars_per_token,
        )
    except (PdError, OSError, ValueError, TypeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(f"listening on {server.url} (OpenAI base URL: {server.url}/v1)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


FAULT_HELP = """faults (--faults, comma-separated, one per model call in arrival order):
  429          rate limited (retry-after 1 s)
  529          overloaded (a 503 on the OpenAI endpoint)
  500          internal server error
  400          request too large (prompt is too long)
  spend_limit  a 429 no retry can cure (spend limit / insufficient quota)
  slow         answers after 5 s
  malformed    a 200 with broken JSON, or a stream cut off halfway; the reply is kept
  object_args  OpenAI tool-call arguments sent as a JSON object, not a string
  ok (or -)    no fault
  KIND*N repeats a fault N times; KIND* (last) repeats it for every later request.
Model calls and token counts are numbered apart (--faults and --count-faults)."""


if __name__ == "__main__":
    sys.exit(main())
