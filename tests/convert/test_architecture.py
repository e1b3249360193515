"""derive_model_spec on the real NeMo-made fixtures: model ids, YAML vs preset warnings, shape checks, inference."""
from __future__ import annotations

from pathlib import Path

import pytest

from migrator.convert.formats.types import TensorInfo
from migrator.convert.model.architecture import derive_model_spec, reconcile_vocab_size
from migrator.convert.model.models import load_model_table
from migrator.errors import MigratorError
from tests.convert.context_helpers import (
    GPT_IDS, NEMO2_REF, NEMOTRONH_IDS, TINY_LLAMA, TINY_LLAMA_ZARR, TINY_MIXTRAL, checkpoint, need,
)

LLAMA_ARCH = {
    "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 176, "num_attention_heads": 4, "num_query_groups": 2,
    "kv_channels": None, "seq_length": 64, "position_embedding_type": "rope", "rotary_base": 10000,
    "rotary_percent": 1.0, "make_vocab_size_divisible_by": 128, "normalization": "RMSNorm",
    "layernorm_epsilon": 1e-5, "activation_func": "torch.nn.functional.silu", "gated_linear_unit": True,
    "add_bias_linear": False, "share_embeddings_and_output_weights": False, "apply_rope_fusion": False,
    "persist_layer_norm": False, "masked_softmax_fusion": False, "bias_activation_fusion": False,
    "bias_dropout_fusion": False, "gradient_accumulation_fusion": False,
}
MIXTRAL_MOE = {"num_moe_experts": 4, "moe_router_topk": 2, "moe_router_pre_softmax": True,
               "moe_token_dispatcher_type": "allgather", "moe_grouped_gemm": False,
               "moe_router_load_balancing_type": "aux_loss", "moe_aux_loss_coeff": 0.01, "rotary_base": 1000000}


def derive(path: Path, model_id: str | None, dtype: str = "keep", **changes):
    ck = checkpoint(path)
    seen: list[str] = []
    spec = derive_model_spec(ck.config(**changes), ck.tensors, model_id, dtype, seen.append)
    assert seen == spec.warnings  # every warning goes to the callback and is kept in the spec
    return spec


def warned_fields(spec) -> set[str]:
    return {w.split(": ", 1)[1].split(" is ", 1)[0] for w in spec.warnings if " in the preset but " in w}


@pytest.mark.parametrize("model_id", GPT_IDS)
def test_every_gpt_id_keeps_the_yaml_architecture_and_warns_only_where_the_preset_differs(model_id):
    table = load_model_table()
    entry = table.entry(model_id)
    moe = entry.family == "mixtral"
    spec = derive(TINY_MIXTRAL if moe else TINY_LLAMA, model_id)
    assert (spec.family, spec.model_class, spec.config_class) == (entry.family, entry.model_class, entry.config_class)
    expected = dict(LLAMA_ARCH, **(dict(MIXTRAL_MOE, ffn_hidden_size=128) if moe else {}))
    assert {k: spec.config_kwargs[k] for k in expected} == expected
    assert spec.config_kwargs["bf16"] is True and spec.config_kwargs["params_dtype"] == "torch.bfloat16"
    preset = table.preset(entry.config_class)
    differing = {k for k, v in expected.items()
                 if k in preset and v != preset[k] and not (k == "kv_channels" and preset[k] in (None, 16))}
    if preset.get("window_size") is not None:
        differing.add("window_size")
    if preset.get("layernorm_zero_centered_gamma"):
        differing.add("layernorm_zero_centered_gamma")
    assert warned_fields(spec) == differing
    assert all(w.endswith("; using " + repr(spec.config_kwargs[f]))
               for w, f in zip(spec.warnings, [w.split(": ", 1)[1].split(" is ")[0] for w in spec.warnings]))


def test_tiny_llama_with_llama3_8b_warns_about_sizes_rope_base_and_fusions():
    spec = derive(TINY_LLAMA, "meta-llama/Meta-Llama-3-8B")
    assert warned_fields(spec) == {
        "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "seq_length",
        "rotary_base", "apply_rope_fusion", "persist_layer_norm", "masked_softmax_fusion", "bias_activation_fusion",
        "bias_dropout_fusion"}
    assert "Llama3Config8B: seq_length is 8192 in the preset but 64 in model_config.yaml (encoder_seq_length)" \
        in "\n".join(spec.warnings)
    assert spec.expected_keys == {"module." + k[len("model."):] for k in checkpoint(TINY_LLAMA).tensors
                                  if "_extra_state" not in k}


