"""rules/nemo2_models.yaml: schema (pydantic), the 16 ids of NeMo's converter, and the run-time loader."""
from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, field_validator
from ruamel.yaml import YAML

from migrator.convert.model.models import load_model_table, parse_model_table, rules_path
from migrator.errors import MigratorError
from tests.convert.context_helpers import GPT_IDS, NEMOTRONH_IDS

# MODEL_CONFIG_MAPPING of NeMo's scripts/checkpoint_converters/convert_nemo1_to_nemo2.py (main, v2.4.0+)
NEMO_MAPPING = {
    "meta-llama/Llama-2-7b-hf": ("LlamaModel", "Llama2Config7B"),
    "meta-llama/Llama-2-13b-hf": ("LlamaModel", "Llama2Config13B"),
    "meta-llama/Llama-2-70b-hf": ("LlamaModel", "Llama2Config70B"),
    "meta-llama/Meta-Llama-3-8B": ("LlamaModel", "Llama3Config8B"),
    "meta-llama/Meta-Llama-3-70B": ("LlamaModel", "Llama3Config70B"),
    "mistralai/Mixtral-8x7B-v0.1": ("MixtralModel", "MixtralConfig8x7B"),
    "mistralai/Mixtral-8x22B-v0.1": ("MixtralModel", "MixtralConfig8x22B"),
    "mistralai/Mistral-7B-v0.1": ("MistralModel", "MistralConfig7B"),
    "nvidia/nemotron-3-8b-base-4k": ("NemotronModel", "Nemotron3Config8B"),
    "nemotron4-22b": ("NemotronModel", "Nemotron3Config22B"),
    "nemotron4-15b": ("NemotronModel", "Nemotron4Config15B"),
    "nemotron4-340b": ("NemotronModel", "Nemotron4Config340B"),
    "nemotronh4b": ("MambaModel", "NemotronHConfig4B"),
    "nemotronh8b": ("MambaModel", "NemotronHConfig8B"),
    "nemotronh47b": ("MambaModel", "NemotronHConfig47B"),
    "nemotronh56b": ("MambaModel", "NemotronHConfig56B"),
}
CLASS_PATH = r"^nemo\.collections\.llm\.gpt\.model\.[a-z0-9_]+\.[A-Za-z0-9_]+$"
GPT_PRESET_FIELDS = {"num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                     "seq_length", "rotary_base", "normalization", "activation_func", "window_size",
                     "apply_rope_fusion", "persist_layer_norm", "params_dtype", "num_moe_experts"}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str
    model_class: str
    config_class: str
    since: str

    @field_validator("model_class", "config_class")
    @classmethod
    def _class_path(cls, v: str) -> str:
        import re

        assert re.match(CLASS_PATH, v), v
        return v

    @field_validator("since")
    @classmethod
    def _version(cls, v: str) -> str:
        assert v.count(".") == 2 and all(p.isdigit() for p in v.split(".")), v
        return v


class Family(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["gpt", "mamba"]
    model_class: str
    config_class: str
    rope_scaling_config_class: str | None = None


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1]
    presets_from: str
    models: dict[str, Model]
    families: dict[str, Family]
    presets: dict[str, dict[str, Any]]


def raw_rules() -> dict:
    return YAML(typ="safe", pure=True).load(rules_path().read_text())


def test_rules_file_matches_the_schema():
    rules = Rules.model_validate(raw_rules())
    assert set(rules.models) == set(NEMO_MAPPING)
    for model_id, m in rules.models.items():
        assert m.family in rules.families
        assert m.config_class in rules.presets
        assert rules.families[m.family].model_class == m.model_class
    for family in rules.families.values():
        assert family.config_class in rules.presets
        assert family.rope_scaling_config_class is None or family.rope_scaling_config_class in rules.presets


def test_the_16_ids_select_the_classes_of_nemos_converter():
    table = load_model_table()
    assert list(table.models) == list(NEMO_MAPPING)
    assert sorted(GPT_IDS + NEMOTRONH_IDS) == sorted(NEMO_MAPPING)
    for model_id, (model_cls, config_cls) in NEMO_MAPPING.items():
        entry = table.entry(model_id)
        assert entry.model_class.endswith("." + model_cls) and entry.config_class.endswith("." + config_cls)


def test_presets_hold_the_compared_values():
    table = load_model_table()
    for model_id in GPT_IDS:
        preset = table.preset(table.entry(model_id).config_class)
        assert GPT_PRESET_FIELDS <= set(preset), model_id
        assert isinstance(preset["layernorm_epsilon"], float)  # 1.0e-05, not the YAML 1.1 string "1e-05"
    assert table.preset(table.entry("meta-llama/Meta-Llama-3-8B").config_class)["rotary_base"] == 500000
    assert table.preset(table.entry("mistralai/Mistral-7B-v0.1").config_class)["window_size"] == [4096, 0]
    h4 = table.preset(table.entry("nemotronh4b").config_class)
    assert (h4["hidden_size"], h4["num_layers"], h4["mamba_num_heads"]) == (3072, 52, 112)


def test_malformed_table_is_an_error_naming_the_entry():
    data = raw_rules()
    data["models"]["meta-llama/Llama-2-7b-hf"]["family"] = "falcon"
    with pytest.raises(MigratorError, match=r"^x\.yaml: models\.meta-llama/Llama-2-7b-hf: unknown family falcon"):
        parse_model_table(data, "x.yaml")
    del data["families"]
    with pytest.raises(MigratorError, match=r"^x\.yaml: malformed model table"):
        parse_model_table(data, "x.yaml")
