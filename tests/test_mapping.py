"""The YAML -> MegatronStrategy mapping (migrator.migrate.mapping): the one source of truth for emit, patch, json and
`lint --config`. Every decision of the issue, on small configs and on NeMo's own."""
from __future__ import annotations

import pytest

from migrator.cli.options import resolve_source, resolve_target
from migrator.engine.table import load_table
from migrator.errors import MigratorError
from migrator.migrate.mapping import load_mapping, map_text
from tests.conftest import NEMO_CONFIGS, PROJECT_FIXTURES, need_shared

TABLE = load_table()


def mapping(text: str, target: str | None = None, source: str | None = None, force: bool = False):
    return map_text(text, "old.yaml", TABLE, resolve_target(target), resolve_source(source), force=force)


def args(m) -> dict:
    return {a.name: a.value for a in m.arguments}


def test_the_gpt_config_maps_every_key_with_the_same_values():
    m = load_mapping(need_shared(NEMO_CONFIGS / "megatron_gpt_config.yaml"), TABLE, resolve_target(None),
                     resolve_source(None))
    assert [(a.name, a.value) for a in m.arguments] == [
        ("save_ckpt_format", "torch_dist"),
        ("ckpt_load_directly_on_device", True),  # dist_ckpt_load_on_device, not the docs' ckpt_load_on_device
        ("ckpt_parallel_save", True),
        ("ckpt_parallel_save_within_dp", False),
        ("ckpt_parallel_load", False),
        ("ckpt_torch_dist_multiproc", 2),
        ("ckpt_assume_constant_structure", False),
        ("ckpt_parallel_save_optim", True),  # the SAME value as dist_ckpt_parallel_dist_opt, not inverted
        ("ckpt_load_strictness", None),
        ("ckpt_async_save", False),
    ]
    assert not m.refused and all(a.origin == "yaml" for a in m.arguments)


def test_dist_opt_keeps_its_value_and_says_why():
    for value in (True, False):
        m = mapping(f"model:\n  dist_ckpt_parallel_dist_opt: {value}\n")
        argument = m.argument("ckpt_parallel_save_optim")
        assert argument.value is value and "inverts" in argument.comment


def test_old_defaults_that_nemo2_changed_are_written_explicitly_with_a_comment():
    m = mapping("trainer:\n  devices: 2\nmodel:\n  mcore_gpt: True\n  num_layers: 2\n")
    assert args(m) == {"ckpt_parallel_save": False, "ckpt_parallel_load": False, "ckpt_async_save": False}
    assert all(a.origin == "nemo1-default" and "NeMo 2.0 defaults to True" in a.comment for a in m.arguments)
    # written explicitly with the old default: carried, and the comment says NeMo 2.0 differs
    m = mapping("model:\n  dist_ckpt_parallel_load: False\n")
    assert m.argument("ckpt_parallel_load").comment == "NeMo 2.0 defaults to True"
    # a value equal to NeMo 2.0's default is still carried (one keyword per setting the YAML makes), without comment
    m = mapping("model:\n  dist_ckpt_parallel_load: True\n")
    assert m.argument("ckpt_parallel_load").value is True and m.argument("ckpt_parallel_load").comment is None


def test_a_model_config_has_no_async_save_to_default():
    m = mapping("num_layers: 2\ndist_ckpt_format: torch_dist\n")
    assert m.config.kind == "model" and "ckpt_async_save" not in args(m)
    assert m.argument("save_ckpt_format").yaml_path == "dist_ckpt_format"


def test_assume_constant_structure_is_carried_with_a_comment_that_nemo1_ignored_it():
    m = mapping("model:\n  dist_ckpt_assume_constant_structure: true\n")
    argument = m.argument("ckpt_assume_constant_structure")
    assert argument.value is True and "NeMo 1.0 ignored" in argument.comment
    assert any(msg.code == "NM110" and msg.severity == "info" for msg in m.messages)


def test_strictness_is_left_out_with_a_comment_before_nemo_2_1():
    text = "model:\n  dist_ckpt_load_strictness: log_all\n"
    m = mapping(text, target="nemo=2.0")
    assert "ckpt_load_strictness" not in args(m) and not m.refused
    (omitted,) = m.omitted
    assert omitted.setting == "dist_ckpt_load_strictness" and "2.1.0" in omitted.reason
    assert any(msg.code == "NM109" and msg.severity == "warning" for msg in m.messages)
    assert mapping(text, target="nemo=2.1").argument("ckpt_load_strictness").value == "log_all"
    # a null strictness is not an argument NeMo 2.0.x has either: left out silently
    assert "ckpt_load_strictness" not in args(mapping("model:\n  dist_ckpt_load_strictness: null\n",
                                                      target="nemo=2.0"))