def test_mistral_sliding_window_is_switched_off_with_a_warning():
    spec = derive(TINY_LLAMA, "mistralai/Mistral-7B-v0.1")
    assert "window_size" in spec.config_kwargs and spec.config_kwargs["window_size"] is None
    assert any("window_size is [4096, 0] in the preset" in w and "sliding-window" in w for w in spec.warnings)


def test_nemotron_ids_get_the_yaml_norm_activation_and_rotary_percent():
    spec = derive(TINY_LLAMA, "nemotron4-15b")
    assert spec.model_class.endswith("NemotronModel")
    assert spec.config_kwargs["activation_func"] == "torch.nn.functional.silu"
    assert spec.config_kwargs["layernorm_zero_centered_gamma"] is False  # preset True, NeMo 1.0 rmsnorm
    assert spec.config_kwargs["rotary_percent"] == 1.0
    assert {"normalization", "activation_func", "gated_linear_unit", "rotary_percent"} <= warned_fields(spec)


def test_zarr_fixture_derives_the_same_model_as_torch_dist():
    a = derive(TINY_LLAMA, "meta-llama/Meta-Llama-3-8B")
    b = derive(TINY_LLAMA_ZARR, "meta-llama/Meta-Llama-3-8B")
    assert a.config_kwargs == b.config_kwargs and a.expected_keys == b.expected_keys


def test_moe_tensors_mean_mixtral_without_model_id():
    spec = derive(TINY_MIXTRAL, None)
    assert spec.family == "mixtral" and spec.config_class.endswith(".MixtralConfig")
    assert spec.warnings[0].startswith("no --model_id: the MoE tensors")
    assert spec.origin == "inferred from the tensors" and spec.model_id is None
    assert {k: spec.config_kwargs[k] for k in MIXTRAL_MOE} == MIXTRAL_MOE


def test_dense_checkpoint_without_model_id_asks_for_it_and_lists_the_ids():
    with pytest.raises(MigratorError, match=r"--model_id is required.*meta-llama/Meta-Llama-3-8B.*nemotronh56b"):
        derive(TINY_LLAMA, None)


def test_unknown_model_id_names_it_and_lists_valid_ids():
    with pytest.raises(MigratorError) as e:
        derive(TINY_LLAMA, "meta-llama/Llama-5-1T")
    message = str(e.value)
    assert message.startswith("--model_id meta-llama/Llama-5-1T: unknown model id; valid ids: ")
    assert all(mid in message for mid in GPT_IDS + NEMOTRONH_IDS) and "\n" not in message


@pytest.mark.parametrize("sub", ["", "context", "context/io.json"])
def test_nemo2_checkpoint_as_model_id_takes_its_classes(sub):
    ref = need(NEMO2_REF / "tiny_llama")
    spec = derive(TINY_LLAMA, str(ref / sub) if sub else str(ref))
    assert spec.model_class == "nemo.collections.llm.gpt.model.llama.LlamaModel"
    assert spec.config_class == "nemo.collections.llm.gpt.model.llama.LlamaConfig"
    # the reference set apply_rope_fusion/persist_layer_norm False itself: only the other fusions differ
    assert warned_fields(spec) == {"masked_softmax_fusion", "bias_activation_fusion", "bias_dropout_fusion"}


def test_nemo2_mixtral_checkpoint_as_model_id():
    spec = derive(TINY_MIXTRAL, str(need(NEMO2_REF / "tiny_mixtral_moe")))
    assert spec.model_class.endswith(".MixtralModel") and spec.config_class.endswith(".MixtralConfig")
    assert warned_fields(spec) == {"bias_activation_fusion", "bias_dropout_fusion"}


