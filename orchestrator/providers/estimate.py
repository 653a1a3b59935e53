"""A request's input tokens before sending it, for permits and budget reservations.

An upper bound more than a guess: about a third of the UTF-8 bytes of the prompt's JSON,
where real tokenizers give about a quarter for English and code. The limiter reconciles
with the usage the provider reports afterwards.
"""

from __future__ import annotations

import json
import math

from orchestrator.providers.base import ModelRequest


def estimate_input_tokens(request: ModelRequest) -> int:
    """ceil(bytes of the JSON of system + messages + tools / 3)."""
    prompt = {"system": request.system, "messages": request.messages, "tools": request.tools}
    return math.ceil(len(json.dumps(prompt, ensure_ascii=False).encode()) / 3)
