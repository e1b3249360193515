"""Every --output-format: committed snapshots, SARIF against the OASIS schema, rdjson against reviewdog's shape,
and the properties each platform relies on (byte columns, escaping, stable ids, relative paths)."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from migrator.engine.diagnostics import Diagnostic, Edit, FileResult, Fix, Location
from migrator.engine.fixes import apply_edits
from migrator.engine.table import load_table
from migrator.output import RENDERERS, renderer
from migrator.output.common import fix_span, project_urls
from tests import snapshot_cases
from tests.conftest import NEMO_CONFIGS, ROOT, SHARED, need_shared, run_cli

SARIF_SCHEMA = SHARED / "reference" / "sarif-schema-2.1.0.json"


def rendered(name: str) -> str:
    return snapshot_cases.render(name)


# ---------------------------------------------------------------------------------------------------- snapshots
@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_snapshot(name):
    path = snapshot_cases.snapshot_path(name)
    assert path.exists(), f"no snapshot for {name}: run `python -m tests.snapshot_cases`"
    assert rendered(name) == path.read_bytes().decode("utf-8"), (
        f"{path.name} differs from the renderer's output; if the change is intended, regenerate it deliberately "
        "with `python -m tests.snapshot_cases` and review the diff")


def test_every_format_has_a_snapshot_extension():
    assert set(RENDERERS) == set(snapshot_cases.EXTENSION)
    assert set(RENDERERS) >= {"text", "json", "github", "rdjson", "rdjsonl", "sarif", "gitlab", "junit"}


# ---------------------------------------------------------------------------------------------------- SARIF
@pytest.fixture(scope="module")
def sarif_validator():
    schema = json.loads(need_shared(SARIF_SCHEMA).read_text(encoding="utf-8"))
    assert schema["$schema"].startswith("http://json-schema.org/draft-04/")
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _sarif_errors(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_sarif_snapshot_validates_against_the_oasis_schema(sarif_validator):
    document = json.loads(rendered("sarif"))
    assert _sarif_errors(sarif_validator, document) == []
    assert document["version"] == "2.1.0"


def test_sarif_of_the_real_nemo_configs_and_of_nothing_validates(sarif_validator, tmp_path):
    need_shared(NEMO_CONFIGS)
    proc = run_cli("lint", "--output-format", "sarif", str(NEMO_CONFIGS), "--project-root", str(SHARED))
    document = json.loads(proc.stdout)
    assert _sarif_errors(sarif_validator, document) == []
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in document["runs"][0]["results"]}
    assert "fixtures/nemo-configs/megatron_mamba_config.yaml" in uris  # relative to --project-root
    empty = json.loads(renderer("sarif")([]))
    assert _sarif_errors(sarif_validator, empty) == [] and empty["runs"][0]["results"] == []


def test_sarif_rules_descriptions_and_help_uris():
    document = json.loads(rendered("sarif"))
    driver = document["runs"][0]["tool"]["driver"]
    table = load_table()
    assert [r["id"] for r in driver["rules"]] == sorted(r.code for r in table.lint_rules)
    docs = project_urls()["Documentation"]  # from the installed package's metadata ([project.urls])
    for descriptor in driver["rules"]:
        rule = table.rule_by_code[descriptor["id"]]
        assert descriptor["name"] == rule.name
        assert descriptor["shortDescription"]["text"] == " ".join(rule.summary.split())
        assert descriptor["fullDescription"]["text"] == " ".join(rule.what.split())
        assert "## Why is this bad?" in descriptor["help"]["markdown"]
        assert descriptor["helpUri"] == f"{docs}/rules/{rule.code}.md"
        assert (ROOT / "docs" / "rules" / f"{rule.code}.md").is_file()  # the page the URI names exists
    for result in document["runs"][0]["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert not result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].startswith("/")


def test_sarif_fingerprints_survive_lines_moving_and_distinguish_findings(tmp_path):
    body = "model:\n  dist_ckpt_format: zarr\n  dist_ckpt_parallel_load: \"False\"\n  dist_ckpt_parallel_save: \"False\"\n"
    path = tmp_path / "c.yaml"

    def prints() -> dict[str, tuple[str, int]]:
        proc = run_cli("lint", "--output-format", "sarif", "c.yaml", cwd=tmp_path)
        results = json.loads(proc.stdout)["runs"][0]["results"]
        return {r["partialFingerprints"]["primaryLocationLineHash"]:
                (r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in results}

    path.write_text(body)
    before = prints()
    path.write_text("# a comment added above\nname: x\n" + body)
    after = prints()
    assert len(before) == len(after) == 4  # all distinct
    assert set(before) == set(after)
    assert all(after[k][1] == before[k][1] + 2 for k in before)
    assert all(re.fullmatch(r"[0-9a-f]{16}:\d+", k) for k in before)


def test_sarif_lists_unreadable_files_as_notifications(sarif_validator, tmp_path):
    (tmp_path / "broken.yaml").write_text("model:\n  a: [1\n")
    proc = run_cli("lint", "--output-format", "sarif", "broken.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    document = json.loads(proc.stdout)
    assert _sarif_errors(sarif_validator, document) == []
    (invocation,) = document["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    assert "YAML syntax error" in invocation["toolExecutionNotifications"][0]["message"]["text"]


# ---------------------------------------------------------------------------------------------------- rdjson
# reviewdog's Diagnostic / DiagnosticResult (proto/rdf/reviewdog.proto, as described in lint-conventions.md):
# positions 1-based (column in UTF-8 bytes), ranges with a required start, severities by name.
_POSITION = {"type": "object", "properties": {"line": {"type": "integer", "minimum": 1},
                                              "column": {"type": "integer", "minimum": 1}},
             "additionalProperties": False}
_RANGE = {"type": "object", "required": ["start"], "properties": {"start": _POSITION, "end": _POSITION},
          "additionalProperties": False}
_LOCATION = {"type": "object", "required": ["path"],
             "properties": {"path": {"type": "string", "minLength": 1}, "range": _RANGE}, "additionalProperties": False}
_SEVERITY = {"enum": ["UNKNOWN_SEVERITY", "ERROR", "WARNING", "INFO"]}
_SOURCE = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "url": {"type": "string"}},
           "additionalProperties": False}
_CODE = {"type": "object", "required": ["value"], "properties": {"value": {"type": "string"}, "url": {"type": "string"}},
         "additionalProperties": False}
_SUGGESTION = {"type": "object", "required": ["range", "text"], "properties": {"range": _RANGE, "text": {"type": "string"}},
               "additionalProperties": False}
RDJSON_DIAGNOSTIC = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["message", "location"],
    "properties": {
        "message": {"type": "string", "minLength": 1},
        "location": _LOCATION,
        "severity": _SEVERITY,
        "source": _SOURCE,
        "code": _CODE,
        "suggestions": {"type": "array", "items": _SUGGESTION},
        "original_output": {"type": "string"},
        "related_locations": {"type": "array", "items": {
            "type": "object", "properties": {"message": {"type": "string"}, "location": _LOCATION},
            "additionalProperties": False}},
    },
    "additionalProperties": False,
}
RDJSON_RESULT = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["diagnostics"],
    "properties": {"diagnostics": {"type": "array", "items": RDJSON_DIAGNOSTIC}, "source": _SOURCE,
                   "severity": _SEVERITY},
    "additionalProperties": False,
}


def _ranges(diagnostic: dict):
    yield diagnostic["location"].get("range")
    for suggestion in diagnostic.get("suggestions", []):
        yield suggestion["range"]


def test_rdjson_and_rdjsonl_have_reviewdogs_shape():
    jsonschema.Draft7Validator.check_schema(RDJSON_RESULT)
    document = json.loads(rendered("rdjson"))
    jsonschema.Draft7Validator(RDJSON_RESULT).validate(document)
    lines = rendered("rdjsonl").splitlines()
    assert len(lines) == len(document["diagnostics"])
    for line in lines:
        diagnostic = json.loads(line)
        jsonschema.Draft7Validator(RDJSON_DIAGNOSTIC).validate(diagnostic)
        assert diagnostic["source"]["name"] == "nemo-migrate"  # each line is self-contained
    for diagnostic in document["diagnostics"]:
        for rng in filter(None, _ranges(diagnostic)):
            start, end = rng["start"], rng.get("end", rng["start"])
            assert (start["line"], start.get("column", 1)) <= (end["line"], end.get("column", 1))  # end exclusive


def test_rdjson_columns_are_utf8_bytes_and_every_fix_is_a_suggestion_that_applies():
    """Apply each suggestion to the file's bytes with reviewdog's semantics: the result is the fix's result."""
    results = snapshot_cases.build_results()
    document = json.loads(renderer("rdjson")(results, root=snapshot_cases.INPUTS))
    by_key = {}
    for result in results:
        for d in result.diagnostics:
            by_key[(Path(result.filename).relative_to(snapshot_cases.INPUTS).as_posix(), d.location.row, d.code)] = (
                d, result.source)
    fixes = sum(1 for r in results for d in r.diagnostics if d.fix)
    with_suggestions = [d for d in document["diagnostics"] if d.get("suggestions")]
    assert len(with_suggestions) == fixes and fixes >= 5  # safe and unsafe alike
    unicode_line = next(d for d in document["diagnostics"] if d.get("code", {}).get("value") == "NM113")
    assert unicode_line["location"]["range"]["start"] == {"line": 5, "column": 48}  # code point 46 after "ĉĥ"
    for entry in with_suggestions:
        rng = entry["location"]["range"]
        diagnostic, source = by_key[(entry["location"]["path"], rng["start"]["line"], entry["code"]["value"])]
        (suggestion,) = entry["suggestions"]
        data = source.encode("utf-8")
        lines = data.split(b"\n")
        offset = [sum(len(x) + 1 for x in lines[: i]) for i in range(len(lines) + 1)]
        start = offset[suggestion["range"]["start"]["line"] - 1] + suggestion["range"]["start"]["column"] - 1
        end = offset[suggestion["range"]["end"]["line"] - 1] + suggestion["range"]["end"]["column"] - 1
        applied = data[:start] + suggestion["text"].encode("utf-8") + data[end:]
        assert applied == apply_edits(source, diagnostic.fix.edits).encode("utf-8"), entry["message"]
        assert ("fix (safe)" in entry["message"]) == (diagnostic.fix.applicability == "safe")


