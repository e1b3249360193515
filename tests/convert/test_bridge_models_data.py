"""rules/bridge_models.yaml: schema (pydantic), the names table, release spans, and the static check that every
`_target_` and field the Bridge writer emits exists at every supported Megatron-Bridge tag."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, field_validator
from ruamel.yaml import YAML

from migrator.convert.model.bridge_models import load_bridge_table, parse_target, rules_path
from migrator.convert.pipeline import convert
from migrator.convert.write.plan import ConvertOptions
from migrator.errors import MigratorError
from tests.convert.conftest import NEMO2_REFERENCE, REPO, fixture_nemo, need

TAG = r"^v\d+\.\d+\.\d+$"
DOTTED = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"


class Release(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[str]
    megatron_core: str

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        assert v and all(re.match(TAG, t) for t in v), v
        return v


class Name(BaseModel):
    model_config = ConfigDict(extra="forbid")
    absent_in: list[str]


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1]
    names_from: str
    releases: dict[str, Release]
    providers: dict[Literal["gpt", "mamba"], str]
    callables: dict[str, str]
    tokenizer: str
    checkpoint: str
    names: dict[str, Name]

    @field_validator("providers", "callables")
    @classmethod
    def _paths(cls, v: dict) -> dict:
        assert all(re.match(DOTTED, p) for p in v.values()), v
        return v


def raw() -> dict:
    return YAML(typ="safe", pure=True).load(rules_path().read_text())


def _names_script():
    spec = importlib.util.spec_from_file_location("bridge_names", REPO / "scripts" / "bridge_names.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_schema_and_every_absent_tag_is_a_release_tag() -> None:
    rules = Rules.model_validate(raw())
    tags = {t for r in rules.releases.values() for t in r.tags}
    for name, entry in rules.names.items():
        assert set(entry.absent_in) <= tags, name
    assert list(rules.releases) == sorted(rules.releases, key=lambda v: tuple(map(int, v.split("."))))


def test_the_names_table_lists_everything_the_writer_can_emit() -> None:
    # the generator's list of names comes from the writer's own field lists (model/bridge_spec.py)
    assert set(_names_script().wanted(raw())) == set(raw()["names"])


def test_provider_classes_exist_in_every_release() -> None:
    table = load_bridge_table()
    every = table.span(None)
    for kind, provider in table.providers.items():
        assert table.absent(provider, every) == [], kind
    assert table.absent(table.tokenizer, every) == [] and table.absent(table.checkpoint, every) == []


@pytest.mark.parametrize("text,expected", [(None, ["0.2", "0.3", "0.4", "0.5", "0.6"]),
                                           ("megatron-bridge=0.3", ["0.3"]),
                                           ("megatron-bridge=0.3..0.5", ["0.3", "0.4", "0.5"]),
                                           ("megatron-bridge=0.5..", ["0.5", "0.6"]),
                                           ("megatron-bridge=..0.2", ["0.2"]),
                                           ("megatron-bridge=0.4,megatron-core=0.17", ["0.4"]),
                                           ("megatron-core=0.16", ["0.2", "0.3", "0.4", "0.5", "0.6"])])
def test_target_spans(text: str | None, expected: list[str]) -> None:
    assert [r.name for r in load_bridge_table().span(parse_target(text))] == expected


@pytest.mark.parametrize("text,message", [("megatron-bridge=0.6..0.3", "0.6 is newer than 0.3"),
                                          ("megatron-bridge=1.0", "unknown release '1.0'"),
                                          ("megatron-bridge=0.3.1", "0.3.1 is a tag of the 0.3 line; convert takes "
                                                                    "release lines"),
                                          ("nemo=2.3", "names a NeMo release")])
def test_bad_targets(text: str, message: str) -> None:
    with pytest.raises(MigratorError, match=re.escape(message)):
        load_bridge_table().span(parse_target(text))


def _emitted(run_config: dict) -> set[str]:
    """Every `_target_` and `Class:field` name a run_config.yaml uses (torch names aside)."""
    names = set()
    for section in ("model", "checkpoint", "tokenizer"):
        data = run_config[section]
        cls = data["_target_"]
        names.add(cls)
        for key, value in data.items():
            if key == "_target_":
                continue
            names.add(f"{cls}:{key}")
            if isinstance(value, dict) and "_target_" in value and not value["_target_"].startswith("torch."):
                names.add(value["_target_"])
    return names


@pytest.mark.parametrize("source", ["tiny_llama_torch_dist", "tiny_mixtral_moe", "nemo2:tiny_mixtral_moe"])
def test_every_target_and_field_written_exists_at_every_bridge_tag(tmp_path: Path, source: str) -> None:
    import yaml

    path = need(NEMO2_REFERENCE / source[6:]) if source.startswith("nemo2:") else fixture_nemo(source)
    out = tmp_path / "out"
    convert(ConvertOptions(path, out, to="bridge"), warn=lambda m: None, out=sys.stdout)
    run_config = yaml.safe_load((out / "iter_0000000" / "run_config.yaml").read_text())
    table = load_bridge_table()
    every = table.span(None)
    tags = [t for r in every for t in r.tags]
    assert tags == ["v0.2.0", "v0.2.1", "v0.2.2", "v0.3.0", "v0.3.1", "v0.4.0", "v0.4.1", "v0.4.2", "v0.5.0",
                    "v0.5.1", "v0.6.0"]
    names = _emitted(run_config)
    assert len(names) > 40
    assert {name: table.absent(name, every) for name in names if table.absent(name, every)} == {}


def test_the_names_table_matches_the_bridge_sources() -> None:
    """Re-read every name from Megatron-Bridge's and Megatron-LM's git histories (needs both clones)."""
    bridge, megatron = os.environ.get("BRIDGE_GIT_DIR"), os.environ.get("MEGATRON_LM_GIT_DIR")
    if not (bridge and megatron):
        pytest.skip("set BRIDGE_GIT_DIR and MEGATRON_LM_GIT_DIR to git clones of NVIDIA-NeMo/Megatron-Bridge and "
                    "NVIDIA/Megatron-LM to re-read the names table (scripts/bridge_names.py --check)")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bridge_names.py"), bridge, megatron, "--check"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
