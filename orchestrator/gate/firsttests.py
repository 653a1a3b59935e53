"""Failing tests first: the names of the tests a gate run saw fail, and a next run of the
same candidates that starts with them where the test runner allows it.

pytest allows it. Its cache's ``lastfailed`` (written here, where pytest itself keeps it)
with ``--ff`` puts those tests first, and ``--maxfail=1`` ends the run at the first
failure. A branch that is really broken is then rejected after the tests that failed,
not after the whole suite again; if they pass (a flake), the rest of the suite runs as
usual and decides. The options reach pytest through ``PYTEST_ADDOPTS``, so a ``make
test`` or ``tox`` that calls pytest gets them too, and any other runner ignores them.
Names are read from pytest, ``go test`` and ``cargo test`` output; a flaky report then
names the tests.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

_NAMES = (
    re.compile(r"^(?:FAILED|ERROR) (\S+::\S+)", re.M),  # pytest's short summary
    re.compile(r"^\s*--- FAIL: (\S+)", re.M),  # go test -v
    re.compile(r"^test (\S+) \.\.\. FAILED$", re.M),  # cargo test
)
FIRST_OPTIONS = "--ff --maxfail=1"
READ_TAIL = 256 * 1024  # the summaries are at the end of the output


def failed_tests(output: str) -> frozenset[str]:
    """The tests ``output`` reports as failed (empty when it names none)."""
    return frozenset(name for pattern in _NAMES for name in pattern.findall(output))


def failed_in_log(log: Path) -> frozenset[str]:
    try:
        with open(log, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - READ_TAIL))
            return failed_tests(handle.read().decode(errors="replace"))
    except OSError:
        return frozenset()


def first(worktree: Path, tests: frozenset[str], env: Mapping[str, str]) -> dict[str, str]:
    """The environment for a run of ``worktree`` that starts with ``tests`` (pytest node
    ids; others are left to the runner's own order): pytest's cache says they failed last
    time, and ``PYTEST_ADDOPTS`` asks for them first."""
    ids = sorted(t for t in tests if "::" in t)
    if not ids:
        return dict(env)
    cache = worktree / ".pytest_cache"
    (cache / "v" / "cache").mkdir(parents=True, exist_ok=True)
    if not (cache / ".gitignore").exists():  # as pytest makes it: the cache is not the tree's
        (cache / ".gitignore").write_text("# Created by pd, as pytest does\n*\n")
    (cache / "v" / "cache" / "lastfailed").write_text(json.dumps(dict.fromkeys(ids, True)))
    # The cache named outright: pytest's rootdir (where it would look) may be a subfolder.
    where = shlex.quote(f"cache_dir={cache}")
    options = " ".join(filter(None, [env.get("PYTEST_ADDOPTS", ""), FIRST_OPTIONS, "-o", where]))
    return {**env, "PYTEST_ADDOPTS": options}
