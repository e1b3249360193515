"""The streaming route (zarr sources, `--dtype` casts) and sharded objects (`_extra_state`), on the NeMo-made
fixtures and on generated checkpoints (edge chunks, compression, Transformer Engine-style extra state)."""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from migrator.convert.formats.torch_save_format import read_records, wrap_object, write_tensor
from migrator.convert.pipeline import convert
from migrator.convert.storage.progress import PlainProgress
from migrator.convert.write.plan import ConvertOptions
from migrator.errors import MigratorError
from tests.convert import checkpoint_factory as factory
from tests.convert.checkpoint_factory import bits, read_dcp
from tests.convert.conftest import LLAMA_ID, fixture_nemo, with_settings


def run_convert(source: Path, output: Path, **options) -> tuple[Path, list[str]]:
    warnings: list[str] = []
    options.setdefault("model_id", LLAMA_ID)
    convert(ConvertOptions(input_path=source, output_path=output, **options), warn=warnings.append,
            out=io.StringIO(), progress=PlainProgress(io.StringIO()))
    return output, warnings


def test_zarr_fixture_equals_the_torch_dist_fixture(tmp_path: Path) -> None:
    zarr_out, _ = run_convert(fixture_nemo("tiny_llama_zarr"), tmp_path / "zarr")
    dist_out, _ = run_convert(fixture_nemo("tiny_llama_torch_dist"), tmp_path / "dist")
    (zt, zo), (dt, do) = read_dcp(zarr_out / "weights"), read_dcp(dist_out / "weights")
    assert set(zt) == set(dt) and set(zo) == set(do)
    for key in zt:
        assert zt[key].dtype == dt[key].dtype == torch.bfloat16 and torch.equal(bits(zt[key]), bits(dt[key])), key
    assert all(v == [None] for v in zo.values())  # bare zarr objects wrapped in megatron-core's one-element list


@pytest.mark.parametrize("dtype,torch_dtype", [("fp32", torch.float32), ("fp16", torch.float16)])
def test_cast_equals_torch_cast(tmp_path: Path, dtype: str, torch_dtype: torch.dtype) -> None:
    source = fixture_nemo("tiny_llama_torch_dist")
    out, _ = run_convert(source, tmp_path / "out", dtype=dtype)
    kept, _ = run_convert(source, tmp_path / "kept")
    cast, objects = read_dcp(out / "weights")
    original, _ = read_dcp(kept / "weights")
    for key, tensor in cast.items():
        assert tensor.dtype == torch_dtype and torch.equal(bits(tensor), bits(original[key].to(torch_dtype))), key
    assert len(objects) == 8


@pytest.mark.filterwarnings("error:The given buffer is not writable")  # a zlib chunk is immutable bytes
def test_cast_to_bf16_of_an_fp32_zarr_with_edge_chunks_and_zlib(tmp_path: Path, make_nemo) -> None:
    tensors = factory.tiny_llama_tensors(dtype=torch.float32, seed=3)
    chunks = {"model.embedding.word_embeddings.weight": (48, 40),  # 128x64 -> padded edge chunks
              "model.decoder.layers.mlp.linear_fc1.weight": (1, 100, 64)}
    nemo = make_nemo(tensors, backend="zarr", chunk_shapes=chunks, compressor="zlib")
    kept, _ = run_convert(nemo, tmp_path / "kept")
    cast, _ = run_convert(nemo, tmp_path / "bf16", dtype="bf16")
    (kt, _), (ct, _) = read_dcp(kept / "weights"), read_dcp(cast / "weights")
    for key, tensor in tensors.items():
        new = key.replace("model.", "module.", 1)
        assert kt[new].dtype == torch.float32 and torch.equal(bits(kt[new]), bits(tensor)), key
        assert ct[new].dtype == torch.bfloat16 and torch.equal(bits(ct[new]), bits(tensor.to(torch.bfloat16))), key


def test_uncompressed_zarr_edge_chunks_and_two_workers(tmp_path: Path, make_nemo) -> None:
    tensors = factory.tiny_llama_tensors(seed=5)
    nemo = make_nemo(tensors, backend="zarr", chunk_shapes={"model.output_layer.weight": (50, 64)})
    out, _ = run_convert(nemo, tmp_path / "out", workers=2)
    got, _ = read_dcp(out / "weights")
    for key, tensor in tensors.items():
        assert torch.equal(bits(got[key.replace("model.", "module.", 1)]), bits(tensor)), key
    assert sorted(p.name for p in (out / "weights").glob("*.distcp")) == ["__0_0.distcp", "__0_1.distcp"]


