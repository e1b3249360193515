"""Non-distributed NeMo 1.0 GPT checkpoints (`model_weights.ckpt`, `mp_rank_XX/`, `tp_rank_XX_pp_rank_YYY/`) and
pre-megatron-core ones (`mcore_gpt: False`): `convert` merges them into a torch_dist NeMo 2.0 checkpoint.

Two kinds of ground truth: the NeMo-made legacy fixtures (../shared/fixtures/legacy, resharded by NeMo's own
megatron_change_num_partitions.py; their reference.pt holds the TP=1 megatron-core state_dict), and generated
TP x PP rank files split from known TP=1 tensors the way NeMo splits (tests/convert/checkpoint_factory.py). The
output is read back with torch's own DCP reader. The real NeMo 2.0 load and forward are in .ci/oracle_legacy.
"""
from __future__ import annotations

import json
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from migrator.convert.verify import verify_checkpoint
from tests.convert import checkpoint_factory as factory
from tests.convert.conftest import FIXTURES, need, run_cli, with_settings

LEGACY = FIXTURES / "legacy"
LLAMA_ID = "meta-llama/Llama-2-7b-hf"
# fixture -> the reference.pt whose state_dict (megatron-core names, TP=1) the merged output must equal
CASES = {
    "b_tp1/tiny_llama_mcore_nondist": "b_tp1/tiny_llama_mcore.reference.pt",
    "b_v64/tiny_llama_mcore_v64_nondist": "b_v64/tiny_llama_mcore_v64.reference.pt",
    "b_tp2pp1/tiny_llama_mcore_tp2pp1": "b_v64/tiny_llama_mcore_v64.reference.pt",
    "b_tp1pp2/tiny_llama_mcore_tp1pp2": "b_v64/tiny_llama_mcore_v64.reference.pt",
    "c_gpt_legacy/tiny_gpt_legacy": "c_gpt_legacy/mcore/tiny_gpt_legacy_mcore.reference.pt",
    "c_gpt2b_legacy/tiny_gpt2b_legacy": "c_gpt2b_legacy/mcore/tiny_gpt2b_legacy_mcore.reference.pt",
    "c_gpt2b_legacy_tp2pp1/tiny_gpt2b_legacy_tp2pp1": "c_gpt2b_legacy/mcore/tiny_gpt2b_legacy_mcore.reference.pt",
}
_NORMS = {"self_attention.linear_qkv.layer_norm_": "input_layernorm.", "mlp.linear_fc1.layer_norm_": "pre_mlp_layernorm."}