def test_a_fix_with_several_edits_is_one_suggestion_of_its_whole_span():
    source = "model:\n  a: 1\n  b: 2\n"
    fix = Fix("unsafe", "swap", (Edit("x", Location(2, 3), Location(2, 4)), Edit("y", Location(3, 3), Location(3, 4))))
    d = Diagnostic("NM103", "unknown-setting", "m", "error", "c.yaml", Location(2, 3), Location(2, 4), fix)
    start, end, text = fix_span(d, source)
    assert (start, end, text) == (Location(2, 3), Location(3, 4), "x: 1\n  y")


# ---------------------------------------------------------------------------------------------------- github
ANNOTATION = re.compile(r"^::(error|warning|notice) ((?:[A-Za-z]+=[^,:]*)(?:,[A-Za-z]+=[^,:]*)*)::(.*)$")


def test_github_annotations():
    lines = rendered("github").splitlines()
    annotations = [ANNOTATION.match(line) for line in lines[:-1]]
    assert all(annotations), [line for line, m in zip(lines, annotations) if not m]
    assert lines[-1].startswith("Found 11 findings")  # the summary line, not a command
    props = [dict(p.split("=", 1) for p in m.group(2).split(",")) for m in annotations]
    multi = next(p for p in props if p.get("line") == "5" and p.get("endLine") == "6")
    assert "col" not in multi and "endColumn" not in multi  # GitHub rejects columns on a multi-line range
    single = next(p for p in props if p.get("line") == "3" and p.get("title") == "nemo-migrate (NM106)")
    assert single["col"] == "21" and single["endColumn"] == "25"
    odd = annotations[-1]
    assert odd.group(1) == "warning"
    assert "file=odd%2C name%3A 100%25.yaml" in odd.group(2)  # properties escape % , :
    assert "100%25 sure: zarr is deprecated,%0D%0Asee the second line%0A  fix (unsafe" in odd.group(3)
    assert {m.group(1) for m in annotations} == {"error", "warning", "notice"}  # info -> notice