def test_gzip_source_streams_in_one_pass_per_member(tmp_path: Path, make_nemo) -> None:
    tensors = factory.tiny_llama_tensors(seed=7)
    for backend in ("zarr", "torch_dist"):
        nemo = make_nemo(tensors, backend=backend, compress=True)
        out, _ = run_convert(nemo, tmp_path / f"{backend}", dtype="fp32" if backend == "torch_dist" else "keep")
        got, _ = read_dcp(out / "weights")
        for key, tensor in tensors.items():
            new = key.replace("model.", "module.", 1)
            assert torch.equal(got[new].float(), tensor.float()), (backend, key)


def te_objects(with_attention: bool = True) -> dict:
    modules = ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")
    if with_attention:
        modules += ("self_attention.core_attention",)
    return factory.extra_states(modules=modules, value=factory.te_state)


@pytest.mark.parametrize("backend", ["torch_dist", "zarr"])
def test_transformer_engine_extra_state_is_carried_bit_exact(tmp_path: Path, make_nemo, llama_config_text: str,
                                                            backend: str) -> None:
    objects = te_objects()
    config = with_settings(llama_config_text, transformer_engine="true", dist_ckpt_format=backend)
    nemo = make_nemo(objects=objects, backend=backend, config=config)
    out, _ = run_convert(nemo, tmp_path / "out")
    _, got = read_dcp(out / "weights")
    assert set(got) == {k.replace("model.", "module.", 1) for k in objects}
    for key, value in objects.items():
        carried = got[key.replace("model.", "module.", 1)]
        assert isinstance(carried, list) and len(carried) == 1 and torch.equal(carried[0], value), key


@pytest.mark.parametrize("backend", ["torch_dist", "zarr"])
def test_reset_attention_extra_state(tmp_path: Path, make_nemo, llama_config_text: str, backend: str) -> None:
    config = with_settings(llama_config_text, transformer_engine="true", dist_ckpt_format=backend)
    nemo = make_nemo(objects=te_objects(), backend=backend, config=config)
    out, warnings = run_convert(nemo, tmp_path / "out", reset_attention_extra_state=True)
    _, got = read_dcp(out / "weights")
    attention = {k: v for k, v in got.items() if "core_attention" in k}
    assert len(attention) == 2 and all(v == [None] for v in attention.values())
    others = [v for k, v in got.items() if "core_attention" not in k]
    assert len(others) == 8 and all(isinstance(v[0], torch.Tensor) for v in others)
    assert any("--reset-attention-extra-state" in w for w in warnings)


def test_missing_attention_extra_state_gets_placeholders(tmp_path: Path, make_nemo, llama_config_text: str,
                                                         megatron_reader) -> None:
    te_config = with_settings(llama_config_text, transformer_engine="true")
    nemo = make_nemo(objects=te_objects(with_attention=False), config=te_config)
    out, warnings = run_convert(nemo, tmp_path / "te")
    _, got = read_dcp(out / "weights")
    added = sorted(k for k in got if "core_attention" in k)
    assert added == [f"module.decoder.layers.self_attention.core_attention._extra_state/shard_{l}_2" for l in (0, 1)]
    assert all(got[k] == [None] for k in added)
    assert any("placeholders" in w for w in warnings)
    loaded, _ = megatron_reader(out / "weights")  # megatron-core reads the added objects too
    assert loaded[added[0]] is None and torch.equal(
        loaded["module.decoder.layers.mlp.linear_fc1._extra_state/shard_1_2"], factory.te_state("mlp.linear_fc1", 1))
    # a local-spec checkpoint (transformer_engine: false) gets none
    local, _ = run_convert(make_nemo(objects=te_objects(with_attention=False)), tmp_path / "local")
    assert not [k for k in read_dcp(local / "weights")[1] if "core_attention" in k]


def test_megatron_core_reads_streamed_output(tmp_path: Path, megatron_reader) -> None:
    out, _ = run_convert(fixture_nemo("tiny_llama_zarr"), tmp_path / "zarr", dtype="fp16")
    loaded, common = megatron_reader(out / "weights")
    tensors, objects = read_dcp(out / "weights")
    for key, tensor in tensors.items():
        assert loaded[key].dtype == torch.float16 and torch.equal(bits(loaded[key]), bits(tensor)), key
    assert all(loaded[key] is None for key in objects) and common["epoch"] == 0


