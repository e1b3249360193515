"""Fixit-style: every rule's and every setting's VALID/INVALID examples in rules/ are run automatically."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest

from migrator.cli.options import resolve_lint_targets, resolve_source
from migrator.engine.fixes import apply_edits
from migrator.engine.runner import LintOptions, check_text
from migrator.engine.diagnostics import FileResult
from migrator.engine.table import Example, load_table
from migrator.errors import MigratorError
from migrator.output.common import unreadable_diagnostic

TABLE = load_table()
CONFIGS = Path(tempfile.mkdtemp(prefix="nm-example-configs-"))


def _config_file(text: str | None) -> Path | None:
    """A python example's `config` (the NeMo 1.0 YAML of `lint --config`) as a file."""
    if text is None:
        return None
    path = CONFIGS / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    path.write_text(text)
    return path


def _lint(example: Example):
    target, bridge_target = resolve_lint_targets(example.target)
    options = LintOptions(target=target, bridge_target=bridge_target, source=resolve_source(
        f"nemo={example.source_release}" if example.source_release else None),
        config_path=_config_file(example.config))
    filename = "example.py" if example.lang == "python" else "example.yaml"
    try:
        diagnostics, _ = check_text(example.source, filename, TABLE, options)
    except MigratorError as exc:  # NM002: what the json format reports for a file that could not be linted
        return [unreadable_diagnostic(FileResult(filename=filename, error=str(exc)))]
    return diagnostics


def _span(d) -> str:
    return f"{d.location.row}:{d.location.column}-{d.end_location.row}:{d.end_location.column}"


def _cases():
    for rule in TABLE.lint_rules:
        for i, example in enumerate(rule.invalid):
            yield pytest.param(rule.code, example, False, id=f"{rule.code}-{rule.name}-INVALID_{i}")
        for i, example in enumerate(rule.valid):
            yield pytest.param(rule.code, example, True, id=f"{rule.code}-{rule.name}-VALID_{i}")


@pytest.mark.parametrize("code, example, valid", list(_cases()))
def test_rule_example(code, example, valid):
    diagnostics = _lint(example)
    mine = [d for d in diagnostics if d.code == code]
    if valid:
        assert not mine, f"VALID example reported {code}: {[(_span(d), d.message) for d in mine]}"
        return
    at = [d for d in mine if _span(d) == example.at]
    assert at, f"expected {code} at {example.at}; got {[(d.code, _span(d), d.message) for d in diagnostics]}"
    finding = at[0]
    if example.message_contains:
        assert example.message_contains in finding.message
    if example.fixed is None:
        assert finding.fix is None, f"unexpected fix {finding.fix}"
    else:
        assert finding.fix is not None, "expected a fix"
        assert apply_edits(example.source, finding.fix.edits) == example.fixed


def _setting_cases():
    for setting in TABLE.settings.settings:
        for i, source in enumerate(setting.examples.valid):
            yield pytest.param(setting.key, Example(source=source), None, id=f"{setting.key}-VALID_{i}")
        for i, example in enumerate(setting.examples.invalid):
            yield pytest.param(setting.key, example, example.code, id=f"{setting.key}-INVALID_{i}-{example.code}")


@pytest.mark.parametrize("key, example, code", list(_setting_cases()))
def test_setting_example(key, example, code):
    diagnostics = _lint(example)
    if code is None:
        rows = {i for i, line in enumerate(example.source.splitlines(), 1) if f"{key}:" in line}
        on_key = [(d.code, d.message) for d in diagnostics if d.location.row in rows]
        assert not on_key, f"VALID example of {key} has findings on its line: {on_key}"
        return
    assert any(d.code == code and _span(d) == example.at for d in diagnostics), (
        f"expected {code} at {example.at}; got {[(d.code, _span(d)) for d in diagnostics]}")


def test_every_rule_has_an_implementation_that_fires():
    """A documented rule whose examples never produce its code would be dead data."""
    fired = {d.code for rule in TABLE.lint_rules for ex in rule.invalid for d in _lint(ex)}
    yaml_rules = {r.code for r in TABLE.lint_rules if "yaml" in r.languages}
    assert yaml_rules <= fired


@pytest.mark.parametrize("language", ["yaml", "python"])
def test_every_language_a_rule_claims_has_an_example_that_fires(language):
    """A rule listing `python` in its languages has python INVALID examples that report it, and vice versa."""
    for rule in TABLE.lint_rules:
        examples = [ex for ex in rule.invalid if ex.lang == language]
        assert bool(examples) == (language in rule.languages), f"{rule.code}: {language} examples vs languages"
        for example in examples:
            assert rule.code in {d.code for d in _lint(example)}, f"{rule.code}: {example.source!r}"
