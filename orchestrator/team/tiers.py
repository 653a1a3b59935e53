"""Model tiers: ``haiku``, ``sonnet`` and ``opus`` name one model per provider.

The mapping is data (``data/models.json``) so a new model generation is a data change, and
a user file can override any tier. A mission or role may name a tier or an exact id.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.errors import BadInput

DEFAULT_MODELS = Path(__file__).parents[1] / "data" / "models.json"
_FIX = 'write {"<provider>": {"<tier>": "<model id>"}}, e.g. {"anthropic": {"opus": "..."}}'


def load_tiers(override_path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """Tier -> model id per provider: the shipped mapping with the user's laid over it."""
    tiers = _read(DEFAULT_MODELS)
    if override_path is not None:
        for provider, mapping in _read(Path(override_path)).items():
            tiers.setdefault(provider, {}).update(mapping)
    return tiers


def resolve_model(provider: str, name_or_tier: str, override_path: str | Path | None = None) -> str:
    """The model id for a tier name; anything else is taken as an exact model id."""
    name = name_or_tier.strip()
    if not name:
        raise BadInput(
            "model", "the model name is empty", "name a tier (haiku, sonnet, opus) or a model id"
        )
    return load_tiers(override_path).get(provider, {}).get(name, name)


def _read(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(str(path), f"cannot read the model tiers ({exc.strerror})", _FIX) from None
    except json.JSONDecodeError as exc:
        raise BadInput(str(path), f"not valid JSON ({exc.msg}, line {exc.lineno})", _FIX) from None
    ok = isinstance(data, dict) and all(
        isinstance(tiers, dict) and all(isinstance(v, str) and v for v in tiers.values())
        for tiers in data.values()
    )
    if not ok:
        raise BadInput(str(path), "model tiers must map provider -> tier -> model id", _FIX)
    return data