def test_torch_save_archives_are_valid_zips_with_aligned_storage(tmp_path: Path) -> None:
    tensor = torch.randn(7, 9).to(torch.bfloat16)
    path = tmp_path / "t.pt"
    with open(path, "wb") as f:
        f.write(b"\0" * 13)  # archives sit at any offset of a data file
        write_tensor(f, "bfloat16", (7, 9), 7 * 9 * 2, [bits(tensor).numpy().tobytes()])
    blob = path.read_bytes()[13:]
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert archive.testzip() is None  # CRCs are right
        info = archive.getinfo("archive/data/0")
        name_length, extra_length = struct.unpack_from("<HH", blob, info.header_offset + 26)  # local header
        start = info.header_offset + 30 + name_length + extra_length
        assert start % 64 == 0  # torch's storage alignment (needed for mmap loads)
    alone = tmp_path / "alone.pt"
    alone.write_bytes(blob)
    assert torch.equal(bits(torch.load(alone, weights_only=True, mmap=True)), bits(tensor))


def test_wrapping_zarr_objects_keeps_content_and_refuses_code(tmp_path: Path) -> None:
    for value in (None, torch.arange(5, dtype=torch.uint8), {"scale": torch.ones(2), "n": 3, "b": b"x"}):
        buffer = io.BytesIO()
        torch.save(value, buffer)
        wrapped = torch.load(io.BytesIO(wrap_object(buffer.getvalue(), "obj")), weights_only=True)
        assert isinstance(wrapped, list) and len(wrapped) == 1
        assert repr(wrapped[0]) == repr(value)
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(MigratorError, match=r"obj: refers to os\.system"):
        wrap_object(evil.getvalue(), "obj")
    with pytest.raises(MigratorError, match="not a torch.save archive"):
        read_records(b"PK junk", "obj")


def test_tensor_layout_views_torch_save_bytes_without_torch_load() -> None:
    from migrator.convert.formats.torch_save_format import tensor_layout
    from migrator.convert.read.source import open_source

    def view(blob: bytearray) -> torch.Tensor:
        layout = tensor_layout(blob, "blob")
        storage = torch.frombuffer(blob, dtype=getattr(torch, layout.dtype), count=layout.storage_numel,
                                   offset=layout.data_offset)
        return storage.as_strided(layout.size, layout.stride, layout.storage_offset)

    for tensor in (torch.randn(3, 4).to(torch.bfloat16), torch.arange(20.0)[5:15].view(2, 5), torch.randn(4, 6).t()):
        buffer = io.BytesIO()
        torch.save(tensor, buffer)
        assert torch.equal(view(bytearray(buffer.getvalue())), tensor)
    with open_source(fixture_nemo("tiny_llama_torch_dist")) as source:  # blobs written by megatron-core
        chunk = source.chunks["model.decoder.layers.mlp.linear_fc1.weight"][3]
        with source.open_member(chunk.member) as member:
            member.seek(chunk.byte_offset)
            data = bytearray(member.read(chunk.byte_length))
    assert torch.equal(view(data), torch.load(io.BytesIO(bytes(data)), weights_only=True))
    with pytest.raises(MigratorError, match="blob: not a torch.save archive"):
        tensor_layout(b"no zip here", "blob")


@pytest.mark.parametrize("name,options", [("tiny_llama_torch_dist", {}), ("tiny_llama_zarr", {}),
                                          ("tiny_llama_torch_dist", {"dtype": "fp32"}),
                                          ("tiny_llama_torch_dist", {"link": True})])
def test_planned_disk_space_covers_the_output(tmp_path: Path, name: str, options: dict) -> None:
    source = fixture_nemo(name)
    if options.get("link"):
        import tarfile

        with tarfile.open(source) as archive:
            archive.extractall(tmp_path / "in", filter="data")
        source = tmp_path / "in"
    out = tmp_path / "out"
    result = convert(ConvertOptions(input_path=source, output_path=out, model_id=LLAMA_ID, **options),
                     warn=lambda message: None, out=io.StringIO(), progress=PlainProgress(io.StringIO()))
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.stat().st_nlink == 1)
    assert written <= result.plan.disk_bytes <= written + (1 << 20) + 200_000


def test_kernel_copied_zarr_chunks_have_correct_crcs(tmp_path: Path) -> None:
    """Same-dtype zarr chunks are copied in the kernel while a second thread computes their CRC."""
    from migrator.convert.read.torch_dist import parse_dcp_metadata

    out, _ = run_convert(fixture_nemo("tiny_llama_zarr"), tmp_path / "out")
    weights = out / "weights"
    index = parse_dcp_metadata((weights / ".metadata").read_bytes(), "out", member_dir="")
    checked = 0
    for chunks in index.chunks.values():
        for chunk in chunks:
            blob = (weights / chunk.member).read_bytes()[chunk.byte_offset:chunk.byte_offset + chunk.byte_length]
            with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                assert archive.testzip() is None, chunk.key
            checked += 1
    assert checked == 17
