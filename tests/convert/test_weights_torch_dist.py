"""The same-dtype route from torch_dist: data files copied unchanged, `.metadata` rewritten with NeMo 2.0 keys.

Checked against NeMo's own converter output (`nemo2_reference/tiny_llama` and `tiny_mixtral_moe`), the NeMo 1.0 reference tensors
(`*.reference.pt`), and read back with plain torch DCP and with megatron-core's dist_checkpointing (real readers).
"""
from __future__ import annotations

import io
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from migrator.convert.formats.safe_pickle import load_allowlisted
from migrator.convert.pipeline import convert
from migrator.convert.read.source import open_source
from migrator.convert.read.torch_dist import ALLOWED_GLOBALS, parse_dcp_metadata
from migrator.convert.storage.progress import PlainProgress
from migrator.convert.write.plan import ConvertOptions
from migrator.errors import MigratorError
from tests.convert.checkpoint_factory import bits, read_dcp
from tests.convert.conftest import LLAMA_ID, NEMO1, NEMO2_REFERENCE, fixture_nemo, need


def run_convert(source: Path, output: Path, **options) -> Path:
    warnings: list[str] = []
    convert(ConvertOptions(input_path=source, output_path=output, **options), warn=warnings.append,
            out=io.StringIO(), progress=PlainProgress(io.StringIO()))
    return output


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("converted")
    return {
        "llama": run_convert(fixture_nemo("tiny_llama_torch_dist"), out / "llama", model_id=LLAMA_ID),
        "mixtral": run_convert(fixture_nemo("tiny_mixtral_moe"), out / "mixtral"),
        "llama_zarr": run_convert(fixture_nemo("tiny_llama_zarr"), out / "llama_zarr", model_id=LLAMA_ID),
    }


