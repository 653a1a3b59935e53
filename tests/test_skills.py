"""Skills: every manifest loads, every handler works on a real git repo, selection holds.

No mocks: real manifests on disk, real git, real processes, a real HTTP server, the
scripted provider for the ranking call and the real agent loop for discover_skills.
"""

from __future__ import annotations

import http.server
import inspect
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.agent.loop import run_agent
from orchestrator.errors import BadInput
from orchestrator.providers.scripted import ScriptedProvider
from orchestrator.team.catalog import shipped_dir
from orchestrator.team.skills import (
    Skill,
    SkillRegistry,
    SkillToolbox,
    choose_skills,
    load_registry,
    model_ranker,
    parse_ranking,
    select_skills,
)
from orchestrator.team.skills.handlers.quality import FORMATTERS, LINTERS, TESTS, detect
from orchestrator.team.skills.registry import SCHEMA_NAME, parse_skill
from tests.conftest import make_repo, pd, run_git

SKILLS_DIR = shipped_dir("skills")
MANIFESTS = sorted(p for p in SKILLS_DIR.glob("*.json") if p.name != SCHEMA_NAME)
IDS = {
    "read_file", "write_file", "edit_file", "apply_patch", "delete_file", "move_file",
    "list_files", "find_files", "search_code", "file_outline", "git_status", "git_diff",
    "git_log", "git_blame", "git_commit", "run_tests", "run_linter", "run_formatter",
    "run_command", "list_dependencies", "todo_scan", "code_stats", "http_get",
}  # fmt: skip
CORE = ["read_file", "write_file", "edit_file", "run_tests"]
CAPS = ["writes-code", "reads-tests", "runs-tests"]


