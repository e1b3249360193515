"""`nemo-migrate verify OUT --load`: megatron-core builds the model OUT's config describes and loads OUT strictly.

Ground truth: the NeMo 1.0 logits stored next to each fixture (`*.reference.pt`, NeMo 1.0's own CPU forward), and
NeMo's own converter outputs (`nemo2_reference/`). megatron-core is imported once in this process (in-process
tests) and in a few CLI subprocesses (exit codes and the printed lines).
"""
from __future__ import annotations

import pickle
import re
import shutil
import warnings
from pathlib import Path

import pytest

from tests.conftest import need_megatron_core
from tests.convert.conftest import LLAMA_ID, NEMO1, NEMO2_REFERENCE, fixture_nemo, need, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Our conversions of the NeMo-made fixtures (real CLI), and NeMo's own converter outputs."""
    need_megatron_core()
    root = tmp_path_factory.mktemp("load")
    made = {}
    for name, source, extra in (("llama_torch_dist", "tiny_llama_torch_dist", ("--model_id", LLAMA_ID)),
                                ("llama_zarr", "tiny_llama_zarr", ("--model_id", LLAMA_ID)),
                                ("mixtral", "tiny_mixtral_moe", ())):
        result = run_cli("convert", "--input_path", fixture_nemo(source), "--output_path", root / name, *extra)
        assert result.returncode == 0, result.stderr
        made[name] = root / name
    made["nemo_llama"] = need(NEMO2_REFERENCE / "tiny_llama")
    made["nemo_mixtral"] = need(NEMO2_REFERENCE / "tiny_mixtral_moe")
    return made


REFERENCE = {"llama_torch_dist": "tiny_llama_torch_dist", "llama_zarr": "tiny_llama_torch_dist",
             "mixtral": "tiny_mixtral_moe", "nemo_llama": "tiny_llama_torch_dist", "nemo_mixtral": "tiny_mixtral_moe"}


def _reference(name: str) -> dict:
    import torch

    return torch.load(need(NEMO1 / f"{REFERENCE[name]}.reference.pt"), weights_only=True)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_loads_strictly_and_reproduces_nemo1_logits(outputs: dict[str, Path], name: str) -> None:
    from migrator.convert.load_check import check_load

    reference = _reference(name)
    result = check_load(outputs[name], reference["tokens"][0].tolist())
    assert not result.problems, result.problems
    assert any(c.startswith("load: megatron-core ") and "strictly" in c for c in result.checks), result.checks
    logits = result.logits.float()
    assert logits.shape == reference["logits"].shape
    # NeMo 1.0 ran the same megatron-core layers in bf16 on CPU: measured max|d| 0.0 on every output here
    assert (logits - reference["logits"]).abs().max().item() < 1e-2
    assert (logits.argmax(-1) == reference["logits"].argmax(-1)).all()


def test_our_output_and_nemos_give_the_same_config(outputs: dict[str, Path]) -> None:
    """Two config sources (ours: explicit fields over Llama3Config8B's preset; NeMo's: LlamaConfig with a full
    model.yaml) describe the same model."""
    from migrator.convert.model.mcore_config import find_load_target

    ours, nemos = find_load_target(outputs["llama_torch_dist"]), find_load_target(outputs["nemo_llama"])
    assert (ours.config_class, nemos.config_class) == ("nemo.collections.llm.gpt.model.llama.Llama3Config8B",
                                                       "nemo.collections.llm.gpt.model.llama.LlamaConfig")
    architecture = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                    "normalization", "activation_func", "gated_linear_unit", "add_bias_linear", "params_dtype")
    assert {k: ours.transformer[k] for k in architecture} == {k: nemos.transformer[k] for k in architecture}
    assert ours.model == nemos.model
    assert ours.model["rotary_base"] == 10000 and ours.transformer["ffn_hidden_size"] == 176