# ---------------------------------------------------------------------------------------------------- gitlab
GITLAB_ISSUE = {
    "type": "object",
    "required": ["description", "check_name", "fingerprint", "severity", "location"],
    "properties": {
        "description": {"type": "string", "minLength": 1},
        "check_name": {"type": "string", "minLength": 1},
        "fingerprint": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "severity": {"enum": ["info", "minor", "major", "critical", "blocker"]},
        "location": {"type": "object", "required": ["path"], "properties": {
            "path": {"type": "string", "not": {"pattern": "^/"}},
            "lines": {"type": "object", "required": ["begin"]},
            "positions": {"type": "object", "required": ["begin"], "properties": {
                "begin": {"type": "object", "required": ["line"]}}}},
            "anyOf": [{"required": ["lines"]}, {"required": ["positions"]}]},
    },
}


def test_gitlab_code_quality_report():
    issues = json.loads(rendered("gitlab"))
    jsonschema.Draft7Validator({"type": "array", "items": GITLAB_ISSUE}).validate(issues)
    fingerprints = [i["fingerprint"] for i in issues]
    assert len(set(fingerprints)) == len(fingerprints)  # GitLab merges issues with equal fingerprints
    assert {i["severity"] for i in issues} == {"critical", "major", "minor", "info"}