def test_zarr_with_megatron_core_016_is_refused_unless_forced_and_says_how_to_convert():
    text = "model:\n  dist_ckpt_format: zarr\n"
    m = mapping(text)
    assert m.refused and "save_ckpt_format" not in args(m)
    (error,) = m.errors
    assert error.code == "NM106" and "nemo-migrate convert" in error.text and "--force" in error.text
    forced = mapping(text, force=True)
    assert not forced.refused and forced.argument("save_ckpt_format").value == "zarr"
    assert "--force" in forced.argument("save_ckpt_format").comment
    deprecated = mapping(text, target="megatron-core=0.15")
    assert not deprecated.refused and "deprecated" in deprecated.argument("save_ckpt_format").comment
    assert [msg.code for msg in deprecated.messages if msg.severity == "warning"] == ["NM107"]


def test_an_old_source_defaults_to_zarr_which_megatron_core_016_refuses():
    text = "trainer:\n  devices: 1\nmodel:\n  mcore_gpt: True\n  num_layers: 2\n"
    m = mapping(text, source="nemo=1.23")
    assert m.refused and "NeMo 1.0 defaulted it to zarr" in m.errors[0].text
    assert "nemo-migrate convert" in m.errors[0].text
    assert mapping(text, source="nemo=1.23", force=True).argument("save_ckpt_format").value == "zarr"
    assert "save_ckpt_format" not in args(mapping(text))  # newer sources default to torch_dist, like NeMo 2.0


@pytest.mark.parametrize("text, code", [
    ("model:\n  dist_ckpt_parallel_save: \"True\"\n", "NM101"),
    ("model:\n  dist_ckpt_format: torch-dist\n", "NM102"),
    ("model:\n  dist_ckpt_parallel_load: true\n  dist_ckpt_parallel_load: false\n", "NM105"),
])
def test_values_nemo_would_misread_are_refused(text, code):
    m = mapping(text)
    assert m.refused and m.errors[0].code == code
    forced = mapping(text, force=True)
    assert not forced.refused and any(msg.code == code and msg.severity == "warning" for msg in forced.messages)


def test_keys_nemo1_ignored_are_not_carried_but_said():
    m = mapping("model:\n  dist_ckpt_paralel_load: True\n  dist_ckpt_format: torch_dist\n")
    assert "dist_ckpt_paralel_load" not in {a.setting for a in m.arguments}
    warning = next(msg for msg in m.messages if msg.code == "NM103")
    assert warning.severity == "warning" and "not carried" in warning.text
    assert m.argument("ckpt_parallel_load").origin == "nemo1-default"  # NeMo 1.0 ran with its default


def test_interpolations_are_left_out_with_a_warning():
    m = mapping("model:\n  dist_ckpt_parallel_load: ${oc.env:LOAD}\n")
    assert "ckpt_parallel_load" not in args(m)
    assert m.omitted[0].setting == "dist_ckpt_parallel_load"
    assert any(msg.code == "NM112" and msg.severity == "warning" for msg in m.messages)


def test_legacy_non_distributed_models_get_a_warning_and_no_invented_defaults():
    m = mapping("trainer:\n  devices: 1\nmodel:\n  mcore_gpt: False\n")
    assert m.arguments == [] and any(msg.code == "NM116" for msg in m.messages)


@pytest.mark.parametrize("text, message", [
    ("jobs:\n  build: {}\n", "not a NeMo 1.0 config"),
    ("trainer:\n  devices: 1\n", "without a `model:` mapping"),
    ("model:\n  a: 1\n---\nmodel:\n  b: 2\n", "holds 2 NeMo configs"),
    ("model:\n  a: [1\n", "YAML syntax error"),
])
def test_bad_input_is_a_one_line_error(text, message):
    with pytest.raises(MigratorError, match=message):
        mapping(text)


def test_json_shape():
    m = load_mapping(PROJECT_FIXTURES / "python" / "old_config.yaml", TABLE, resolve_target(None),
                     resolve_source(None))
    data = m.as_json()
    assert set(data) == {"config", "kind", "target", "source", "class", "refused", "arguments", "omitted", "messages"}
    assert data["target"] == {"nemo": "2.5", "megatron-core": "0.16"} and data["refused"] is False
    first = data["arguments"][0]
    assert first == {"name": "save_ckpt_format", "value": "torch_dist", "setting": "model.dist_ckpt_format",
                     "origin": "yaml", "comment": None, "location": {"row": 16, "column": 3}}
    assert data["arguments"][-1]["origin"] == "nemo1-default" and data["arguments"][-1]["location"] is None


@pytest.mark.parametrize("name", sorted(p.name for p in NEMO_CONFIGS.glob("*.yaml")) if NEMO_CONFIGS.exists() else [])
def test_every_real_nemo_config_maps_or_is_refused_for_a_stated_reason(name):
    try:
        m = load_mapping(NEMO_CONFIGS / name, TABLE, resolve_target(None), resolve_source(None))
    except MigratorError as exc:  # the inference config has no model mapping
        assert name == "megatron_llama_inference.yaml", exc
        return
    assert m.refused == (name == "megatron_mamba_config.yaml")  # zarr on megatron-core 0.16