def per_layer(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """NeMo 2.0 stacked key -> the NeMo 1.0 module's per-layer keys (as the reference.pt has them)."""
    base = key.removeprefix("module.")
    if ".layers." not in base:
        return {base: tensor}
    pre, post = base.split(".layers.", 1)
    post = post.replace("self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight")
    post = post.replace("mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight")
    out = {}
    for layer in range(tensor.shape[0]):
        if post.startswith("mlp.experts.experts."):
            for expert in range(tensor.shape[1]):
                name = post.replace("mlp.experts.experts.", f"mlp.experts.local_experts.{expert}.")
                out[f"{pre}.layers.{layer}.{name}"] = tensor[layer, expert]
        else:
            out[f"{pre}.layers.{layer}.{post}"] = tensor[layer]
    return out


def _layout(weights: Path) -> tuple[dict, dict]:
    """Per key: (global size, sorted chunk (offsets, sizes)) or "bytes"; and megatron-core's `mcore_data`."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    metadata = pickle.loads((weights / ".metadata").read_bytes())
    layout = {key: "bytes" if isinstance(entry, BytesStorageMetadata) else
              (tuple(entry.size), sorted((tuple(c.offsets), tuple(c.sizes)) for c in entry.chunks))
              for key, entry in metadata.state_dict_metadata.items()}
    return layout, getattr(metadata, "mcore_data", None)


@pytest.mark.parametrize("name,reference,tensors,objects", [("llama", "tiny_llama", 9, 8),
                                                            ("llama_zarr", "tiny_llama", 9, 8),
                                                            ("mixtral", "tiny_mixtral_moe", 10, 20)])
def test_weights_equal_nemos_own_converter_output(converted: dict[str, Path], name: str, reference: str,
                                                  tensors: int, objects: int) -> None:
    """Every tensor, sharded object, chunk layout and `mcore_data` entry as NeMo's converter wrote them for the
    same input (the zarr fixture holds the same weights as the torch_dist one)."""
    ours, our_objects = read_dcp(converted[name] / "weights")
    theirs, their_objects = read_dcp(need(NEMO2_REFERENCE / reference / "weights"))
    assert set(ours) == set(theirs) and len(ours) == tensors
    assert set(our_objects) == set(their_objects) and len(our_objects) == objects
    for key, tensor in ours.items():
        assert tensor.shape == theirs[key].shape, key
        assert tensor.dtype == torch.bfloat16, key  # the source dtype (NeMo's CPU run stored norms as fp32)
        assert torch.equal(tensor.float(), theirs[key].float()), key
    assert our_objects == their_objects
    (our_layout, our_mcore), (their_layout, their_mcore) = _layout(converted[name] / "weights"), _layout(
        NEMO2_REFERENCE / reference / "weights")
    assert our_layout == their_layout
    assert our_mcore == their_mcore


@pytest.mark.parametrize("name,reference", [("llama", "tiny_llama_torch_dist"), ("mixtral", "tiny_mixtral_moe")])
def test_weights_equal_the_nemo1_reference_tensors(converted: dict[str, Path], name: str, reference: str) -> None:
    expected = torch.load(need(NEMO1 / f"{reference}.reference.pt"), weights_only=True)["state_dict"]
    tensors, _ = read_dcp(converted[name] / "weights")
    seen = {}
    for key, tensor in tensors.items():
        seen.update(per_layer(key, tensor))
    assert set(seen) == set(expected)
    for key, tensor in seen.items():
        assert tensor.dtype == expected[key].dtype and torch.equal(bits(tensor), bits(expected[key])), key


def test_data_files_are_copied_byte_for_byte(converted: dict[str, Path]) -> None:
    with open_source(fixture_nemo("tiny_llama_torch_dist")) as source:
        for name in ("__0_0.distcp", "__0_1.distcp"):
            assert (converted["llama"] / "weights" / name).read_bytes() == source.read_member(f"model_weights/{name}")


def test_index_is_renamed_and_unpickles_into_torch_classes(converted: dict[str, Path]) -> None:
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata

    metadata = pickle.loads((converted["llama"] / "weights" / ".metadata").read_bytes())  # our own output
    assert isinstance(metadata, Metadata)
    assert all(k.startswith("module.") for k in metadata.state_dict_metadata)
    assert all(index.fqn.startswith("module.") for index in metadata.storage_data)
    assert not hasattr(metadata, "all_local_plans")  # megatron-core's save-plan cache is dropped
    assert metadata.storage_meta.checkpoint_id is None
    assert set(metadata.mcore_data) == {k for k, v in metadata.state_dict_metadata.items()
                                        if not isinstance(v, BytesStorageMetadata)}
    with open_source(fixture_nemo("tiny_llama_torch_dist")) as source:
        before = {(i.fqn.replace("model.", "module.", 1), i.offset): s
                  for i, s in pickle.loads(source.read_member("model_weights/.metadata")).storage_data.items()}
    after = {(i.fqn, i.offset): s for i, s in metadata.storage_data.items()}
    assert after == before  # every byte range unchanged


def test_opening_the_rewritten_index_needs_only_torch_classes(converted: dict[str, Path]) -> None:
    data = (converted["mixtral"] / "weights" / ".metadata").read_bytes()
    assert b"megatron" not in data and b"pathlib" not in data
    index = parse_dcp_metadata(data, "ours", member_dir="")
    assert len(index.tensors) == 10 and len(index.objects) == 20


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch boom-was-run",))


def test_allowlist_refuses_code_without_running_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = pickle.dumps({"state_dict_metadata": _Boom()})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MigratorError, match=r"refers to (posix|os)\.system, which is not on the allowlist"):
        load_allowlisted(payload, ALLOWED_GLOBALS, ".metadata")
    assert not (tmp_path / "boom-was-run").exists()
    with pytest.raises(MigratorError, match="builtins.eval"):
        load_allowlisted(b"cbuiltins\neval\n(S'1'\ntR.", ALLOWED_GLOBALS, ".metadata")
    with pytest.raises(MigratorError, match="not a readable pickle"):
        load_allowlisted(b"\x80\x04garbage", ALLOWED_GLOBALS, ".metadata")


def test_common_pt_is_a_lightning_skeleton(converted: dict[str, Path]) -> None:
    common = torch.load(converted["llama"] / "weights" / "common.pt", weights_only=True)
    assert common["state_dict"] == {} and common["global_step"] == 0 and "pytorch-lightning_version" in common
    marker = (converted["llama"] / "weights" / "metadata.json").read_text()
    assert marker == ('{"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch", '
                      '"common_backend_version": 1}')


def test_megatron_core_reads_the_output(converted: dict[str, Path], megatron_reader) -> None:
    for name in ("llama", "mixtral"):
        loaded, common = megatron_reader(converted[name] / "weights")
        tensors, objects = read_dcp(converted[name] / "weights")
        for key, tensor in tensors.items():
            assert torch.equal(bits(loaded[key]), bits(tensor)), key
        for key in objects:
            assert loaded[key] is None, key  # the local spec's extra state, unwrapped by megatron-core
        assert common["global_step"] == 0
    assert "megatron.core" in sys.modules
