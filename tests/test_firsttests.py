"""Which tests a gate run's output names as failed, per runner, and the environment that
starts the next run with them."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from orchestrator.gate.firsttests import failed_tests, first

PYTEST = """\
..F.E
=========================== short test summary info ============================
FAILED tests/test_app.py::test_login[admin] - AssertionError: assert 401 == 200
ERROR tests/test_db.py::test_migrate - OSError: no database
2 failed, 3 passed in 0.12s
"""
GO = """\
=== RUN   TestParse
--- FAIL: TestParse (0.00s)
    parse_test.go:12: got 1
FAIL	example.com/app	0.004s
"""
CARGO = """\
test parser::tests::parses ... ok
test parser::tests::rejects ... FAILED
"""


def test_each_runner_s_failures_are_named() -> None:
    assert failed_tests(PYTEST) == {
        "tests/test_app.py::test_login[admin]",
        "tests/test_db.py::test_migrate",
    }
    assert failed_tests(GO) == {"TestParse"}
    assert failed_tests(CARGO) == {"parser::tests::rejects"}
    assert failed_tests("make: *** [test] Error 1\n") == frozenset()


def test_the_next_run_starts_with_pytest_s_failures_and_keeps_the_user_s_options(
    tmp_path: Path,
) -> None:
    env = first(tmp_path, frozenset({"tests/a.py::test_x", "TestParse"}), {"PYTEST_ADDOPTS": "-q"})
    words = shlex.split(env["PYTEST_ADDOPTS"])
    assert words[0] == "-q" and "--ff" in words and "--maxfail=1" in words
    cache = Path(words[words.index("-o") + 1].removeprefix("cache_dir="))
    lastfailed = json.loads((cache / "v" / "cache" / "lastfailed").read_text())
    assert lastfailed == {"tests/a.py::test_x": True}  # a go test name is no pytest id
    assert first(tmp_path, frozenset({"TestParse"}), {"A": "1"}) == {"A": "1"}