# ---------------------------------------------------------------------------------------------------- junit
def test_junit_report_counts():
    root = ET.fromstring(rendered("junit").split("\n", 1)[1])
    assert root.tag == "testsuites"
    # 11 findings: 4 errors and 1 warning fail (the default --fail-on warning); 6 info notes are passing cases
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("13", "5", "1")
    suites = {s.get("name"): s for s in root}
    assert suites["conf/clean.yaml"].find("testcase/failure") is None
    assert suites["conf/broken.yaml"].find("testcase/error") is not None
    assert sum(int(s.get("failures")) for s in root) == 5
    assert len(root.findall("testsuite/testcase/system-out")) == 6


# ---------------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("name", ["github", "gitlab", "rdjson", "rdjsonl", "sarif", "junit"])
def test_cli_writes_paths_relative_to_the_project_root(tmp_path, name):
    (tmp_path / "repo" / "conf").mkdir(parents=True)
    (tmp_path / "repo" / "conf" / "gpt.yaml").write_text("model:\n  dist_ckpt_format: zarr\n")
    proc = run_cli("lint", "--output-format", name, "repo/conf/gpt.yaml", "--project-root", "repo", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "conf/gpt.yaml" in proc.stdout and "repo/conf" not in proc.stdout
    default = run_cli("lint", "--output-format", name, "conf/gpt.yaml", cwd=tmp_path / "repo")
    assert "conf/gpt.yaml" in default.stdout  # default root: the current directory


def test_lint_with_every_format_never_imports_pydantic_libcst_or_rich(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "c.yaml"
    path.write_text("model:\n  dist_ckpt_format: zarr\n")
    (tmp_path / "pyproject.toml").write_text('[tool.nemo-migrator]\nignore = ["NM111"]\n')
    from migrator.engine.table import load_table

    load_table()  # warm this session's rule-table cache: a cold one is validated with pydantic (first run only)
    code = (
        "import sys, runpy\n"
        "for fmt in sys.argv[1:]:\n"
        "    sys.argv = ['nemo-migrate', 'lint', '--output-format', fmt, 'c.yaml']\n"
        "    try:\n        runpy.run_module('migrator', run_name='__main__')\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron', 'pydantic', 'libcst', 'rich'))\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *sorted(RENDERERS)], capture_output=True, text=True,
                          cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_text_and_json_are_unchanged_by_the_project_root(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  dist_ckpt_format: zarr\n")
    findings = json.loads(run_cli("lint", "--output-format", "json", str(tmp_path / "c.yaml"),
                                  "--project-root", str(tmp_path)).stdout)
    assert findings[0]["filename"] == str(tmp_path / "c.yaml")  # the stable json contract keeps the given path


def test_empty_results_render_in_every_format():
    for name in RENDERERS:
        text = renderer(name)([FileResult(filename="x.yaml")], root=None)
        assert text or name == "rdjsonl"  # JSON Lines of nothing is nothing
