"""`nemo-migrate schema`: the editor JSON Schema accepts every real NeMo config (read as an editor reads it, YAML 1.2,
and as NeMo reads it, YAML 1.1), interpolations and YAML 1.1 spellings, and rejects the bad values the lint rejects."""
from __future__ import annotations

import io
import json

import jsonschema
import pytest
import yaml as pyyaml  # PyYAML: YAML 1.1, what OmegaConf (and so NeMo) uses
from ruamel.yaml import YAML

from migrator.engine.table import load_table
from migrator.schema import YAML11_BOOLEAN_STRINGS
from tests.conftest import NEMO_CONFIGS, ROOT, need_shared, run_cli

TABLE = load_table()


@pytest.fixture(scope="module")
def schema() -> dict:
    proc = run_cli("schema")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    jsonschema.Draft7Validator.check_schema(document)
    return document


@pytest.fixture(scope="module")
def validator(schema):
    return jsonschema.Draft7Validator(schema)


def yaml12(text: str):
    """An editor's reading (yaml-language-server is YAML 1.2): `yes` is a string, `1_000` a string."""
    return YAML(typ="safe", pure=True).load(io.StringIO(text))


def errors(validator, data) -> list[str]:
    """Each error as `path: message`, at the deepest place an editor points to (jsonschema's best match descends
    into the anyOf that wraps each section)."""
    found = []
    for error in validator.iter_errors(data):
        error = jsonschema.exceptions.best_match([error])
        found.append(f"{'.'.join(map(str, error.absolute_path))}: {error.message}")
    return found


def test_schema_has_descriptions_enums_defaults_and_both_sections(schema):
    model = schema["definitions"]["ModelSection"]["properties"]
    assert set(model) == {s.key for s in TABLE.settings.settings if s.in_model}
    assert model["dist_ckpt_format"]["default"] == "torch_dist"
    assert {"enum": ["torch_dist", "zarr"], "type": "string"} in model["dist_ckpt_format"]["anyOf"]
    assert "save_ckpt_format" in model["dist_ckpt_format"]["description"]
    strictness = model["dist_ckpt_load_strictness"]["anyOf"]
    assert {"type": "null"} in strictness and any("log_all" in o.get("enum", []) for o in strictness)
    callback = schema["definitions"]["CheckpointCallbackParams"]["properties"]["async_save"]
    assert callback["default"] is False and "ckpt_async_save" in callback["description"]
    assert all(d.get("additionalProperties") is True for d in schema["definitions"].values())


@pytest.mark.parametrize("name", sorted(p.name for p in NEMO_CONFIGS.glob("*.yaml")) or ["(shared fixtures missing)"])
def test_every_real_nemo_config_validates(validator, name):
    path = need_shared(NEMO_CONFIGS / name)
    text = path.read_text(encoding="utf-8")
    assert errors(validator, yaml12(text)) == []  # as the editor reads it
    assert errors(validator, pyyaml.safe_load(text)) == []  # as NeMo reads it


def test_the_bundled_examples(validator):
    clean = (ROOT / "fixtures" / "examples" / "gpt_clean.yaml").read_text()
    assert errors(validator, yaml12(clean)) == []
    bad = errors(validator, yaml12((ROOT / "fixtures" / "examples" / "gpt_pretrain.yaml").read_text()))
    assert len(bad) == 1 and bad[0].startswith("model.dist_ckpt_parallel_save:")  # the quoted "True"


@pytest.mark.parametrize("spelling", YAML11_BOOLEAN_STRINGS + ("true", "True", "TRUE", "false", "False", "FALSE"))
def test_every_yaml11_boolean_spelling_is_accepted(validator, spelling):
    text = (f"exp_manager:\n  checkpoint_callback_params:\n    async_save: {spelling}\n"
            f"model:\n  dist_ckpt_parallel_save: {spelling}\ndist_ckpt_parallel_load: {spelling}\n")
    assert errors(validator, yaml12(text)) == []
    assert errors(validator, pyyaml.safe_load(text)) == []


@pytest.mark.parametrize("value", [
    "${oc.env:CKPT_FORMAT}", "${model.fmt}", "prefix_${x}", "${oc.select:a.b,${c}}", "'${quoted}'",
])
def test_interpolations_are_accepted_wherever_a_value_is(validator, value):
    values = {s.key: value for s in TABLE.settings.settings if s.in_model}
    text = "model:\n" + "".join(f"  {k}: {v}\n" for k, v in values.items())
    text += f"exp_manager:\n  checkpoint_callback_params:\n    async_save: {value}\n"
    assert errors(validator, yaml12(text)) == []
    assert errors(validator, yaml12(f"model: {value}\nexp_manager:\n  checkpoint_callback_params: {value}\n")) == []


