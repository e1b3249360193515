"""`--output-format sarif`: SARIF 2.1.0 for GitHub code scanning (and any SARIF viewer).

- `tool.driver.rules`: every rule of the table, with `shortDescription` (its summary), `fullDescription` (what it
  does), `help` (the whole rule documentation, text and Markdown) and `helpUri` (the rule's page under the
  Documentation URL of `[project.urls]`); `ruleId` is the rule code, which never changes.
- `results`: `level` (error / warning / note), the message, one physical location relative to the project root
  (`uriBaseId` %SRCROOT%; columns are Unicode code points: `run.columnKind`), `partialFingerprints`
  (`primaryLocationLineHash`: rule, file and the flagged line's text, so it survives lines moving elsewhere) and
  every fix as a SARIF `fix` (its applicability in the fix's properties).
- Files that could not be linted are tool execution notifications; `executionSuccessful` is false then.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from migrator.engine.diagnostics import Diagnostic, FileResult, Location
from migrator.engine.table import LintRule, load_table
from migrator.output.common import TOOL, display_path, error_position, fingerprints, homepage, rule_url
from migrator.output.rule_doc import render_rule

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {"error": "error", "warning": "warning", "info": "note"}
PROBLEM_SEVERITY = {"error": "error", "warning": "warning", "info": "recommendation"}
SRCROOT = "%SRCROOT%"


def _artifact(path: str) -> dict[str, str]:
    uri = quote(path, safe="/")
    if Path(path).is_absolute():
        return {"uri": Path(path).as_uri()}
    return {"uri": uri, "uriBaseId": SRCROOT}


def _region(start: Location, end: Location) -> dict[str, int]:
    return {"startLine": start.row, "startColumn": start.column, "endLine": end.row, "endColumn": end.column}


def rule_descriptor(rule: LintRule) -> dict[str, Any]:
    documentation = render_rule(rule)
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": " ".join(rule.summary.split())},
        "fullDescription": {"text": " ".join(rule.what.split())},
        "help": {"text": documentation, "markdown": documentation},
        "helpUri": rule_url(rule.code),
        "defaultConfiguration": {"level": LEVEL[rule.severity]},
        "properties": {"tags": ["nemo-migration", *rule.languages], "precision": "very-high",
                       "problem.severity": PROBLEM_SEVERITY[rule.severity]},
    }


def _fix(d: Diagnostic, artifact: dict[str, str]) -> dict[str, Any]:
    assert d.fix is not None
    return {
        "description": {"text": f"{d.fix.message} ({d.fix.applicability} fix)"},
        "artifactChanges": [{"artifactLocation": artifact, "replacements": [
            {"deletedRegion": _region(e.location, e.end_location), "insertedContent": {"text": e.content}}
            for e in d.fix.edits]}],
        "properties": {"applicability": d.fix.applicability},
    }


def render(results: list[FileResult], *, root: Path | None = None, **_: Any) -> str:
    from migrator import __version__

    table = load_table()
    rules = sorted(table.lint_rules, key=lambda r: r.code)
    index = {r.code: i for i, r in enumerate(rules)}
    sarif_results = []
    notifications = []
    for result in results:
        path = display_path(result.filename, root)
        artifact = _artifact(path)
        if result.error is not None:
            physical: dict[str, Any] = {"artifactLocation": artifact}
            at = error_position(result)
            if at is not None:
                physical["region"] = {"startLine": at.row, "startColumn": at.column}
            notifications.append({"level": "error", "message": {"text": result.error},
                                  "locations": [{"physicalLocation": physical}]})
            continue
        for d, fingerprint in fingerprints(result, path):
            entry: dict[str, Any] = {
                "ruleId": d.code,
                "level": LEVEL[d.severity],
                "message": {"text": d.message},
                "locations": [{"physicalLocation": {"artifactLocation": artifact,
                                                    "region": _region(d.location, d.end_location)}}],
                "partialFingerprints": {"primaryLocationLineHash": fingerprint},
            }
            if d.code in index:
                entry["ruleIndex"] = index[d.code]
            if d.fix is not None:
                entry["fixes"] = [_fix(d, artifact)]
            sarif_results.append(entry)
    run = {
        "tool": {"driver": {
            "name": TOOL,
            "fullName": "nemo-migrator",
            "informationUri": homepage(),
            "version": __version__,
            "semanticVersion": __version__,
            "rules": [rule_descriptor(r) for r in rules],
        }},
        "invocations": [{"executionSuccessful": not notifications,
                         **({"toolExecutionNotifications": notifications} if notifications else {})}],
        "columnKind": "unicodeCodePoints",
        "results": sarif_results,
    }
    document = {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
