"""The wire formats the local server speaks, one module per API, keyed by request path.

A family with one base (``base.Dialect``) and a module per API: adding a third API is a
new module here, and the server does not change.
"""

from __future__ import annotations

from orchestrator.testing.apiserver.dialects.anthropic import Anthropic
from orchestrator.testing.apiserver.dialects.base import Dialect
from orchestrator.testing.apiserver.dialects.openai import OpenAI

DIALECTS: dict[str, Dialect] = {d.path: d for d in (Anthropic(), OpenAI())}
