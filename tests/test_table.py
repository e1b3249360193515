"""The rule table: pydantic validation, its invariants, and the fast loader agreeing with pydantic."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from migrator.engine import table as t
from migrator.engine import table_schema
from migrator.errors import MigratorError


def test_table_validates_with_pydantic_and_matches_the_fast_loader():
    raw = t.read_raw()
    validated = table_schema.validate(raw)
    fast = t.build(t.Table, json.loads(json.dumps(raw)), "rules")
    assert dataclasses.asdict(validated) == dataclasses.asdict(fast)


def test_every_nemo1_key_of_the_reference_is_in_the_table():
    keys = {s.key for s in t.load_table().settings.settings}
    assert keys == {
        "dist_ckpt_format", "dist_ckpt_load_on_device", "dist_ckpt_parallel_save", "dist_ckpt_parallel_save_within_dp",
        "dist_ckpt_parallel_load", "dist_ckpt_torch_dist_multiproc", "dist_ckpt_assume_constant_structure",
        "dist_ckpt_parallel_dist_opt", "dist_ckpt_load_strictness", "async_save",
    }


def test_the_two_mappings_nemo_docs_get_wrong():
    table = t.load_table()
    assert table.setting_by_key["dist_ckpt_load_on_device"].target.argument == "ckpt_load_directly_on_device"
    assert "ckpt_load_on_device" not in table.argument_by_name
    optim = table.setting_by_key["dist_ckpt_parallel_dist_opt"]
    assert optim.target.argument == "ckpt_parallel_save_optim" and optim.target.default is True
    assert optim.nemo1_default[-1].value is True  # same switch, same value, same default


STRUCTURAL = [  # rejected by pydantic and by the fast loader alike
    (lambda raw: raw["settings"]["settings"][0].update(typo=1), "typo"),
    (lambda raw: raw["settings"]["settings"][0].update(type="float"), "type"),
    (lambda raw: raw["lint_rules"][0].update(severity="fatal"), "severity"),
    (lambda raw: raw["lint_rules"][0].pop("why"), "why"),
]
SEMANTIC = [  # cross-field and cross-file invariants: checked when the table is validated
    (lambda raw: raw["settings"]["settings"][0]["target"].update(argument="ckpt_nope"), "ckpt_nope"),
    (lambda raw: raw["strategy"]["arguments"][0].update(default="yes"), "default 'yes' is not a bool"),
    (lambda raw: raw["lint_rules"][1].update(code=raw["lint_rules"][0]["code"]), "duplicate lint rule codes"),
    (lambda raw: raw["lint_rules"][0].update(valid=[]), "needs at least one VALID"),
]


@pytest.mark.parametrize("mutate, message", STRUCTURAL + SEMANTIC)
def test_validation_rejects_bad_data(mutate, message):
    raw = t.read_raw()
    mutate(raw)
    with pytest.raises(MigratorError, match=message):
        table_schema.validate(raw)


@pytest.mark.parametrize("mutate, message", STRUCTURAL)
def test_fast_loader_rejects_structural_errors(mutate, message):
    raw = t.read_raw()
    mutate(raw)
    with pytest.raises(MigratorError, match=message):
        t.build(t.Table, raw, "rules")


def test_adding_a_setting_is_a_data_change(tmp_path):
    """A new key in settings.yaml is linted (type, value, placement) with no engine change."""
    rules = tmp_path / "rules"
    shutil.copytree(t.rules_dir(), rules)
    text = (rules / "settings.yaml").read_text()
    text += (
        "\n  - key: dist_ckpt_new_switch\n    path: model.dist_ckpt_new_switch\n    type: bool\n"
        "    nemo1_default: [{value: false}]\n"
        "    target: {argument: ckpt_parallel_load, default: true, since: \"2.0.0\"}\n"
        "    description: a made-up setting for this test\n"
    )
    (rules / "settings.yaml").write_text(text)
    table = t.load_table(str(rules))
    from migrator.cli.options import resolve_target
    from migrator.engine.runner import LintOptions, check_text

    options = LintOptions(target=resolve_target(None))
    found, _ = check_text("model:\n  dist_ckpt_new_switch: 'yes'\n", "x.yaml", table, options)
    assert [(d.code, d.location.row) for d in found if d.location.row == 2] == [("NM101", 2)]
    found, _ = check_text("dist_ckpt_new_switch: true\ntrainer: {}\n", "x.yaml", table, options)
    assert "NM104" in {d.code for d in found}


def test_cache_is_used_and_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_MIGRATE_CACHE_DIR", str(tmp_path / "cache"))
    t.load_table.cache_clear()
    try:
        t.load_table()
        cached = list((tmp_path / "cache").glob("table-*.json"))
        assert len(cached) == 1 and json.loads(cached[0].read_text())["settings"]["schema_version"] == 1
    finally:
        t.load_table.cache_clear()