@pytest.mark.parametrize("spelling", ["1_0", "0b10", "1:30", "+2", "0x1_0"])
def test_yaml11_integer_spellings_are_accepted(validator, spelling):
    assert errors(validator, yaml12(f"model:\n  dist_ckpt_torch_dist_multiproc: {spelling}\n")) == []


@pytest.mark.parametrize("text, where", [
    ("model:\n  dist_ckpt_format: torch-dist\n", "model.dist_ckpt_format"),
    ("model:\n  dist_ckpt_load_strictness: log_al\n", "model.dist_ckpt_load_strictness"),
    ("model:\n  dist_ckpt_torch_dist_multiproc: 0\n", "model.dist_ckpt_torch_dist_multiproc"),
    ("model:\n  dist_ckpt_torch_dist_multiproc: two\n", "model.dist_ckpt_torch_dist_multiproc"),
    ("model:\n  dist_ckpt_parallel_save: \"True\"\n", "model.dist_ckpt_parallel_save"),
    ("model:\n  dist_ckpt_parallel_save: 1\n", "model.dist_ckpt_parallel_save"),
    ("model:\n  dist_ckpt_parallel_save: null\n", "model.dist_ckpt_parallel_save"),  # not nullable
    ("model:\n  dist_ckpt_parallel_save: [true]\n", "model.dist_ckpt_parallel_save"),
    ("model:\n  dist_ckpt_parallel_save: y\n", "model.dist_ckpt_parallel_save"),  # PyYAML: a string, not a bool
    ("exp_manager:\n  checkpoint_callback_params:\n    async_save: enabled\n",
     "exp_manager.checkpoint_callback_params.async_save"),
    ("dist_ckpt_format: zarr2\n", "dist_ckpt_format"),  # a model_config.yaml: settings at the top level
])
def test_bad_values_are_rejected(validator, text, where):
    found = errors(validator, yaml12(text))
    assert found and all(e.startswith(f"{where}:") for e in found), found


def test_nullable_settings_accept_null(validator):
    nullable = [s.key for s in TABLE.settings.settings if s.nullable]
    assert nullable
    text = "model:\n" + "".join(f"  {k}: null\n" for k in nullable) + "".join(f"{k}: ~\n" for k in nullable)
    assert errors(validator, yaml12(text)) == []


def _example_value(source: str, key: str):
    data = yaml12(source)
    section = data.get("model", data) if isinstance(data, dict) else {}
    if isinstance(section, dict) and key in section:
        return section[key]
    return data.get("exp_manager", {}).get("checkpoint_callback_params", {}).get(key)


def _setting_cases():
    for setting in TABLE.settings.settings:
        for i, source in enumerate(setting.examples.valid):
            yield pytest.param(setting.key, source, True, id=f"{setting.key}-VALID_{i}")
        for i, example in enumerate(setting.examples.invalid):
            if example.code not in ("NM101", "NM102"):
                continue
            value = _example_value(example.source, setting.key)
            if isinstance(value, float) and value.is_integer() or value in YAML11_BOOLEAN_STRINGS:
                continue  # JSON cannot tell these from a valid value (2.0 reads as 2; a quoted 'yes' as a plain yes)
            yield pytest.param(setting.key, example.source, False, id=f"{setting.key}-INVALID_{i}-{example.code}")


@pytest.mark.parametrize("key, source, valid", list(_setting_cases()))
def test_schema_agrees_with_the_table_examples(validator, key, source, valid):
    """A value the lint accepts is accepted; a wrong type or value the lint rejects is rejected, except what JSON
    cannot tell apart (2.0 reads as 2; a quoted 'yes' looks like a plain yes to a YAML 1.2 reader)."""
    found = errors(validator, yaml12(source))
    assert (found == []) is valid, found


def test_committed_schema_is_current(schema):
    """docs/nemo1-checkpoint-settings.schema.json is what `nemo-migrate schema` prints (editors may point at it)."""
    committed = ROOT / "docs" / "nemo1-checkpoint-settings.schema.json"
    assert committed.exists() and json.loads(committed.read_text(encoding="utf-8")) == schema, (
        "regenerate: nemo-migrate schema > docs/nemo1-checkpoint-settings.schema.json")
