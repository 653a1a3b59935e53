"""What ``pd gate`` says: one line per branch, the failing output, JSON, JUnit XML."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from orchestrator.gate.check import Verdict

if TYPE_CHECKING:
    from orchestrator.gate.session import GateSetup


def lines(setup: GateSetup, verdicts: list[Verdict], flaky: list[str]) -> list[str]:
    where = f"{setup.remote}/{setup.target.name}" if setup.remote else setup.target.name
    head = [f"gate: `{setup.test_command}` ({setup.test_reason}) into {where}"]
    width = max((len(v.branch) for v in verdicts), default=0)
    body = [f"  {v.branch:<{width}}  {v.status:<14} {v.reason}".rstrip() for v in verdicts]
    bad = sum(not v.ok for v in verdicts)
    tail = f"{len(verdicts) - bad} ok, {bad} not" + (f"; logs in {setup.log_dir}" if bad else "")
    flakes = [f"flaky (failed and passed on the same tree): {', '.join(flaky)}"] if flaky else []
    return [*head, *body, *flakes, tail]


def failures(verdicts: list[Verdict]) -> str:
    """The failing output of each rejected branch, for whoever fixes it."""
    parts = [
        f"--- {v.branch}: {v.reason}\n{v.tail}".rstrip() for v in verdicts if v.tail and not v.ok
    ]
    return "\n".join(parts)


def as_json(
    setup: GateSetup, verdicts: list[Verdict], seconds: float, flaky: list[str]
) -> dict[str, Any]:
    return {
        "target": setup.target.name,
        "remote": setup.remote,
        "test_command": setup.test_command,
        "ok": all(v.ok for v in verdicts),
        "seconds": round(seconds, 3),
        "flaky": flaky,
        "branches": [
            {
                "branch": v.branch,
                "status": v.status,
                "commit": v.commit,
                "reason": v.reason,
                "conflicts": v.conflicts,
                "tail": v.tail,
                "log": v.log,
            }
            for v in verdicts
        ],
    }


def write_junit(path: Path, verdicts: list[Verdict], seconds: float) -> None:
    """One test case per branch, so CI shows which branch failed and why."""
    failed = sum(not v.ok for v in verdicts)
    suite = ET.Element(
        "testsuite",
        name="pd gate",
        tests=str(len(verdicts)),
        failures=str(failed),
        time=f"{seconds:.3f}",
    )
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname="pd.gate", name=v.branch)
        if not v.ok:
            failure = ET.SubElement(case, "failure", message=v.reason or v.status, type=v.status)
            failure.text = v.tail or ", ".join(v.conflicts)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