@pytest.mark.parametrize("changes, tensor, fragment", [
    ({"hidden_size": 32}, "model.embedding.word_embeddings.weight", "hidden_size=32"),
    ({"num_query_groups": 4}, "model.decoder.layers.self_attention.linear_qkv.weight", "num_query_groups=4"),
    ({"num_attention_heads": 8}, "model.decoder.layers.self_attention.linear_qkv.weight", "num_attention_heads=8"),
    ({"kv_channels": 32}, "model.decoder.layers.self_attention.linear_qkv.weight", "kv_channels=32"),
    ({"ffn_hidden_size": 128}, "model.decoder.layers.mlp.linear_fc1.weight", "ffn_hidden_size=128"),
    ({"activation": "gelu"}, "model.decoder.layers.mlp.linear_fc1.weight", "gated=False"),
    ({"num_layers": 3}, "model.decoder.", "num_layers=3"),
    ({"share_embeddings_and_output_weights": True}, "model.output_layer.weight",
     "share_embeddings_and_output_weights: true"),
    ({"normalization": "layernorm"}, "model.decoder.layers.self_attention.linear_qkv.layer_norm_bias",
     "normalization: LayerNorm"),
    ({"bias": True}, "model.decoder.layers.self_attention.linear_qkv.bias", "bias"),
    ({"position_embedding_type": "learned_absolute"}, "model.embedding.position_embeddings.weight",
     "learned_absolute"),
    ({"num_moe_experts": 4}, "model.decoder.layers.mlp.router.weight", "num_moe_experts=4"),
])
def test_a_shape_that_contradicts_the_yaml_is_an_error_naming_the_tensor(changes, tensor, fragment):
    with pytest.raises(MigratorError) as e:
        derive(TINY_LLAMA, "meta-llama/Meta-Llama-3-8B", **changes)
    message = str(e.value)
    assert message.startswith(tensor) and fragment in message and "\n" not in message


def test_moe_tensors_in_a_dense_yaml_are_an_error():
    with pytest.raises(MigratorError, match=r"^model\.decoder\.layers\.mlp\..*MoE tensor present"):
        derive(TINY_MIXTRAL, "mistralai/Mixtral-8x7B-v0.1", num_moe_experts=None)


def test_wrong_expert_count_names_the_router():
    with pytest.raises(MigratorError, match=r"^model\.decoder\.layers\.mlp\.router\.weight: shape \[2, 4, 64\]"):
        derive(TINY_MIXTRAL, "mistralai/Mixtral-8x7B-v0.1", num_moe_experts=8)


@pytest.mark.parametrize("dtype, bf16, fp16, params", [
    ("keep", True, False, "torch.bfloat16"), ("bf16", True, False, "torch.bfloat16"),
    ("fp16", False, True, "torch.float16"), ("fp32", False, False, "torch.float32"),
])
def test_precision_follows_the_output_dtype(dtype, bf16, fp16, params):
    spec = derive(TINY_MIXTRAL, "mistralai/Mixtral-8x7B-v0.1", dtype)
    assert (spec.config_kwargs["bf16"], spec.config_kwargs["fp16"], spec.config_kwargs["params_dtype"]) == \
        (bf16, fp16, params)
    assert spec.source_dtype == "bfloat16"


def test_unknown_dtype_is_an_error():
    with pytest.raises(MigratorError, match=r"^--dtype int8: unsupported"):
        derive(TINY_LLAMA, "meta-llama/Meta-Llama-3-8B", "int8")


def test_llama31_rope_scaling_switches_to_llama31config():
    spec = derive(TINY_LLAMA, "meta-llama/Meta-Llama-3-8B", scale_positional_embedding=True, scale_factor=32,
                  old_context_len=8192)
    assert spec.config_class == "nemo.collections.llm.gpt.model.llama.Llama31Config"
    assert {k: spec.config_kwargs.get(k) for k in ("scale_factor", "low_freq_factor", "high_freq_factor")} == \
        {"scale_factor": 32, "low_freq_factor": 1, "high_freq_factor": 4}
    assert any("using Llama31Config instead" in w for w in spec.warnings)


def test_rope_scaling_without_an_equivalent_is_an_error():
    with pytest.raises(MigratorError, match=r"scale_positional_embedding: true .* mistral family"):
        derive(TINY_LLAMA, "mistralai/Mistral-7B-v0.1", scale_positional_embedding=True)


def test_seq_len_interpolation_factor_and_fp8_are_carried():
    spec = derive(TINY_LLAMA, "meta-llama/Llama-2-7b-hf", seq_len_interpolation_factor=4.0, fp8=True,
                  fp8_hybrid=True, fp8_amax_history_len=16)
    assert spec.config_kwargs["seq_len_interpolation_factor"] == 4.0
    assert (spec.config_kwargs["fp8"], spec.config_kwargs["fp8_amax_history_len"]) == ("hybrid", 16)
    assert "seq_len_interpolation_factor" in warned_fields(spec)


