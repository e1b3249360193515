"""`nemo-migrate verify`: passes on a faithful conversion, names the tensor or file when something is wrong."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from migrator.convert.read.source import open_source
from migrator.convert.verify import verify_checkpoint
from tests.convert.conftest import LLAMA_ID, fixture_nemo, run_cli


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "llama"
    result = run_cli("convert", "--input_path", fixture_nemo("tiny_llama_torch_dist"), "--output_path", out,
                     "--model_id", LLAMA_ID)
    assert result.returncode == 0, result.stderr
    return out


def copy_of(converted: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(converted, target)
    return target


def test_verify_passes_against_both_source_formats(converted: Path) -> None:
    for name in ("tiny_llama_torch_dist", "tiny_llama_zarr"):
        report = verify_checkpoint(converted, fixture_nemo(name))
        assert report.ok, report.lines()
        assert any("9 tensors bit-equal, 8 sharded objects equal" in c for c in report.checks)


def test_a_flipped_bit_names_the_tensor(converted: Path, tmp_path: Path) -> None:
    out = copy_of(converted, tmp_path)
    with open_source(fixture_nemo("tiny_llama_torch_dist")) as source:
        chunk = source.chunks["model.decoder.layers.self_attention.linear_proj.weight"][1]
    data = out / "weights" / chunk.member.split("/")[-1]
    blob = bytearray(data.read_bytes())
    blob[chunk.byte_offset + chunk.byte_length - 1000] ^= 0x01  # inside the stored tensor bytes
    data.write_bytes(bytes(blob))
    assert verify_checkpoint(out).ok  # still readable (torch does not check CRCs) ...
    result = run_cli("verify", out, "--against", fixture_nemo("tiny_llama_torch_dist"))
    assert result.returncode == 1  # ... but differs from the source
    assert "FAIL: module.decoder.layers.self_attention.linear_proj.weight: chunk at [1, 0, 0] differs" in result.stdout


def test_missing_pieces_are_reported(converted: Path, tmp_path: Path) -> None:
    out = copy_of(converted, tmp_path)
    (out / "weights" / "metadata.json").unlink()
    (out / "context" / "io.json").unlink()
    data = out / "weights" / "__0_1.distcp"
    data.write_bytes(data.read_bytes()[:-10])
    result = run_cli("verify", out)
    assert result.returncode == 1
    assert "metadata.json: missing (an incomplete checkpoint)" in result.stdout
    assert "io.json: missing" in result.stdout
    assert "__0_1.distcp: truncated" in result.stdout


def test_verify_after_a_cast(tmp_path: Path) -> None:
    import io

    from migrator.convert.pipeline import convert
    from migrator.convert.storage.progress import PlainProgress
    from migrator.convert.write.plan import ConvertOptions

    out = tmp_path / "fp32"
    convert(ConvertOptions(fixture_nemo("tiny_llama_zarr"), out, model_id=LLAMA_ID, dtype="fp32"),
            warn=lambda message: None, out=io.StringIO(), progress=PlainProgress(io.StringIO()))
    report = verify_checkpoint(out, fixture_nemo("tiny_llama_torch_dist"))
    assert report.ok and any("equal (9 after the cast" in c for c in report.checks), report.lines()


def test_not_a_checkpoint_exits_2(tmp_path: Path) -> None:
    result = run_cli("verify", tmp_path)
    assert result.returncode == 2 and "not a NeMo 2.0 checkpoint (no weights/ folder)" in result.stderr