def test_a_config_that_disagrees_with_the_weights_names_each_tensor(outputs: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    from migrator.convert.verify import verify_checkpoint

    out = tmp_path / "copy"
    shutil.copytree(outputs["llama_torch_dist"], out)
    io_json = out / "context" / "io.json"
    text, n = re.subn(r'("Attr\(name=\'ffn_hidden_size\'\)",\s*\{\s*"type":\s*"leaf",\s*"value":\s*)176', r"\g<1>128",
                      io_json.read_text())
    assert n == 1
    io_json.write_text(text)
    report = verify_checkpoint(out, load=True)
    assert report.problems == [
        f"module.decoder.layers.mlp.linear_fc1.weight: [2, 352, 64] in {out / 'weights'}, but the model built from "
        "context/io.json needs [2, 256, 64]",
        f"module.decoder.layers.mlp.linear_fc2.weight: [2, 64, 176] in {out / 'weights'}, but the model built from "
        "context/io.json needs [2, 64, 128]"]


def test_mamba_models_fall_back_to_the_index_checks(outputs: dict[str, Path], tmp_path: Path) -> None:
    from migrator.convert.verify import verify_checkpoint

    out = tmp_path / "copy"
    shutil.copytree(outputs["llama_torch_dist"], out)
    io_json = out / "context" / "io.json"
    io_json.write_text(io_json.read_text().replace('"module": "nemo.collections.llm.gpt.model.llama", "name": '
                                                   '"LlamaModel"', '"module": "nemo.collections.llm.gpt.model.ssm", '
                                                   '"name": "MambaModel"'))
    report = verify_checkpoint(out, load=True)
    assert report.ok
    assert "load: not run: MambaModel has Mamba layers, which need CUDA kernels; only the checks above ran" \
        in report.notes
    assert not any(c.startswith("load:") for c in report.checks)


def test_a_bridge_checkpoint_loads_and_reproduces_nemo1(tmp_path: Path) -> None:
    """A Megatron-Bridge checkpoint (iter_0000000/ with run_config.yaml, keys without prefix) made from NeMo's own
    tiny Llama conversion by the shared oracle's writer (the layout Bridge 0.3.1 loads; see its README)."""
    import subprocess
    import sys

    need_megatron_core()
    from migrator.convert.load_check import check_load
    from tests.conftest import SHARED

    writer = need(SHARED / "oracle" / "bridge" / "write_bridge_ckpt_from_nemo2.py")
    out = tmp_path / "bridge"
    subprocess.run([sys.executable, str(writer), str(need(NEMO2_REFERENCE / "tiny_llama")), str(out)], check=True,
                   capture_output=True)
    reference = _reference("nemo_llama")
    result = check_load(out, reference["tokens"][0].tolist())
    assert not result.problems, result.problems
    assert any("LlamaModelProvider from iter_0000000/run_config.yaml" in c for c in result.checks), result.checks
    assert (result.logits.float() - reference["logits"]).abs().max().item() < 1e-2


def _save_with(weights: Path, target: Path, key: str, rows: int) -> None:
    """A torch_dist checkpoint like `weights` (every tensor and sharded object, saved by torch DCP) in which `key`
    keeps only its first `rows` rows: an index that agrees with its data files, one tensor of the wrong shape."""
    import io

    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(weights))
    state = {}
    for name, meta in reader.read_metadata().state_dict_metadata.items():
        state[name] = (torch.empty(meta.size, dtype=meta.properties.dtype) if isinstance(meta, TensorStorageMetadata)
                       else io.BytesIO())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is ... uninitialized, assuming ... a single process"
        dcp.load(state, storage_reader=reader, no_dist=True)
        state[key] = state[key][:rows].clone()
        target.mkdir(parents=True)
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(target)), no_dist=True)
    for name in ("common.pt", "metadata.json"):
        shutil.copy(weights / name, target / name)


