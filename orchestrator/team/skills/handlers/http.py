"""The HTTP skill: GET from the worker's own dev servers on localhost, nothing else.

Each worker gets ``PD_PORT_BASE`` (and owns the ports from there up to the mission's
port stride, ``PD_PORT_STRIDE``, default 100), so one agent cannot poke another's server.
No proxy is used, and a redirect off localhost is refused.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

from orchestrator.errors import ToolError
from orchestrator.team.tools import Toolbox, ToolResult

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
TIMEOUT = 10.0


def _ports(box: Toolbox) -> range | None:
    base = box.env.get("PD_PORT_BASE")
    if not base or not base.isdigit():
        return None
    stride = box.env.get("PD_PORT_STRIDE", "100")
    return range(int(base), int(base) + (int(stride) if stride.isdigit() else 100))


def _check(box: Toolbox, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOCAL_HOSTS:
        raise ToolError(f"refused: {url!r} is not on localhost; http_get reaches dev servers only")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allowed = _ports(box)
    if allowed is not None and port not in allowed:
        raise ToolError(
            f"refused: port {port} is not yours; use {allowed.start}-{allowed.stop - 1}"
        )


class _LocalRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, box: Toolbox) -> None:
        self.box = box

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        _check(self.box, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def http_get(box: Toolbox, url: str, timeout: float = TIMEOUT) -> ToolResult:
    """``url`` may be a full localhost URL or a path on ``PD_PORT_BASE`` (``/health``)."""
    if url.startswith("/"):
        base = box.env.get("PD_PORT_BASE")
        if not base:
            raise ToolError("a bare path needs PD_PORT_BASE; give a full http://localhost URL")
        url = f"http://127.0.0.1:{base}{url}"
    _check(box, url)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _LocalRedirects(box))
    try:
        with opener.open(url, timeout=min(timeout, 60)) as response:
            status, headers, body = response.status, response.headers, response.read(box.output_cap)
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, exc.headers, exc.read(box.output_cap)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolError(f"GET {url} failed: {reason} (is the dev server running?)") from None
    kind = headers.get("content-type", "?")
    text = body.decode(errors="replace")
    return ToolResult(f"HTTP {status} ({kind})\n{text}", is_error=status >= 400)
