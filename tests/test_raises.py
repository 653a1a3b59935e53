"""Every error pd raises on purpose is a ``PdError``, so the CLI turns it into one line
that says what to do (errors.py). A ``raise`` of anything else must be a bug check that
no input can trigger, or an error caught close by, and says so in ``ALLOWED``."""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orchestrator
from orchestrator.errors import PdError

ROOT = Path(orchestrator.__file__).parent
# (module path under orchestrator/, the raised name as written) -> why it is no PdError.
ALLOWED: dict[tuple[str, str], str] = {
    ("engine/coordinator.py", "KeyboardInterrupt"): (
        "a second SIGINT/SIGTERM stops the loop at once; the CLI answers it with exit 130"
    ),
    ("engine/coordinator.py", "broken"): "the InfraError system_error builds just above",
    ("engine/pool.py", "ValueError"): "spawning a worker id twice: a coordinator bug",
    ("engine/pool.py", "failure"): "the PdError its barrier caught, after every worker stopped",
    ("engine/pool.py", "UnrecordedEffect"): (
        "an effect before its cause is durable: the coordinator bug the barrier exists to catch"
    ),
    ("record/control.py", "TypeError"): "a request file that is no object: caught just below",
    ("record/eventbase.py", "TypeError"): "an event kind defined twice: a bug in events.py itself",
    ("limits/bucket.py", "ValueError"): (
        "BucketLimits out of range: mission.py's fields (ge=1, gt=0) refuse them first"
    ),
    ("limits/headers.py", "ValueError"): (
        "parse_go_duration's contract: parse_ratelimit_headers suppresses it"
    ),
    ("limits/ledger.py", "ValueError"): (
        "a negative reservation or one closed twice: a bug of the desk"
    ),
    ("limits/ledger.py", "TypeError"): "money as a float: a bug of the caller",
    ("limits/ratelimit.py", "ValueError"): (
        "negative token counts or margin, an unknown permit or dimension: a bug of the desk "
        "(which also denies a ValueError from acquire)"
    ),
    ("limits/ratelimit.py", "KeyError"): "usage_in_window of a bucket never configured",
    ("planning/taskplan.py", "ValueError"): "starting the planning step twice: a bug",
    ("spec/composition.py", "ValueError"): (
        "arguments no mission can produce (team has min_length=1, attempts count from 1)"
    ),
    ("spec/mission.py", "PydanticCustomError"): (
        "raised in a validator: pydantic makes it a ValidationError, load_mission a BadInput"
    ),
    ("providers/errors.py", "problem"): "a ProviderError built just above",
    ("providers/scripted.py", "bad"): "`bad` builds a ProviderError naming the cassette field",
    ("tasks/taskgraph.py", "ValueError"): "a transition out of order: a coordinator bug",
    ("tasks/taskgraph.py", "KeyError"): (
        "an unknown task id: a bug (control requests are checked against the graph first)"
    ),
    ("testing/apiserver/__main__.py", "argparse.ArgumentTypeError"): (
        "argparse's way to refuse a flag: a usage line and exit 2"
    ),
    ("testing/apiserver/dialects/base.py", "NotImplementedError"): "abstract methods",
    ("testing/apiserver/server.py", "ValueError"): (
        "a request body that is no object (answered as a 400 three lines below), and an "
        "output_mode that the CLI's choices refuse first"
    ),
    ("testing/apiserver/script.py", "ValueError"): (
        "a test's Fault of an unknown kind; the CLI refuses one first (ArgumentTypeError)"
    ),
    ("testing/apiserver/script.py", "TypeError"): (
        "a test's replies/faults callable returned the wrong type: the server answers a 500 "
        "naming it (load_replies turns a bad reply file into a BadInput)"
    ),
}


def raises() -> Iterator[tuple[str, int, str, Any]]:
    """(path, line, name as written, the object it names or None) for each ``raise X``."""
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        dotted = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        module = None  # imported at its first raise: ``orchestrator/__main__`` runs the CLI
        tree = ast.parse(path.read_text())
        for cls, node in _walk(tree, None):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            module = module or importlib.import_module(f"orchestrator.{dotted}")
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = ast.unparse(target)
            yield rel, node.lineno, name, _resolve(module, cls, name)


def _walk(node: ast.AST, cls: str | None) -> Iterator[tuple[str | None, ast.AST]]:
    for child in ast.iter_child_nodes(node):
        yield cls, child
        yield from _walk(child, child.name if isinstance(child, ast.ClassDef) else cls)


def _resolve(module: Any, cls: str | None, name: str) -> Any:
    """What ``name`` refers to in the module (``self.x`` in its class), else None."""
    first, *rest = name.split(".")
    if first == "self" and cls is not None:
        first, rest = cls, rest
    value = getattr(module, first, None) or getattr(__builtins__, first, None)
    if value is None and isinstance(__builtins__, dict):
        value = __builtins__.get(first)
    for part in rest:
        value = getattr(value, part, None)
    return value


def is_pd_error(value: Any) -> bool:
    """A PdError class, or a function annotated to return one (``_cycle_error``)."""
    if inspect.isclass(value):
        return issubclass(value, PdError)
    if callable(value):
        returned = typing.get_type_hints(value).get("return")
        return inspect.isclass(returned) and issubclass(returned, PdError)
    return False


def test_every_raise_is_a_pd_error_or_says_why_not() -> None:
    found = set()
    wrong = []
    for path, line, name, value in raises():
        if is_pd_error(value):
            continue
        found.add((path, name))
        if (path, name) not in ALLOWED:
            wrong.append(f"orchestrator/{path}:{line}: raise {name}")
    assert wrong == [], "raise a PdError subclass, or add an ALLOWED entry with the reason"
    assert set(ALLOWED) - found == set(), "ALLOWED entries that no longer match a raise"


def test_the_walk_sees_raises_of_every_kind() -> None:
    """The check itself: a PdError class, a builtin and a function returning a PdError
    are each resolved, so the test above cannot pass by resolving nothing."""
    seen = {(path, name): value for path, _, name, value in raises()}
    assert is_pd_error(seen["engine/repocheck.py", "BadInput"])
    assert not is_pd_error(seen["engine/pool.py", "ValueError"])
    assert is_pd_error(seen["spec/mission.py", "_as_bad_input"])
    builder = seen["tasks/dag.py", "_cycle_error"]
    assert typing.get_type_hints(builder)["return"].__name__ == "GraphError"
