"""Shared helpers for the context-side tests (architecture, context, tokenizer): fixture paths and readers.

The fixtures are the real NeMo-made files under `<repo>/../shared/fixtures` (see its MANIFEST.md); tests that
need them skip with a reason when that folder is absent (and fail where NEMO_MIGRATE_REQUIRE_SHARED=1).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.conftest import NEMO_CONFIGS
from tests.convert.conftest import NEMO1, need
from tests.convert.conftest import NEMO2_REFERENCE as NEMO2_REF

# NEMO_CONFIGS, NEMO2_REF and need are imported from here by the context-side tests

TINY_LLAMA = NEMO1 / "tiny_llama_torch_dist.nemo"
TINY_LLAMA_ZARR = NEMO1 / "tiny_llama_zarr.nemo"
TINY_MIXTRAL = NEMO1 / "tiny_mixtral_moe.nemo"

GPT_IDS = [
    "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf",
    "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-70B", "mistralai/Mixtral-8x7B-v0.1",
    "mistralai/Mixtral-8x22B-v0.1", "mistralai/Mistral-7B-v0.1", "nvidia/nemotron-3-8b-base-4k",
    "nemotron4-22b", "nemotron4-15b", "nemotron4-340b",
]
NEMOTRONH_IDS = ["nemotronh4b", "nemotronh8b", "nemotronh47b", "nemotronh56b"]


class Checkpoint:
    """A fixture `.nemo` read with the converter's own source reader (model config, tensors, members)."""

    def __init__(self, path: Path) -> None:
        from migrator.convert.read.source import open_source

        source = open_source(need(path))
        try:
            self.path = path
            self.model_config: dict[str, Any] = source.model_config
            self.tensors = dict(source.tensors)
            self.members = {name: source.read_member(name) for name in source.member_names()
                            if not name.startswith("model_weights/")}
        finally:
            source.close()

    def config(self, **changes: Any) -> dict[str, Any]:
        """A deep copy of model_config.yaml with `changes` applied (None removes a key)."""
        cfg = copy.deepcopy(self.model_config)
        for key, value in changes.items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
        return cfg

    def read_member(self, name: str) -> bytes:
        return self.members[name]


_CACHE: dict[Path, Checkpoint] = {}


def checkpoint(path: Path) -> Checkpoint:
    if path not in _CACHE:
        _CACHE[path] = Checkpoint(path)
    return _CACHE[path]


def load_graph(io_json: Path | str | dict) -> dict[str, Any]:
    """Rebuild io.json (fiddle JSON) into nested {"__class__": path, arg: value} dicts, as fiddle would.

    An independent reader for the tests: follows refs, unwraps leaves, turns pyrefs into "module.name",
    dict/list/tuple nodes into Python containers, and checks that every Config's argument_names match its items.
    """
    data = io_json if isinstance(io_json, dict) else json.loads(Path(io_json).read_text())
    objects = data["objects"]

    def node(value: Any) -> Any:
        if isinstance(value, list):
            return [node(v) for v in value]
        if not isinstance(value, dict):
            return value
        kind = value["type"]
        if kind == "ref":
            return node(objects[value["key"]])
        if kind == "leaf":
            return value["value"]
        if kind == "pyref":
            return f"{value['module']}.{value['name']}"
        type_path = f"{kind['module']}.{kind['name']}"
        items = value["items"]
        if type_path in ("fiddle._src.config.Config", "nemo_run.config.Config"):  # the latter: NeMo's plugins
            meta = node(value["metadata"])
            names = [name[len("Attr(name='"):-2] for name, _ in items]
            assert names == list(meta["argument_names"]), (names, meta["argument_names"])
            return {"__class__": meta["fn_or_cls"], **{n: node(v) for n, (_, v) in zip(names, items)}}
        if type_path == "fiddle._src.config.BuildableTraverserMetadata":
            return {name[len("Attr(name='"):-2]: node(v) for name, v in items}
        if type_path == "builtins.dict":
            return {name[len("Key(key='"):-2]: node(v) for name, v in items}
        if type_path in ("builtins.list", "builtins.tuple"):
            return [node(v) for _, v in items]
        raise AssertionError(f"unexpected node type {type_path}")

    return node(data["root"])
