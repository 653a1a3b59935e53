"""Where the shipped catalogues (roles, missions, skills) are found."""

from __future__ import annotations

from pathlib import Path


def shipped_dir(name: str) -> Path:
    """A catalog folder (roles, missions, skills): inside the installed package, or the
    source checkout's top level when running from an editable install."""
    here = Path(__file__).resolve().parents[1]
    inside = here / name
    return inside if inside.is_dir() else here.parent / name