@pytest.fixture(scope="module")
def registry() -> SkillRegistry:
    return load_registry()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small Python project with two commits."""
    path = make_repo(
        tmp_path / "proj",
        {
            "pyproject.toml": '[project]\nname = "demo"\ndependencies = ["rich>=13"]\n\n'
            '[project.optional-dependencies]\ntest = ["pytest>=8"]\n',
            "src/app.py": "class App:\n    def run(self, x):\n        return x  # TODO: check\n\n"
            "def main():\n    return App().run(1)\n",
            "tests/test_app.py": "from src.app import main\n\ndef test_main():\n"
            "    assert main() == 1\n",
            "README.md": "demo\n",
        },
    )
    (path / "src" / "__init__.py").write_text("")
    run_git(path, "add", "-A")
    run_git(path, "commit", "-q", "-m", "package marker")
    return path


@pytest.fixture
def box(repo: Path, registry: SkillRegistry) -> SkillToolbox:
    return SkillToolbox(repo, registry.skills.values(), catalog=registry, command_timeout=60)


def ok(box: SkillToolbox, tool: str, /, **args: Any) -> str:
    res = box.call(tool, args)
    assert not res.is_error, f"{tool} {args}: {res.content}"
    return res.content


# ---- the catalog ---------------------------------------------------------------------


def test_the_catalog_has_exactly_the_agreed_skills(registry: SkillRegistry) -> None:
    assert set(registry.skills) == IDS
    assert len(MANIFESTS) == len(IDS) >= 20


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.stem)
def test_every_shipped_manifest_validates_and_its_handler_fits(path: Path) -> None:
    from jsonschema import Draft202012Validator

    schema = json.loads((SKILLS_DIR / SCHEMA_NAME).read_text())
    skill = parse_skill(path, Draft202012Validator(schema))
    assert skill.id == path.stem and skill.trigger_examples and skill.short_description
    assert callable(skill.function)
    # The handler takes the toolbox, then exactly the manifest's parameters.
    params = list(inspect.signature(skill.function).parameters.values())
    assert params[0].name == "box"
    names = {p.name for p in params[1:]}
    assert names == set(skill.parameters.get("properties", {})), skill.handler
    required = {p.name for p in params[1:] if p.default is inspect.Parameter.empty}
    assert required == set(skill.parameters.get("required", []))


def test_requires_and_conflicts_in_the_shipped_catalog(registry: SkillRegistry) -> None:
    assert registry.closure("edit_file") == ["edit_file", "read_file"]
    assert registry.conflicts_of("edit_file") == {"apply_patch"}  # both ways
    assert registry.get("search_files").id == "search_code"  # the old tool name


BROKEN = [
    ({"version": "one"}, "version", "does not match"),
    ({"tags": []}, "tags", "should be non-empty"),
    ({"category": "magic"}, "category", "is not one of"),
    ({"handler": "orchestrator.nowhere:read_file"}, "handler", "cannot import"),
    ({"handler": "orchestrator.team.skills.handlers.files:nope"}, "handler", "no function nope"),
    ({"requires": ["teleport"]}, "requires", "unknown skill 'teleport'"),
    ({"conflicts": ["read_file"], "requires": ["read_file"]}, "requires", "conflict"),
    ({"parameters": {"type": "object", "properties": {"x": {"type": 3}}}}, "parameters", ""),
    ({"id": "other_name"}, "id", "differs from the file name"),
    ({"colour": "red"}, "", "colour"),
]


@pytest.mark.parametrize(("change", "field", "problem"), BROKEN, ids=lambda v: str(v)[:30])
def test_a_broken_manifest_is_one_line_naming_file_and_field(
    tmp_path: Path, change: dict, field: str, problem: str
) -> None:
    data = json.loads((SKILLS_DIR / "edit_file.json").read_text())
    data.update(change)
    folder = tmp_path / "skills"
    folder.mkdir()
    read = json.loads((SKILLS_DIR / "read_file.json").read_text())
    (folder / "read_file.json").write_text(json.dumps({**read, "enhanced_by": []}))
    (folder / "edit_file.json").write_text(json.dumps(data))
    with pytest.raises(BadInput) as caught:
        load_registry(dirs=[folder])
    message = str(caught.value)
    assert "\n" not in message and "edit_file.json" in message
    assert f"edit_file.json: {field}:" in message if field else True
    assert problem in message


def test_missing_field_and_bad_json_name_the_file(tmp_path: Path) -> None:
    data = json.loads((SKILLS_DIR / "read_file.json").read_text())
    del data["handler"]
    (tmp_path / "read_file.json").write_text(json.dumps(data))
    with pytest.raises(BadInput, match=r"read_file\.json: handler: 'handler' is a required"):
        load_registry(dirs=[tmp_path])
    (tmp_path / "read_file.json").write_text('{"id": ')
    with pytest.raises(BadInput, match=r"read_file\.json: not valid JSON \(line 1"):
        load_registry(dirs=[tmp_path])


def test_a_manifest_that_loaded_once_is_checked_again_once_it_changes(tmp_path: Path) -> None:
    """A process remembers manifests that passed (workers skip the check): a manifest
    broken after it passed must still be refused, whether its text or its path changed."""
    data = {**json.loads((SKILLS_DIR / "read_file.json").read_text()), "enhanced_by": []}
    (tmp_path / "read_file.json").write_text(json.dumps(data))
    assert load_registry(dirs=[tmp_path]).get("read_file").version == data["version"]
    (tmp_path / "read_file.json").write_text(json.dumps({**data, "version": 3}))
    with pytest.raises(BadInput, match=r"read_file\.json: version: 3 is not of type"):
        load_registry(dirs=[tmp_path])
    other = tmp_path / "other"
    other.mkdir()
    (other / "peek.json").write_text(json.dumps(data))  # the same text, another file name
    with pytest.raises(BadInput, match=r"peek\.json: id: id 'read_file' differs"):
        load_registry(dirs=[other])


def test_workspace_skills_override_and_extend_the_shipped_ones(tmp_path: Path) -> None:
    (tmp_path / "skills").mkdir()
    data = json.loads((SKILLS_DIR / "read_file.json").read_text())
    (tmp_path / "skills" / "read_file.json").write_text(json.dumps({**data, "version": "9.0.0"}))
    extra = {**data, "id": "peek", "name": "Peek", "tags": ["peek"]}
    (tmp_path / "skills" / "peek.json").write_text(json.dumps(extra))
    registry = load_registry(tmp_path)
    assert registry.get("read_file").version == "9.0.0"
    assert "peek" in registry and len(registry) == len(IDS) + 1


# ---- handlers on a real git repository -----------------------------------------------


def test_file_skills_read_write_edit_move_delete(box: SkillToolbox, repo: Path) -> None:
    assert "return x" in ok(box, "read_file", path="src/app.py")
    ok(box, "write_file", path="src/util.py", content="def helper():\n    return 2\n")
    ok(box, "edit_file", path="src/util.py", old="return 2", new="return 3")
    assert ok(box, "move_file", source="src/util.py", destination="src/helpers.py")
    assert (repo / "src/helpers.py").read_text().endswith("return 3\n")
    assert not (repo / "src/util.py").exists()
    refused = box.call("delete_file", {"path": "src/helpers.py"})
    assert refused.is_error and "confirm" in refused.content
    assert (repo / "src/helpers.py").exists()
    ok(box, "delete_file", path="src/helpers.py", confirm=True)
    assert not (repo / "src/helpers.py").exists()
    assert {"src/util.py", "src/helpers.py"} <= box.touched
    exists = box.call("move_file", {"source": "README.md", "destination": "src/app.py"})
    assert exists.is_error and "overwrite" in exists.content


def test_apply_patch_applies_all_hunks_or_none(box: SkillToolbox, repo: Path) -> None:
    patch = (
        "--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-demo\n+demo app\n"
        "--- a/src/app.py\n+++ b/src/app.py\n@@ -5,2 +5,2 @@\n def main():\n"
        "-    return App().run(1)\n+    return App().run(2)\n"
    )
    assert "applied to README.md, src/app.py" in ok(box, "apply_patch", patch=patch)
    assert (repo / "README.md").read_text() == "demo app\n"
    assert "run(2)" in (repo / "src/app.py").read_text()
    stale = box.call("apply_patch", {"patch": patch})  # the old lines are gone now
    assert stale.is_error and "nothing changed" in stale.content
    outside = "--- a/../x.txt\n+++ b/../x.txt\n@@ -0,0 +1 @@\n+x\n"
    assert box.call("apply_patch", {"patch": outside}).content.startswith("refused: ")


def test_search_skills(box: SkillToolbox) -> None:
    assert ok(box, "list_files", path="src") == "src/__init__.py\nsrc/app.py"
    assert ok(box, "find_files", name="test_*.py") == "tests/test_app.py"
    assert "tests/" in ok(box, "find_files", name="TEST").splitlines()
    assert ok(box, "search_code", pattern="RETURN X", ignore_case=True).startswith("src/app.py:3:")
    outline = ok(box, "file_outline", path="src/app.py").splitlines()
    assert outline == ["1: class App", "2:     def run(self, x)", "5: def main()"]
    assert ok(box, "todo_scan").startswith("TODO 1\nsrc/app.py:3:")
    stats = ok(box, "code_stats")
    assert stats.startswith("total: 5 text files") and ".py" in stats


def test_file_outline_of_other_languages(box: SkillToolbox, repo: Path) -> None:
    (repo / "web.ts").write_text(
        "export function start(port: number) {}\nconst x = 1;\nexport class Server {}\n"
    )
    assert ok(box, "file_outline", path="web.ts").splitlines() == [
        "1: export function start(port: number) {}",
        "3: export class Server {}",
    ]


def test_git_skills_status_diff_log_blame(box: SkillToolbox, repo: Path) -> None:
    assert ok(box, "git_status").startswith("## main\n(nothing changed)")
    (repo / "README.md").write_text("changed\n")
    assert " M README.md" in ok(box, "git_status")
    diff = ok(box, "git_diff")
    assert "-demo\n+changed" in diff
    assert ok(box, "git_diff", staged=True) == "(no differences)"
    assert "+changed" in ok(box, "git_diff", base="HEAD~1", path="README.md")
    assert box.call("git_diff", {"base": "--output=/tmp/x"}).is_error
    log = ok(box, "git_log").splitlines()
    assert [line.split(": ", 1)[1] for line in log] == ["package marker", "initial"]
    assert len(ok(box, "git_log", limit=1, path="src/app.py").splitlines()) == 1
    blame = ok(box, "git_blame", path="src/app.py", start=5, end=6).splitlines()
    assert len(blame) == 2 and "def main" in blame[0]
    assert box.call("git_blame", {"path": "../x"}).content.startswith("refused: ")


def test_git_commit_commits_touched_files_on_the_task_branch(box: SkillToolbox, repo: Path) -> None:
    run_git(repo, "checkout", "-q", "-b", "pd/run1/task1")
    ok(box, "write_file", path="NEW.md", content="new\n")
    (repo / "untracked-by-command.txt").write_text("not mine\n")
    res = ok(box, "git_commit", message="checkpoint", confirm=True)
    assert res.startswith("committed ") and "on pd/run1/task1: NEW.md" in res
    assert run_git(repo, "log", "-1", "--format=%s %an") == "checkpoint pd"
    assert run_git(repo, "status", "--porcelain") == "?? untracked-by-command.txt"
    again = box.call("git_commit", {"message": "empty", "confirm": True})
    assert again.is_error and "nothing to commit" in again.content


def test_run_tests_uses_the_mission_command_or_detects_pytest(
    repo: Path, registry: SkillRegistry
) -> None:
    detected = SkillToolbox(repo, [registry.get("run_tests")], command_timeout=60)
    res = detected.call("run_tests", {})
    assert not res.is_error and res.content.startswith("pytest: `python -m pytest -q` passed")
    one = detected.call("run_tests", {"target": "tests/test_app.py"})
    assert "1 passed" in one.content
    (repo / "check.sh").write_text("grep -q ok README.md || { echo 'README lacks ok'; exit 4; }\n")
    gated = SkillToolbox(repo, [registry.get("run_tests")], test_command="bash check.sh")
    failed = gated.call("run_tests", {})
    assert failed.is_error and "FAILED (exit code 4)" in failed.content
    assert "README lacks ok" in failed.content
    (repo / "README.md").write_text("ok\n")
    assert gated.call("run_tests", {}).content.startswith("tests: `bash check.sh` passed")


def test_run_tests_detects_npm_and_says_when_nothing_fits(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "js", {"package.json": '{"scripts": {"test": "echo js-ok"}}'})
    registry = load_registry()
    box = SkillToolbox(repo, [registry.get("run_tests")], command_timeout=60)
    if shutil.which("npm"):
        res = box.call("run_tests", {})
        assert res.content.startswith("npm test: ") and "js-ok" in res.content
    bare = SkillToolbox(make_repo(tmp_path / "bare"), [registry.get("run_tests")])
    none = bare.call("run_tests", {})
    assert none.is_error and "no test runner found" in none.content and "pytest" in none.content


def test_linter_and_formatter_use_ruff_and_say_when_none_is_found(
    repo: Path, registry: SkillRegistry
) -> None:
    if not shutil.which("ruff"):
        pytest.skip("ruff is a test dependency but is not on PATH")
    box = SkillToolbox(repo, registry.skills.values())
    (repo / "src/bad.py").write_text("import os\nx=1\n")
    lint = box.call("run_linter", {"path": "src/bad.py"})
    assert lint.is_error and lint.content.startswith("ruff: `ruff check src/bad.py` FAILED")
    assert "F401" in lint.content
    ok(box, "run_formatter", path="src/bad.py")
    assert (repo / "src/bad.py").read_text() == "import os\n\nx = 1\n"
    no_tools = SkillToolbox(repo, registry.skills.values(), env={"PATH": str(tmp_bin(repo))})
    for name in ("run_linter", "run_formatter"):
        res = no_tools.call(name, {})
        assert res.is_error and "found for this project" in res.content


def tmp_bin(repo: Path) -> Path:
    """A PATH with bash and git only, so no linter or formatter can be found."""
    folder = repo.parent / "bin"
    folder.mkdir(exist_ok=True)
    for tool in ("bash", "git"):
        target = folder / tool
        if not target.exists():
            target.symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    return folder


def test_detection_follows_the_project_files(tmp_path: Path) -> None:
    registry = load_registry()
    rust = make_repo(tmp_path / "rs", {"Cargo.toml": '[package]\nname = "x"\n'})
    go = make_repo(tmp_path / "go", {"go.mod": "module x\n"})
    boxes = {p: SkillToolbox(p, registry.skills.values()) for p in (rust, go)}
    if shutil.which("cargo"):
        assert detect(boxes[rust], TESTS).name == "cargo test"  # type: ignore[union-attr]
    if shutil.which("go"):
        assert detect(boxes[go], TESTS).name == "go test"  # type: ignore[union-attr]
    assert detect(boxes[go], LINTERS) is None or detect(boxes[go], LINTERS).name == "go vet"  # type: ignore[union-attr]
    assert detect(boxes[rust], FORMATTERS) in (None, *FORMATTERS)


def test_list_dependencies_reads_every_manifest_kind(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "deps",
        {
            "pyproject.toml": '[project]\ndependencies = ["rich>=13"]\n'
            '[project.optional-dependencies]\ntest = ["pytest"]\n',
            "requirements.txt": "# pinned\nrequests==2.31  # http\n-e .\n",
            "package.json": '{"dependencies": {"react": "^18"}, "devDependencies": {"vite": "5"}}',
            "Cargo.toml": '[dependencies]\nserde = { version = "1" }\n',
            "go.mod": "module x\n\nrequire (\n\tgithub.com/a/b v1.2.0\n)\n",
        },
    )
    out = ok(SkillToolbox(repo, load_registry().skills.values()), "list_dependencies")
    for expected in (
        "dependencies: rich>=13",
        "optional [test]: pytest",
        "requirements: requests==2.31",
        "dependencies: react ^18",
        "devDependencies: vite 5",
        "serde 1",
        "require: github.com/a/b v1.2.0",
    ):
        assert expected in out
    empty = ok(SkillToolbox(make_repo(tmp_path / "none"), load_registry().skills.values()),
               "list_dependencies")  # fmt: skip
    assert empty.startswith("no dependency files")


@pytest.fixture
def dev_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200 if self.path == "/health" else 404
            if self.path == "/away":
                self.send_response(302)
                self.send_header("Location", "http://example.com/")
                self.end_headers()
                return
            body = b"ok" if code == 200 else b"missing"
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_http_get_reaches_only_the_workers_own_localhost_ports(
    repo: Path, registry: SkillRegistry, dev_server: int
) -> None:
    env = {**os.environ, "PD_PORT_BASE": str(dev_server)}
    box = SkillToolbox(repo, [registry.get("http_get")], env=env)
    assert ok(box, "http_get", url="/health") == "HTTP 200 (text/plain)\nok"
    missing = box.call("http_get", {"url": f"http://localhost:{dev_server}/nope"})
    assert missing.is_error and missing.content.startswith("HTTP 404")
    away = box.call("http_get", {"url": f"http://127.0.0.1:{dev_server}/away"})
    assert away.is_error and "not on localhost" in away.content
    for url in ("http://example.com/", "file:///etc/passwd", "http://10.0.0.1/"):
        assert box.call("http_get", {"url": url}).content.startswith("refused: ")
    other = box.call("http_get", {"url": f"http://127.0.0.1:{dev_server + 100}/"})
    assert other.content.startswith("refused: port")


def test_skill_input_is_checked_against_the_manifest_schema(box: SkillToolbox) -> None:
    bad = box.call("git_log", {"limit": "ten"})
    assert bad.is_error and bad.content == "git_log: limit: 'ten' is not of type 'integer'"
    extra = box.call("read_file", {"path": "README.md", "colour": "red"})
    assert extra.is_error and "'colour' was unexpected" in extra.content
    assert box.call("read_file", {"path": "README.md", "offset": None}).content.endswith("demo\n")
    unknown = box.call("teleport", {})
    assert unknown.is_error and "unknown tool 'teleport'" in unknown.content
    assert ok(box, "search_files", pattern="demo")  # the old name still answers


def test_skill_handlers_stay_confined(box: SkillToolbox, repo: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("top secret\n")
    (repo / "link").symlink_to(tmp_path / "secret.txt")
    for name, args in [
        ("read_file", {"path": "link"}),
        ("file_outline", {"path": "../secret.txt"}),
        ("delete_file", {"path": "link", "confirm": True}),
        ("move_file", {"source": "link", "destination": "x.txt"}),
        ("move_file", {"source": "README.md", "destination": "../moved.md"}),
        ("git_blame", {"path": ".git/config"}),
        ("list_dependencies", {"path": ".."}),
        ("run_linter", {"path": "/etc"}),
    ]:
        res = box.call(name, args)
        assert res.is_error and res.content.startswith("refused: "), (name, res.content)
    assert (tmp_path / "secret.txt").read_text() == "top secret\n"
    assert (repo / "README.md").exists() and (repo / "link").is_symlink()


# ---- selection -----------------------------------------------------------------------


def test_selection_keeps_core_skills_and_matches_the_task(registry: SkillRegistry) -> None:
    chosen = select_skills(registry, CORE, CAPS, "Fix the failing test and run the linter")
    ids = [s.id for s in chosen]
    assert ids[:4] == CORE and "run_linter" in ids and 3 <= len(ids) <= 8
    web = select_skills(registry, CORE, CAPS, "Add a /health endpoint to the web server")
    assert "http_get" in [s.id for s in web]


def test_selection_pulls_in_requires_and_lets_the_first_of_a_conflict_win(
    registry: SkillRegistry,
) -> None:
    picked = choose_skills(registry, ["git_commit"], [], "apply a patch to several files")
    assert picked.ids[:2] == ["git_commit", "git_status"]  # git_commit requires git_status
    assert {"apply_patch", "read_file"} <= set(picked.ids) and "edit_file" not in picked.ids
    edit_first = choose_skills(registry, ["edit_file"], [], "apply a patch to several files")
    assert "apply_patch" not in edit_first.ids
    assert edit_first.skipped["apply_patch"] == "conflicts with edit_file, chosen first"


def test_selection_fills_up_to_three_and_refuses_impossible_cores(
    registry: SkillRegistry,
) -> None:
    assert [s.id for s in select_skills(registry, [], [], "")] == [
        "read_file", "list_files", "search_code"
    ]  # fmt: skip
    with pytest.raises(BadInput, match="core skill apply_patch"):
        select_skills(registry, ["edit_file", "apply_patch"], [], "")
    with pytest.raises(BadInput, match="no such skill"):
        select_skills(registry, ["teleport"], [], "")


def test_the_ranker_is_called_only_when_more_than_ten_remain(registry: SkillRegistry) -> None:
    reply = '["git_blame", "nonsense", "git_log"]'
    provider = ScriptedProvider.from_data(
        {"version": 1, "tasks": {"*": [[{"text": f"Best first: {reply}"}]]}}
    )
    calls: list[list[str]] = []
    records: list[dict] = []
    ranker = model_ranker(provider, "cheap", record=records.append)

    def rank(text: str, candidates: list[Skill]) -> list[str]:
        calls.append([s.id for s in candidates])
        return ranker(text, candidates)

    narrow = choose_skills(registry, CORE, [], "run the linter", rank=rank)
    assert calls == [] and not narrow.ranked and len(narrow.candidates) <= 10
    broad = "review the git history diff log blame commit status; search and outline code"
    wide = choose_skills(registry, ["read_file"], ["git-operations", "review"], broad, rank=rank)
    assert len(calls) == 1 and len(calls[0]) > 10 and wide.ranked
    assert wide.ids[1:3] == ["git_blame", "git_log"]  # the model's order, unknown ids dropped
    assert records[0]["ranked"] == ["git_blame", "git_log"]


def test_an_unusable_ranking_reply_keeps_the_filter_order(registry: SkillRegistry) -> None:
    provider = ScriptedProvider.from_data(
        {"version": 1, "tasks": {"*": [[{"text": "I would pick the git tools."}]]}}
    )
    broad = "review the git history diff log blame commit status; search and outline code"
    caps = ["git-operations", "review"]
    ranked = choose_skills(registry, ["read_file"], caps, broad, rank=model_ranker(provider, "m"))
    plain = choose_skills(registry, ["read_file"], caps, broad)
    assert ranked.ranked and ranked.ids == plain.ids
    assert parse_ranking('["a", 3] then ["read_file", "read_file"]', ["read_file"]) == ["read_file"]


def synthetic(n: int, requires: list[tuple[int, int]], conflicts: list[tuple[int, int]]) -> Any:
    """A registry of ``n`` skills with random edges (requires only point to lower ids)."""
    base = json.loads((SKILLS_DIR / "read_file.json").read_text())
    skills = []
    for i in range(n):
        data = {**base, "id": f"s{i}", "tags": [f"t{i % 4}"], "trigger_examples": [f"word{i % 5}"]}
        data["requires"] = sorted({f"s{b}" for a, b in requires if a == i and b < i})
        data["conflicts"] = sorted({f"s{b}" for a, b in conflicts if a == i and b != i})
        skills.append(Skill(**data))
    return SkillRegistry(skills)


def consistent(registry: SkillRegistry, ids: list[str]) -> bool:
    """No conflict inside the closure of ``ids`` (what load_registry checks per skill)."""
    needed = {c for i in ids for c in registry.closure(i)}
    return not any(registry.conflicts_of(i) & needed for i in needed)


edges = st.lists(st.tuples(st.integers(0, 13), st.integers(0, 13)), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    n=st.integers(6, 14),
    requires=edges,
    conflicts=edges,
    core=st.lists(st.integers(0, 13), max_size=3, unique=True),
    caps=st.lists(st.sampled_from(["t0", "t1", "t2", "t3", "other"]), max_size=3),
    text=st.lists(st.sampled_from([*(f"word{i}" for i in range(6)), "s3", "noise"]), max_size=6),
    ranked=st.booleans(),
)
def test_selection_property(n, requires, conflicts, core, caps, text, ranked) -> None:  # type: ignore[no-untyped-def]
    registry = synthetic(n, requires, conflicts)
    assume(all(consistent(registry, [s]) for s in registry.skills))
    core_ids = [f"s{i}" for i in core if i < n]
    assume(consistent(registry, core_ids))
    assume(len({c for i in core_ids for c in registry.closure(i)}) <= 8)
    # enough compatible skills to reach three: the whole registry is conflict-free here
    assume(consistent(registry, list(registry.skills)) or n >= 12)
    rank = (lambda t, cands: [c.id for c in reversed(cands)]) if ranked else None
    picked = choose_skills(registry, core_ids, caps, " ".join(text), rank=rank)
    ids = set(picked.ids)
    assert len(ids) == len(picked.ids) <= 8
    assert set(core_ids) <= ids
    assert all(set(registry.closure(i)) <= ids for i in ids), "requires not closed"
    assert not any(registry.conflicts_of(i) & ids for i in ids), "two conflicting skills"
    if consistent(registry, list(registry.skills)):
        assert len(ids) >= 3


@settings(max_examples=60, deadline=None)
@given(
    core=st.lists(st.sampled_from(sorted(IDS - {"apply_patch"})), max_size=4, unique=True),
    text=st.text(alphabet="abcdefghijklmnopqrstuvwxyz _/.", max_size=80),
    caps=st.lists(st.sampled_from([*CAPS, "git-operations", "review", "browser"]), max_size=3),
)
def test_selection_property_on_the_shipped_catalog(core, text, caps) -> None:  # type: ignore[no-untyped-def]
    registry = load_registry()
    ids = {s.id for s in select_skills(registry, core, caps, text)}
    assert 3 <= len(ids) <= 8 and set(core) <= ids
    assert all(set(registry.closure(i)) <= ids for i in ids)
    assert not any(registry.conflicts_of(i) & ids for i in ids)


# ---- the agent loop: discover_skills and what was offered and used -------------------


def test_discover_skills_adds_tools_from_the_next_turn(repo: Path, registry: SkillRegistry) -> None:
    turns = [
        {"tool_calls": [{"name": "discover_skills", "input": {"need": "show the git history"}}]},
        {"tool_calls": [{"name": "git_log", "input": {"limit": 1}}]},
        {"tool_calls": [{"name": "finish", "input": {"summary": "looked"}}]},
    ]
    provider = ScriptedProvider.from_data({"version": 1, "tasks": {"t": [turns]}})
    chosen = select_skills(registry, ["read_file", "list_files", "search_code"], [], "")
    box = SkillToolbox(repo, chosen, catalog=registry)
    records: list[dict] = []
    result = run_agent(
        provider, box, system="s", prompt="p", model="m", max_tokens=100, max_turns=5,
        task_id="t", attempt=1, record=records.append,
    )  # fmt: skip
    requests = [r for r in records if r["kind"] == "request"]
    first = [t["name"] for t in requests[0]["tools"]]
    assert first == ["read_file", "list_files", "search_code", "discover_skills", "finish"]
    assert "git_log" in [t["name"] for t in requests[1]["tools"]]
    assert "tools" not in requests[2]  # unchanged since the last request
    log = next(r for r in records if r["kind"] == "tool" and r["name"] == "git_log")
    assert not log["is_error"] and "package marker" in log["result"]
    assert result.finished and "git_log" in result.skills_offered
    assert result.skills_used == ["discover_skills", "git_log"]
    assert records[-1]["skills_used"] == ["discover_skills", "git_log"]


def test_discover_skills_never_adds_a_conflicting_skill(
    repo: Path, registry: SkillRegistry
) -> None:
    box = SkillToolbox(repo, [registry.get("read_file"), registry.get("edit_file")],
                       catalog=registry)  # fmt: skip
    res = box.call("discover_skills", {"need": "apply_patch"})
    assert "apply_patch" not in [s["name"] for s in box.specs()]
    assert "apply_patch" not in res.content


def test_a_plain_toolbox_reports_its_core_tools(tmp_path: Path) -> None:
    from orchestrator.team.tools import Toolbox

    provider = ScriptedProvider.from_data(
        {
            "version": 1,
            "tasks": {"t": [[{"tool_calls": [{"name": "finish", "input": {"summary": "x"}}]}]]},
        }
    )
    result = run_agent(
        provider, Toolbox(tmp_path), system="s", prompt="p", model="m", max_tokens=10,
        max_turns=2, task_id="t", attempt=1,
    )  # fmt: skip
    assert "search_files" in result.skills_offered and result.skills_used == []


# ---- the CLI -------------------------------------------------------------------------


def test_pd_skills_list_search_show(tmp_path: Path) -> None:
    listed = pd("skills", "list", "--json", cwd=tmp_path, check=True)
    assert {row["id"] for row in json.loads(listed.stdout)} == IDS
    found = json.loads(pd("skills", "search", "lint", "--json", cwd=tmp_path, check=True).stdout)
    assert found[0]["id"] == "run_linter"
    shown = json.loads(pd("skills", "show", "git_commit", "--json", cwd=tmp_path).stdout)
    assert shown["requires"] == ["git_status"] and shown["requires_confirmation"] is True
    text = pd("skills", "show", "edit_file", cwd=tmp_path, check=True).stdout
    assert "requires: read_file" in text
    missing = pd("skills", "show", "teleport", cwd=tmp_path)
    assert missing.returncode == 2 and "no such skill" in missing.stderr
    home = Path(os.environ["PD_HOME"])  # the workspace pd runs in
    (home / "skills").mkdir(parents=True)
    (home / "skills" / "broken.json").write_text("{}")
    broken = pd("skills", "list", cwd=tmp_path)
    assert broken.returncode == 2 and "broken.json" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


def test_requests_to_the_ranker_name_the_candidates(registry: SkillRegistry) -> None:
    seen: list[Any] = []

    class Recording(ScriptedProvider):
        def complete(self, request):  # type: ignore[no-untyped-def]
            seen.append(request)
            return super().complete(request)

    provider = Recording.from_data({"version": 1, "tasks": {"*": [[{"text": "[]"}]]}})
    model_ranker(provider, "cheap", task_id="t1/skills")("do x", list(registry.skills.values()))
    prompt = seen[0].messages[0]["content"][0]["text"]
    assert seen[0].model == "cheap" and seen[0].task_id == "t1/skills" and seen[0].tools == []
    assert "- git_blame: " in prompt and prompt.startswith("Task:\ndo x")


def test_git_commit_refuses_a_detached_head(box: SkillToolbox, repo: Path) -> None:
    run_git(repo, "checkout", "-q", "--detach")
    (repo / "README.md").write_text("x\n")
    res = box.call("git_commit", {"message": "m", "confirm": True})
    assert res.is_error and "detached" in res.content
    assert subprocess.run(["git", "-C", str(repo), "diff", "--quiet"]).returncode == 1


def test_every_shipped_roles_core_skills_can_be_offered(registry: SkillRegistry) -> None:
    from orchestrator.team.roles import load_roles

    for role in load_roles().values():
        ids = [s.id for s in select_skills(registry, role.skills, role.capabilities, role.name)]
        assert 3 <= len(ids) <= 8 and set(role.skills) <= set(ids), role.id