def test_tensor_of_the_wrong_shape(outputs: dict[str, Path], tmp_path: Path) -> None:
    """In this process (the CLI's exit 1 for a report with problems is shown by the missing-tensor case)."""
    from migrator.convert.verify import verify_checkpoint

    out = tmp_path / "copy"
    shutil.copytree(outputs["llama_torch_dist"] / "context", out / "context")
    _save_with(outputs["llama_torch_dist"] / "weights", out / "weights", "module.output_layer.weight", 120)
    report = verify_checkpoint(out, load=True)
    assert report.problems == [f"module.output_layer.weight: [120, 64] in {out / 'weights'}, but the model built "
                               "from context/io.json needs [128, 64]"], report.lines()


# ---------------------------------------------------------------- the CLI: exit codes and lines


def _fails(result, *expected: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("FAIL:")]
    assert lines == [f"FAIL: {e}" for e in expected], result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_prints_the_load_and_the_logits_checksum(outputs: dict[str, Path]) -> None:
    import hashlib

    from migrator.convert.load_check import check_load

    tokens = [1, 12, 30, 71, 16]
    result = run_cli("verify", outputs["mixtral"], "--load", "--tokens", " ".join(map(str, tokens)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "ok: load: megatron-core " in result.stdout
    logits = check_load(outputs["nemo_mixtral"], tokens).logits  # NeMo's own conversion, in this process
    import torch

    digest = hashlib.sha256(logits.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
    assert f"ok: forward: 5 tokens -> logits [1, 5, 128] bfloat16: sum {logits.float().sum().item():.6f}, " \
           f"sum|x| {logits.float().abs().sum().item():.6f}, sha256 {digest}" in result.stdout


def test_cli_truncated_data_file(outputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(outputs["llama_torch_dist"], out)
    data = out / "weights" / "__0_1.distcp"
    data.write_bytes(data.read_bytes()[:-10])
    result = run_cli("verify", out, "--load")
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if "FAIL:" in line]
    assert len(fails) == 1 and f"{data}: truncated" in fails[0], result.stdout
    assert "load: not run (the checks above found problems)" in result.stdout


def _rewrite_index(weights: Path, drop: str) -> None:
    """Remove one tensor from the torch_dist index (.metadata), leaving the data files as they are."""
    from torch.distributed.checkpoint import FileSystemReader

    metadata = FileSystemReader(str(weights)).read_metadata()
    del metadata.state_dict_metadata[drop]
    metadata.storage_data = {k: v for k, v in metadata.storage_data.items() if k.fqn != drop}
    with open(weights / ".metadata", "wb") as f:
        pickle.dump(metadata, f)


def test_cli_missing_tensor(outputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(outputs["llama_torch_dist"], out)
    _rewrite_index(out / "weights", "module.decoder.layers.mlp.linear_fc2.weight")
    _fails(run_cli("verify", out, "--load"),
           f"module.decoder.layers.mlp.linear_fc2.weight: missing in {out / 'weights'} (the model built from "
           "context/io.json needs [2, 64, 176] bfloat16)")


def test_cli_bad_input_exits_2(outputs: dict[str, Path], tmp_path: Path) -> None:
    for args, message in (
            (("--load", "--tokens", "1 two"), "--tokens '1 two': not a list of token ids"),
            (("--tokens", "1 2"), "--tokens needs --load"),
            (("--load", "--tokens", "1 128"), "--tokens: 128 is not a token id of this model (0 to 127)")):
        result = run_cli("verify", outputs["llama_torch_dist"], *args)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"nemo-migrate: error: {message}"), result.stderr


def test_cli_without_megatron_core_says_which_extra(outputs: dict[str, Path], tmp_path: Path) -> None:
    """A `megatron` package earlier on the path that cannot be imported stands in for an installation without it."""
    fake = tmp_path / "path" / "megatron"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("No module named \'megatron.core\'")\n')
    result = run_cli("verify", outputs["llama_torch_dist"], "--load",
                     env={"PYTHONPATH": str(fake.parent)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "nemo-migrate: error: verify --load needs megatron-core (No module named 'megatron.core'); install the "
        "[verify] extra: pip install 'nemo-migrator[verify]'"]
