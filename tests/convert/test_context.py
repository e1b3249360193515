"""write_context: io.json as fiddle JSON (compared with the io.json NeMo's converter wrote), model.yaml, artifacts."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from migrator.convert.model.architecture import derive_model_spec, reconcile_vocab_size
from migrator.convert.model.tokenizer import resolve_tokenizer
from migrator.convert.read.nemo2_context import read_reference_model
from migrator.convert.write.fiddle_json import Config, PyRef, graph
from migrator.convert.write.nemo2 import write_context
from migrator.errors import MigratorError
from tests.convert.context_helpers import NEMO2_REF, TINY_LLAMA, TINY_MIXTRAL, checkpoint, load_graph, need

# config arguments NeMo's converter recorded that describe the architecture or precision
SHARED_ARCH = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size",
               "init_method_std", "persist_layer_norm", "apply_rope_fusion", "seq_length", "bf16", "params_dtype",
               "num_moe_experts", "moe_router_load_balancing_type", "moe_router_topk", "moe_router_pre_softmax",
               "moe_grouped_gemm", "moe_aux_loss_coeff", "moe_token_dispatcher_type", "make_vocab_size_divisible_by",
               "rotary_base")


def write(tmp_path: Path, nemo: Path, model_id: str | None, **changes):
    ck = checkpoint(nemo)
    spec = derive_model_spec(ck.config(**changes), ck.tensors, model_id, "keep", lambda m: None)
    tok = resolve_tokenizer(ck.config(**changes), ck.read_member, None, None, None, None)
    context = tmp_path / "context"
    write_context(context, spec, tok)
    return context, spec, tok


@pytest.mark.parametrize("nemo, ref_dir, compared", [(TINY_LLAMA, "tiny_llama", 11),
                                                     (TINY_MIXTRAL, "tiny_mixtral_moe", 20)])
def test_io_json_agrees_with_the_reference_nemo_converter_output(tmp_path, nemo, ref_dir, compared):
    ref_dir = need(NEMO2_REF / ref_dir)
    context, spec, _ = write(tmp_path, nemo, str(ref_dir))  # the reference as --model_id: same classes
    ours = read_reference_model(context / "io.json")
    ref = read_reference_model(ref_dir / "context" / "io.json")
    assert (ours.model_class, ours.config_class) == (ref.model_class, ref.config_class)
    ours_graph, ref_graph = load_graph(context / "io.json"), load_graph(ref_dir / "context" / "io.json")
    ours_config, ref_config = ours_graph["model"]["config"], ref_graph["model"]["config"]  # the test's own reader
    keys = [key for key in SHARED_ARCH if key in ref_config]
    assert len(keys) == compared
    assert {k: ours_config[k] for k in keys} == {k: ref_config[k] for k in keys}
    assert ours_graph["__class__"] == ref_graph["__class__"] == "nemo.lightning.io.pl.TrainerContext"
    ours_tok, ref_tok = ours_graph["model"]["tokenizer"], ref_graph["model"]["tokenizer"]
    assert ours_tok["__class__"] == ref_tok["__class__"]
    assert {k: v for k, v in ours_tok.items() if k != "model_path"} == \
        {k: v for k, v in ref_tok.items() if k != "model_path"}  # special_tokens, legacy, chat_template
    assert (context / ours_tok["model_path"]).read_bytes() == (ref_dir / "context" / ref_tok["model_path"]).read_bytes()
    trainer, ref_trainer = ours_graph["trainer"], ref_graph["trainer"]
    assert trainer["__class__"] == ref_trainer["__class__"]
    assert trainer["strategy"]["__class__"] == ref_trainer["strategy"]["__class__"]
    assert {k: trainer["strategy"][k] for k in ("ddp", "setup_optimizers")} == \
        {k: ref_trainer["strategy"][k] for k in ("ddp", "setup_optimizers")}
    assert "plugins" not in json.dumps(trainer) and "nemo_run" not in (context / "io.json").read_text()
    assert ours_graph["extra"] == {}


def test_io_json_records_exactly_the_spec(tmp_path):
    context, spec, tok = write(tmp_path, TINY_LLAMA, "mistralai/Mistral-7B-v0.1")
    g = load_graph(context / "io.json")
    config = dict(g["model"]["config"])
    assert config.pop("__class__") == spec.config_class == "nemo.collections.llm.gpt.model.mistral.MistralConfig7B"
    assert g["model"]["__class__"] == spec.model_class
    assert config == spec.config_kwargs  # dtypes and callables come back as their import paths
    assert config["window_size"] is None and config["params_dtype"] == "torch.bfloat16"
    assert config["activation_func"] == "torch.nn.functional.silu"
    assert list(g["model"]) == ["__class__", "config", "tokenizer"]  # no optim: NeMo builds its default
    assert {k: v for k, v in g["model"]["tokenizer"].items() if k != "__class__"} == tok.kwargs


def test_fiddle_json_structure(tmp_path):
    context, _, _ = write(tmp_path, TINY_MIXTRAL, "mistralai/Mixtral-8x7B-v0.1")
    data = json.loads((context / "io.json").read_text())
    assert set(data) == {"root", "objects", "refcounts", "version"} and data["version"] == "0.0.1"
    objects = data["objects"]
    assert data["root"] == {"type": "ref", "key": "trainer_context_1"}
    assert set(data["refcounts"]) == set(objects) and set(data["refcounts"].values()) == {1}
    # load_context(subpath=...) finds its start object by an exact path match: each path appears once
    paths = [p for o in objects.values() for p in o.get("paths", []) if isinstance(o.get("type"), dict)
             and o["type"].get("name") == "Config"]
    for wanted in ("<root>", "<root>.model", "<root>.model.config", "<root>.model.tokenizer", "<root>.trainer",
                   "<root>.trainer.strategy"):
        assert paths.count(wanted) == 1, wanted
    assert "mixtral_config8x7_b_1" in objects and "mixtral_model_1" in objects  # fiddle's snake_case keys
    for key, obj in objects.items():  # every object names an importable type (NeMo's load() locates each)
        assert obj["type"]["type"] == "pyref" and obj["type"]["module"] and obj["type"]["name"], key

    def refs(value):
        if isinstance(value, dict):
            if value.get("type") == "ref":
                yield value["key"]
            for v in value.values():
                yield from refs(v)
        elif isinstance(value, list):
            for v in value:
                yield from refs(v)
    referenced = list(refs(objects)) + [data["root"]["key"]]
    assert sorted(referenced) == sorted(objects)  # a tree: each object referenced exactly once


def test_fiddle_json_values():
    g = graph(Config("a.B", {"d": PyRef("torch.float16"), "l": [1, 2.5, None], "m": {"k": "v"}, "c": Config("x.Y")}))
    rebuilt = load_graph(g)
    assert rebuilt == {"__class__": "a.B", "d": "torch.float16", "l": [1, 2.5, None], "m": {"k": "v"},
                       "c": {"__class__": "x.Y"}}
    with pytest.raises(ValueError):
        graph(Config("a.B", {"x": float("nan")}))
    with pytest.raises(TypeError):
        graph(Config("a.B", {"x": object()}))


def test_model_yaml_is_readable_and_matches_io_json(tmp_path):
    context, spec, tok = write(tmp_path, TINY_LLAMA, "meta-llama/Meta-Llama-3-8B")
    text = (context / "model.yaml").read_text()
    assert text.startswith("# Written by nemo-migrate convert.")
    assert not re.search(r":\s+-?\d+e[-+]?\d+\s*$", text, re.M)  # YAML 1.1 readers need 1.0e-05, not 1e-05
    doc = YAML(typ="safe", pure=True).load(text)
    assert doc["_target_"] == spec.model_class
    config = dict(doc["config"])
    assert config.pop("_target_") == spec.config_class
    assert config.pop("params_dtype") == {"_call_": False, "_target_": "torch.bfloat16"}
    assert config.pop("activation_func") == {"_call_": False, "_target_": "torch.nn.functional.silu"}
    assert config == {k: v for k, v in spec.config_kwargs.items() if k not in ("params_dtype", "activation_func")}
    assert doc["tokenizer"] == {"_target_": tok.class_path, **tok.kwargs}


def test_tokenizer_artifacts_are_written_and_names_are_checked(tmp_path):
    context, _, tok = write(tmp_path, TINY_LLAMA, "meta-llama/Meta-Llama-3-8B")
    member = checkpoint(TINY_LLAMA).model_config["tokenizer"]["model"].split("nemo:", 1)[1]
    assert (context / member).read_bytes() == checkpoint(TINY_LLAMA).read_member(member)
    assert sorted(p.name for p in context.iterdir()) == sorted(["io.json", "model.yaml", member])
    bad = type(tok)(tok.class_path, tok.kwargs, {"../escape.model": b"x"})
    ck = checkpoint(TINY_LLAMA)
    spec = derive_model_spec(ck.config(), ck.tensors, "meta-llama/Meta-Llama-3-8B", "keep", lambda m: None)
    with pytest.raises(MigratorError, match=r"not a plain file name"):
        write_context(tmp_path / "other", spec, bad)
    assert not (tmp_path / "escape.model").exists()


def test_hf_tokenizer_folder_is_copied_with_its_files(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0, "b": 1}},
                                                       "added_tokens": [{"id": 2, "content": "<s>"}]}))
    (folder / "tokenizer_config.json").write_text("{}")
    ck = checkpoint(TINY_LLAMA)
    spec = derive_model_spec(ck.config(), ck.tensors, "meta-llama/Meta-Llama-3-8B", "keep", lambda m: None)
    tok = resolve_tokenizer(ck.config(), ck.read_member, str(folder), None, None, None)
    write_context(tmp_path / "context", spec, tok)
    copied = tmp_path / "context" / "nemo_tokenizer"
    assert sorted(p.name for p in copied.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    # a whole model folder given as the tokenizer: its weights are not copied
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "sub").mkdir()
    (folder / "sub" / "pytorch_model.bin").write_bytes(b"weights")
    write_context(tmp_path / "context2", spec, tok)
    copied = tmp_path / "context2" / "nemo_tokenizer"
    assert sorted(str(p.relative_to(copied)) for p in copied.rglob("*")) == \
        ["sub", "tokenizer.json", "tokenizer_config.json"]
    assert load_graph(tmp_path / "context" / "io.json")["model"]["tokenizer"]["pretrained_model_name"] == \
        "nemo_tokenizer"
    # 3 tokens padded to 128 == the checkpoint's 128 rows: no explicit vocab_size
    assert "vocab_size" not in spec.config_kwargs


def test_vocab_size_is_added_when_nemo2_would_pad_differently(tmp_path):
    ck = checkpoint(TINY_LLAMA)
    spec = derive_model_spec(ck.config(make_vocab_size_divisible_by=32), ck.tensors, "meta-llama/Meta-Llama-3-8B",
                             "keep", lambda m: None)
    tok = resolve_tokenizer(ck.config(), ck.read_member, None, None, None, None)  # 100 tokens -> 128 with 32... ok
    seen: list[str] = []
    reconcile_vocab_size(spec, tok.vocab_size, seen.append)
    write_context(tmp_path / "a", spec, tok)
    assert "vocab_size" not in spec.config_kwargs and not seen
    assert "vocab_size" not in load_graph(tmp_path / "a" / "io.json")["model"]["config"]
    spec = derive_model_spec(ck.config(make_vocab_size_divisible_by=16), ck.tensors, "meta-llama/Meta-Llama-3-8B",
                             "keep", lambda m: None)
    reconcile_vocab_size(spec, tok.vocab_size, seen.append)  # 100 -> 112 != 128 rows (NeMo 1.0 had TP = 8)
    write_context(tmp_path / "b", spec, tok)
    assert load_graph(tmp_path / "b" / "io.json")["model"]["config"]["vocab_size"] == 128
    assert seen and "writing vocab_size=128" in seen[0] and seen[0] in spec.warnings