@pytest.mark.parametrize("changes, match", [
    ({"mcore_gpt": False}, r"^model_config\.yaml: mcore_gpt: false is a legacy"),
    ({"activation": "approx-gelu"}, r"^model_config\.yaml: activation: 'approx-gelu' has no NeMo 2\.0"),
    ({"normalization": "scalenorm"}, r"^model_config\.yaml: normalization: 'scalenorm'"),
    ({"position_embedding_type": "alibi"}, r"^model_config\.yaml: position_embedding_type: 'alibi'"),
    ({"num_layers": None}, r"^model_config\.yaml: num_layers is missing"),
    ({"fp8": True, "fp8_hybrid": False, "fp8_e4m3": False}, r"fp8: true but neither"),
])
def test_settings_nemo2_cannot_express_are_errors(changes, match):
    with pytest.raises(MigratorError, match=match):
        derive(TINY_LLAMA, "meta-llama/Meta-Llama-3-8B", **changes)


def test_vocab_size_is_written_only_when_nemo2_padding_would_differ():
    spec = derive(TINY_LLAMA, "meta-llama/Meta-Llama-3-8B")
    reconcile_vocab_size(spec, 100)
    assert "vocab_size" not in spec.config_kwargs  # 100 padded to 128 == the 128 embedding rows
    seen: list[str] = []
    reconcile_vocab_size(spec, 20, seen.append)  # NeMo 2.0 would build 128 rows from 20 tokens too
    assert "vocab_size" not in spec.config_kwargs and not seen
    tp2 = derive(TINY_LLAMA, "meta-llama/Meta-Llama-3-8B", make_vocab_size_divisible_by=64)
    reconcile_vocab_size(tp2, 60, seen.append)  # 60 -> 64, but the checkpoint has 128 rows (NeMo 1.0 TP=2)
    assert tp2.config_kwargs["vocab_size"] == 128 and "needs NeMo >= 2.3.0" in seen[0]
    with pytest.raises(MigratorError, match=r"128 rows, but the tokenizer has 200 tokens"):
        reconcile_vocab_size(derive(TINY_LLAMA, "meta-llama/Meta-Llama-3-8B"), 200)


# --- NemotronH (hybrid Mamba): no fixture exists, so a real NeMo 1.0 Mamba config and a synthetic tensor index ---

def mamba_case(pattern: str = "M*M-", hidden: int = 64):
    from ruamel.yaml import YAML

    from tests.convert.context_helpers import NEMO_CONFIGS

    base = YAML(typ="safe", pure=True).load(need(NEMO_CONFIGS / "megatron_mamba_config.yaml").read_text())["model"]
    cfg = dict(base, num_layers=len(pattern), hybrid_override_pattern=pattern, hidden_size=hidden,
               ffn_hidden_size=128, num_attention_heads=4, num_query_groups=2, encoder_seq_length=128,
               vocab_size=256, mamba_ssm_ngroups=2)
    t: dict[str, TensorInfo] = {}

    def add(key: str, shape: tuple[int, ...]) -> None:
        t["model." + key] = TensorInfo("model." + key, shape, "bfloat16", 0)

    add("embedding.word_embeddings.weight", (256, 64))
    for i, symbol in enumerate(pattern):
        p = f"decoder.layers.{i}."
        if symbol == "M":
            add(p + "mixer.in_proj.weight", (2 * 128 + 2 * 2 * 128 + 2, 64))
            add(p + "mixer.out_proj.weight", (64, 128))
            add(p + "mixer.in_proj.layer_norm_weight", (64,))
        elif symbol == "*":
            add(p + "self_attention.linear_qkv.weight", (128, 64))
            add(p + "self_attention.linear_proj.weight", (64, 64))
        else:
            add(p + "mlp.linear_fc1.weight", (128, 64))
            add(p + "mlp.linear_fc2.weight", (64, 128))
    add("decoder.final_norm.weight", (64,))
    add("output_layer.weight", (256, 64))
    return cfg, t