def per_layer(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stacked NeMo 2.0 keys (module.decoder.layers.X [L, ...]) -> a megatron-core local-spec state_dict."""
    out = {}
    for key, value in tensors.items():
        base = key.split(".", 1)[1]
        if ".layers." not in base:
            out[base] = value
            continue
        pre, post = base.split(".layers.", 1)
        for new, old in _NORMS.items():
            if post.startswith(new):
                post = old + post[len(new):]
        for i in range(value.shape[0]):
            out[f"{pre}.layers.{i}.{post}"] = value[i]
    return out


def convert(source: Path, out: Path, *extra: str) -> str:
    result = run_cli("convert", "--input_path", source, "--output_path", out, "--model_id", LLAMA_ID, *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(CASES))
def test_nemo_made_fixture_merges_to_the_tp1_reference(tmp_path: Path, name: str) -> None:
    source = need(LEGACY / f"{name}.nemo")
    ref = torch.load(need(LEGACY / CASES[name]), weights_only=False)["state_dict"]
    out = tmp_path / "out"
    text = convert(source, out)
    assert "merged from" in text
    tensors, objects = factory.read_dcp(out / "weights")
    got = per_layer(tensors)
    assert set(got) == set(ref), sorted(set(got) ^ set(ref))
    for key, value in ref.items():
        assert value.dtype == got[key].dtype and torch.equal(factory.bits(got[key]), factory.bits(value)), key
    layers = 2
    assert sorted(objects) == sorted(f"module.decoder.layers.{m}._extra_state/shard_{i}_{layers}"
                                     for m in ("self_attention.linear_qkv", "self_attention.linear_proj",
                                               "mlp.linear_fc1", "mlp.linear_fc2") for i in range(layers))
    report = verify_checkpoint(out, source)
    assert report.ok, report.lines()
    assert any("bit-equal to their part of the merged output" in c for c in report.checks), report.lines()


def test_legacy_fixture_architecture_comes_from_its_yaml(tmp_path: Path) -> None:
    source = need(LEGACY / "c_gpt2b_legacy" / "tiny_gpt2b_legacy.nemo")
    convert(source, tmp_path / "out")
    graph = json.loads((tmp_path / "out" / "context" / "io.json").read_text())
    text = json.dumps(graph)
    # rotary 0.5, LayerNorm, full multi-head attention: the YAML's values, not the Llama-2 preset's
    assert '"rotary_percent"' in text and "0.5" in text and '"LayerNorm"' in text


@pytest.fixture
def tokenizer_member() -> tuple[str, bytes]:
    with tarfile.open(need(LEGACY / "b_tp1" / "tiny_llama_mcore_nondist.nemo")) as archive:
        for info in archive.getmembers():
            if info.name.endswith("_tokenizer.model"):
                return info.name.removeprefix("./"), archive.extractfile(info).read()  # type: ignore[union-attr]
    raise AssertionError("no tokenizer")


@pytest.fixture
def config_text() -> str:
    with tarfile.open(need(LEGACY / "b_tp1" / "tiny_llama_mcore_nondist.nemo")) as archive:
        return archive.extractfile("./model_config.yaml").read().decode()  # type: ignore[union-attr]


def _tp4pp2(config_text: str, tokenizer_member, tmp_path: Path, **options) -> tuple[Path, dict]:
    """A TP=4 x PP=2 swiglu GQA model (8 heads, 4 groups, 4 layers) with the vocabulary padded for TP=4 (512 rows;
    the 100-token tokenizer pads to 128 at TP=1)."""
    tensors = factory.tiny_llama_tensors(layers=4, heads=8, groups=4, vocab=128, seed=3)
    files = factory.split_nondist(tensors, 4, 2, padded_rows=512, **options)
    config = with_settings(config_text, tensor_model_parallel_size=4, pipeline_model_parallel_size=2, num_layers=4,
                           num_attention_heads=8, num_query_groups=4)
    name, data = tokenizer_member
    return factory.pack_nondist(tmp_path / "tp4pp2.nemo", config, files, {name: data}), tensors


def test_tp4_pp2_swiglu_gqa_padded_vocab_merges_exactly(tmp_path: Path, config_text: str, tokenizer_member) -> None:
    source, tensors = _tp4pp2(config_text, tokenizer_member, tmp_path, o2=True)
    out = tmp_path / "out"
    text = convert(source, out)
    assert "512 rows padded for TP=4; keeping the 128" in text
    got, objects = factory.read_dcp(out / "weights")
    assert set(got) == {"module." + k[len("model."):] for k in tensors}
    for key, value in tensors.items():
        assert torch.equal(factory.bits(got["module." + key[len("model."):]]), factory.bits(value)), key
    assert len(objects) == 4 * 4
    report = verify_checkpoint(out, source)
    assert report.ok, report.lines()
    assert any("vocabulary padding rows" in n for n in report.notes), report.lines()
    # every chunk archive (written by in-kernel copies of the ranks' byte ranges) has the right CRCs
    import io
    import zipfile

    from migrator.convert.read.torch_dist import parse_dcp_metadata

    index = parse_dcp_metadata((out / "weights" / ".metadata").read_bytes(), "x", member_dir="")
    checked = 0
    for chunks in index.chunks.values():
        for chunk in chunks:
            data = (out / "weights" / chunk.member).read_bytes()[chunk.byte_offset:chunk.byte_offset + chunk.byte_length]
            assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None, chunk
            checked += 1
    assert checked == 3 + 4 * 6  # embedding, final norm, output layer; 6 tensors in each of 4 layers
    # NeMo's compute_tp_merge concatenates linear_fc1's rank pieces ([gate_r; up_r]) as they are: not the original
    fc1 = tensors["model.decoder.layers.mlp.linear_fc1.weight"][0]
    pieces = [torch.cat([fc1[:176][r * 44:(r + 1) * 44], fc1[176:][r * 44:(r + 1) * 44]]) for r in range(4)]
    assert not torch.equal(torch.cat(pieces), fc1)


def _legacy_tensors(layers: int = 4, hidden: int = 64, ffn: int = 96, heads: int = 4) -> dict[str, torch.Tensor]:
    tensors = factory.tiny_llama_tensors(layers=layers, hidden=hidden, ffn=ffn, heads=heads, groups=heads, seed=5)
    g = torch.Generator().manual_seed(9)
    for name in ("self_attention.linear_qkv.layer_norm_bias", "mlp.linear_fc1.layer_norm_bias"):
        tensors[f"model.decoder.layers.{name}"] = (torch.randn(layers, hidden, generator=g) * 0.02).bfloat16()
    tensors["model.decoder.final_layernorm.bias"] = (torch.randn(hidden, generator=g) * 0.02).bfloat16()
    return tensors


def test_legacy_tp2_pp2_megatron_legacy_qkv_non_fused_glu_o2_layernorm1p(tmp_path: Path, config_text: str,
                                                                         tokenizer_member) -> None:
    tensors = _legacy_tensors()
    files = factory.split_nondist(tensors, 2, 2, legacy=True, megatron_legacy_heads=4, non_fused_glu=True, o2=True,
                                  extra_state=False)
    assert "model.module.language_model.encoder.layers.1.mlp.dense_h_to_4h_2.weight" in files[
        "tp_rank_01_pp_rank_001/model_weights.ckpt"]
    config = with_settings(config_text, mcore_gpt="false", tensor_model_parallel_size=2,
                           pipeline_model_parallel_size=2, num_layers=4, ffn_hidden_size=96, num_query_groups="null",
                           megatron_legacy="true", activation="swiglu", normalization="layernorm1p",
                           megatron_amp_O2="true")
    name, data = tokenizer_member
    source = factory.pack_nondist(tmp_path / "legacy.nemo", config, files, {name: data})
    out = tmp_path / "out"
    convert(source, out)
    got, objects = factory.read_dcp(out / "weights")
    for key, value in tensors.items():
        assert torch.equal(factory.bits(got["module." + key[len("model."):]]), factory.bits(value)), key
    assert len(objects) == 4 * 4  # [None] placeholders: these files have no _extra_state
    plan = run_cli("convert", "--input_path", source, "--output_path", tmp_path / "dry", "--model_id", LLAMA_ID,
                   "--dry-run").stdout
    # layernorm1p: LayerNorm with a zero-centred gamma, the stored weights unchanged (checked bit-equal above)
    assert "normalization='LayerNorm'" in plan and "layernorm_zero_centered_gamma=True" in plan, plan
    assert "TP=2, PP=2" in plan and "pre-megatron-core" in plan
    report = verify_checkpoint(out, source)
    assert report.ok, report.lines()
    assert any("placeholders" in n for n in report.notes)


def test_the_spill_folder_of_a_killed_run_is_removed_by_the_next_run(tmp_path: Path, config_text: str,
                                                                   tokenizer_member) -> None:
    """A compressed rank-file checkpoint spills to OUT.spill/ (a fixed name under OUT's lock), so the spill of a run
    killed with SIGKILL is recognised and removed by the next run instead of being left beside the output forever."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tensors = factory.tiny_llama_tensors(layers=2, seed=1)
    files = factory.split_nondist(tensors, 2, 1, padded_rows=256)
    name, data = tokenizer_member
    gz = factory.pack_nondist(tmp_path / "in.nemo", with_settings(config_text, tensor_model_parallel_size=2), files,
                              {name: data}, compress=True)
    out = tmp_path / "o" / "out"
    # a run stopped (SIGSTOP) once its spill folder holds a rank file, then killed: what SIGKILL leaves
    process = subprocess.Popen([sys.executable, "-m", "migrator", "convert", "--input_path", str(gz),
                                "--output_path", str(out), "--model_id", LLAMA_ID],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spill = out.with_name("out.spill")
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline and not (spill.is_dir() and any(spill.iterdir())):
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    if not spill.exists():  # the run ended before the kill landed: leave what a kill leaves by hand
        spill.mkdir()
        (spill / "0.ckpt").write_bytes(b"x" * 100)
    text = convert(gz, out, "--force")
    assert f"{spill}: removed, left by an interrupted run" in text, text
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
    assert verify_checkpoint(out, gz).ok


def test_compressed_and_extracted_inputs_give_the_same_output(tmp_path: Path, config_text: str,
                                                             tokenizer_member) -> None:
    tensors = factory.tiny_llama_tensors(layers=2, seed=1)
    files = factory.split_nondist(tensors, 2, 1, padded_rows=256)
    config = with_settings(config_text, tensor_model_parallel_size=2)
    name, data = tokenizer_member
    gz = factory.pack_nondist(tmp_path / "in.nemo", config, files, {name: data}, compress=True)
    out = tmp_path / "gz" / "out"
    text = convert(gz, out)
    assert "spilled to" in text and "on disk (not memory)" in text
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # the spill folder is gone
    folder = tmp_path / "extracted"
    with tarfile.open(gz) as archive:
        archive.extractall(folder, filter="data")
    convert(folder, tmp_path / "out2")
    a, _ = factory.read_dcp(out / "weights")
    b, _ = factory.read_dcp(tmp_path / "out2" / "weights")
    for key, value in tensors.items():
        short = "module." + key[len("model."):]
        assert torch.equal(factory.bits(a[short]), factory.bits(value)) and torch.equal(a[short], b[short]), key


def test_dtype_cast_on_the_merge_route(tmp_path: Path) -> None:
    source = need(LEGACY / "b_tp2pp1" / "tiny_llama_mcore_tp2pp1.nemo")
    out = tmp_path / "out"
    convert(source, out, "--dtype", "fp32")
    got, _ = factory.read_dcp(out / "weights")
    ref = torch.load(need(LEGACY / "b_v64" / "tiny_llama_mcore_v64.reference.pt"), weights_only=False)["state_dict"]
    per = per_layer(got)
    assert all(v.dtype == torch.float32 for v in got.values())
    assert all(torch.equal(per[k], v.float()) for k, v in ref.items())
    report = verify_checkpoint(out, source)
    assert report.ok, report.lines()


def test_verify_against_finds_a_changed_tensor(tmp_path: Path) -> None:
    source = need(LEGACY / "b_tp2pp1" / "tiny_llama_mcore_tp2pp1.nemo")
    out = tmp_path / "out"
    convert(source, out)
    from migrator.convert.read.torch_dist import parse_dcp_metadata

    index = parse_dcp_metadata((out / "weights" / ".metadata").read_bytes(), "x", member_dir="")
    chunk = next(c for c in index.chunks["module.decoder.layers.self_attention.linear_proj.weight"]
                 if c.offsets[0] == 1)
    path = out / "weights" / chunk.member
    data = bytearray(path.read_bytes())
    from migrator.convert.formats.torch_save_format import tensor_layout

    layout = tensor_layout(bytes(data[chunk.byte_offset:chunk.byte_offset + chunk.byte_length]), "chunk")
    data[chunk.byte_offset + layout.data_offset + 10] ^= 0x40  # one tensor byte
    path.write_bytes(bytes(data))
    report = verify_checkpoint(out, source)
    assert not report.ok
    assert any("linear_proj.weight layer 1: tensor-parallel rank" in p for p in report.problems), report.problems


def _one_line_error(result, *parts: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_layouts_that_contradict_the_config_are_refused(tmp_path: Path, config_text: str, tokenizer_member) -> None:
    tensors = factory.tiny_llama_tensors(layers=2, seed=1)
    files = factory.split_nondist(tensors, 2, 1, padded_rows=256)
    name, data = tokenizer_member
    wrong_tp = factory.pack_nondist(tmp_path / "a.nemo", with_settings(config_text, tensor_model_parallel_size=4),
                                    files, {name: data})
    _one_line_error(run_cli("convert", "--input_path", wrong_tp, "--output_path", tmp_path / "o1", "--model_id",
                            LLAMA_ID), "mp_rank_01/model_weights.ckpt", "2 tensor-parallel ranks",
                    "tensor_model_parallel_size: 4")
    bad = dict(files)
    state = dict(bad["mp_rank_01/model_weights.ckpt"])
    state["model.decoder.layers.0.self_attention.linear_proj.weight"] = torch.zeros(64, 40, dtype=torch.bfloat16)
    bad["mp_rank_01/model_weights.ckpt"] = state
    shapes = factory.pack_nondist(tmp_path / "b.nemo", with_settings(config_text, tensor_model_parallel_size=2),
                                  bad, {name: data})
    _one_line_error(run_cli("convert", "--input_path", shapes, "--output_path", tmp_path / "o2", "--model_id",
                            LLAMA_ID), "mp_rank_01/model_weights.ckpt", "linear_proj.weight", "must agree")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_a_pickle_naming_other_globals_is_refused(tmp_path: Path, config_text: str, tokenizer_member) -> None:
    buffer = tmp_path / "w.ckpt"
    import zipfile

    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("model_weights/data.pkl", pickle.dumps({"model.embedding.word_embeddings.weight": _Evil()},
                                                                protocol=2))
    name, data = tokenizer_member
    path = tmp_path / "evil.nemo"
    with tarfile.open(path, "w:") as tar:
        for member, content in ((name, data), ("model_config.yaml", config_text.encode()),
                                ("model_weights.ckpt", buffer.read_bytes())):
            info = tarfile.TarInfo(member)
            info.size = len(content)
            import io

            tar.addfile(info, io.BytesIO(content))
    result = run_cli("convert", "--input_path", path, "--output_path", tmp_path / "o", "--model_id", LLAMA_ID)
    _one_line_error(result, "model_weights.ckpt", "posix.system" if "posix" in result.stderr else "system",
                    "not on the allowlist")


def test_lint_advice_for_gpt_legacy_models_points_at_convert(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("trainer:\n  devices: 1\nmodel:\n  mcore_gpt: False\n  num_layers: 2\n")
    result = run_cli("lint", config, "--exit-zero")
    assert "NM116" in result.stdout and "`nemo-migrate convert` converts them" in result.stdout, result.stdout
    assert "convert_gpt_nemo_to_mcore.py first" not in result.stdout


def test_transformer_engine_names_and_extra_state_are_carried(tmp_path: Path, config_text: str,
                                                              tokenizer_member) -> None:
    """GPU-made files: fused norm names (`linear_qkv.layer_norm_weight`) and Transformer Engine `_extra_state`s
    (a pickled BytesIO each, also core_attention's); megatron-core saves them from tensor-parallel rank 0."""
    import io

    tensors = factory.tiny_llama_tensors(layers=2, seed=2)
    files = factory.split_nondist(tensors, 2, 1, padded_rows=256)
    te_files = {}
    for member, state in files.items():
        rank = member[len("mp_rank_"):len("mp_rank_") + 2]
        renamed = {}
        for key, value in state.items():
            key = key.replace("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight")
            key = key.replace("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight")
            if key.endswith("_extra_state"):
                value = io.BytesIO(f"fp8 {key} rank {rank}".encode())
            renamed[key] = value
        renamed["model.decoder.layers.0.self_attention.core_attention._extra_state"] = io.BytesIO(
            f"attention 0 rank {rank}".encode())
        # newer Transformer Engine keeps its state as a uint8 tensor
        renamed["model.decoder.layers.1.self_attention.core_attention._extra_state"] = factory.te_state(
            "core_attention", int(rank))
        te_files[member] = renamed
    config = with_settings(config_text, tensor_model_parallel_size=2, transformer_engine="true")
    name, data = tokenizer_member
    source = factory.pack_nondist(tmp_path / "te.nemo", config, te_files, {name: data})
    out = tmp_path / "out"
    convert(source, out)
    got, objects = factory.read_dcp(out / "weights")
    for key, value in tensors.items():
        assert torch.equal(factory.bits(got["module." + key[len("model."):]]), factory.bits(value)), key
    assert len(objects) == 5 * 2
    loaded = objects  # torch DCP hands back each object as saved: megatron-core's one-element list
    assert loaded["module.decoder.layers.self_attention.core_attention._extra_state/shard_0_2"][0].getvalue() == \
        b"attention 0 rank 00"
    assert torch.equal(loaded["module.decoder.layers.self_attention.core_attention._extra_state/shard_1_2"][0],
                       factory.te_state("core_attention", 0))
    assert loaded["module.decoder.layers.mlp.linear_fc2._extra_state/shard_0_2"][0].getvalue() == \
        b"fp8 model.decoder.layers.0.mlp.linear_fc2._extra_state rank 00"
    report = verify_checkpoint(out, source)
    assert report.ok, report.lines()


def test_merged_shapes_that_contradict_the_config_name_the_rank_files(tmp_path: Path, config_text: str,
                                                                      tokenizer_member) -> None:
    tensors = factory.tiny_llama_tensors(layers=2, seed=1)
    files = factory.split_nondist(tensors, 2, 1, padded_rows=256)
    name, data = tokenizer_member
    wrong = factory.pack_nondist(tmp_path / "a.nemo", with_settings(config_text, tensor_model_parallel_size=2,
                                                                    ffn_hidden_size=200), files, {name: data})
    _one_line_error(run_cli("convert", "--input_path", wrong, "--output_path", tmp_path / "o", "--model_id", LLAMA_ID),
                    "linear_fc1.weight: shape [2, 352, 64] contradicts model_config.yaml",
                    "merged from", "mp_rank_00/model_weights.ckpt and 1 more rank files")


def test_to_bridge_merges_the_same_tensors_under_bridge_names(tmp_path: Path) -> None:
    source = need(LEGACY / "c_gpt2b_legacy_tp2pp1" / "tiny_gpt2b_legacy_tp2pp1.nemo")
    ref = torch.load(need(LEGACY / CASES["c_gpt2b_legacy_tp2pp1/tiny_gpt2b_legacy_tp2pp1"]),
                     weights_only=False)["state_dict"]
    out = tmp_path / "bridge"
    result = run_cli("convert", "--to", "bridge", "--input_path", source, "--output_path", out)
    assert result.returncode == 0, result.stderr
    iteration = next(p for p in out.iterdir() if p.name.startswith("iter_"))
    tensors, objects = factory.read_dcp(iteration)
    got = per_layer({"x." + k: v for k, v in tensors.items()})  # Bridge keys have no prefix
    assert set(got) == set(ref)
    for key, value in ref.items():
        assert torch.equal(factory.bits(got[key]), factory.bits(value)), key
    assert all(not k.startswith(("model.", "module.")) for k in objects)
    report = verify_checkpoint(out, source)
    assert report.ok, report.lines()