@pytest.mark.parametrize("model_id", NEMOTRONH_IDS)
def test_nemotronh_ids_map_to_mamba_model_with_the_yaml_pattern(model_id):
    entry = load_model_table().entry(model_id)
    cfg, tensors = mamba_case()
    spec = derive_model_spec(cfg, tensors, model_id, "keep", lambda m: None)
    assert (spec.family, spec.model_class, spec.config_class) == ("nemotronh", entry.model_class, entry.config_class)
    assert spec.model_class == "nemo.collections.llm.gpt.model.ssm.MambaModel"
    kw = spec.config_kwargs
    assert (kw["num_layers"], kw["hybrid_override_pattern"], kw["hidden_size"], kw["mamba_num_groups"]) == \
        (4, "M*M-", 64, 2)
    assert "activation_func" not in kw  # the preset's squared-ReLU lambda cannot be referenced: left as it is
    assert {"num_layers", "hidden_size", "hybrid_override_pattern"} <= warned_fields(spec)
    assert "module.decoder.layers.2.mixer.in_proj.weight" in spec.expected_keys
    assert entry.since == ("2.4.0" if model_id == "nemotronh4b" else "2.3.0")


def test_nemotronh_pattern_that_contradicts_the_layers_is_an_error():
    cfg, tensors = mamba_case("M*M-")
    cfg["hybrid_override_pattern"] = "MM*-"
    with pytest.raises(MigratorError, match=r"^model\.decoder\.layers\.1\.mixer\.\*: missing; "
                                            r"hybrid_override_pattern\[1\] is 'M'"):
        derive_model_spec(cfg, tensors, "nemotronh8b", "keep", lambda m: None)


def test_mamba_checkpoint_without_model_id_asks_for_a_nemotronh_id():
    cfg, tensors = mamba_case()
    with pytest.raises(MigratorError, match=r"--model_id is required: .*nemotronh8b"):
        derive_model_spec(cfg, tensors, None, "keep", lambda m: None)


def test_gpt3_style_layernorm_bias_learned_positions_tied_checkpoint_is_accepted():
    """A synthetic index (the NeMo-made one is generated by .ci/oracle): every optional tensor present."""
    ck = checkpoint(TINY_LLAMA)
    t = {k: v for k, v in ck.tensors.items() if k != "model.output_layer.weight"}

    def add(key, shape):
        t["model." + key] = TensorInfo("model." + key, shape, "bfloat16", 0)

    L, H = 2, 64
    add("embedding.position_embeddings.weight", (64, H))
    for key, shape in {"self_attention.linear_qkv.layer_norm_bias": (L, H), "self_attention.linear_qkv.bias": (L, 192),
                       "self_attention.linear_proj.bias": (L, H), "mlp.linear_fc1.layer_norm_bias": (L, H),
                       "mlp.linear_fc1.bias": (L, 176), "mlp.linear_fc2.bias": (L, H),
                       "self_attention.linear_qkv.weight": (L, 192, H), "mlp.linear_fc1.weight": (L, 176, H)}.items():
        add("decoder.layers." + key, shape)
    add("decoder.final_layernorm.bias", (H,))
    cfg = ck.config(normalization="layernorm", activation="gelu", bias=True, num_query_groups=None,
                    position_embedding_type="learned_absolute", share_embeddings_and_output_weights=True)
    spec = derive_model_spec(cfg, t, "meta-llama/Llama-2-7b-hf", "keep", lambda m: None)
    kw = spec.config_kwargs
    assert (kw["normalization"], kw["activation_func"], kw["gated_linear_unit"], kw["add_bias_linear"]) == \
        ("LayerNorm", "torch.nn.functional.gelu", False, True)
    assert (kw["position_embedding_type"], kw["share_embeddings_and_output_weights"], kw["num_query_groups"]) == \
        ("learned_absolute", True, None)
    assert spec.expected_keys == {"module." + k[len("model."):] for k in t if "_extra_state" not in k}
    assert "module.output_layer.weight" not in spec.expected_keys


def test_nemotronh_vocab_that_nemo2_cannot_rebuild_is_an_error():
    cfg, tensors = mamba_case()  # 256 embedding rows, make_vocab_size_divisible_by 128
    spec = derive_model_spec(cfg, tensors, "nemotronh8b", "keep", lambda m: None)
    reconcile_vocab_size(spec, 200)  # 200 -> 256: fine
    assert "vocab_size" not in spec.config_kwargs
    with pytest.raises(MigratorError, match=r"MambaModel always builds 128 .* ignores vocab_size"):
        reconcile_vocab_size(spec, 100)
    cfg["make_vocab_size_divisible_by"] = 96
    with pytest.raises(MigratorError, match=r"256 rows, but NeMo 2\.0's MambaModel always builds a multiple of 96"):
        derive_model_spec(cfg, tensors, "nemotronh8b", "keep", lambda m: None)
