"""Never lose the user's data (issue 14): an output path that is, contains or lies inside anything the conversion
reads is refused in one line, exit 2, even with --force, and every input stays byte-identical."""
from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from tests.convert.conftest import LLAMA_ID, fixture_nemo, run_cli


def tree_digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path) if path.is_dir() else p.name): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def refused(result, *needles: str) -> None:
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def extracted(tmp_path: Path) -> Path:
    folder = tmp_path / "extracted"
    with tarfile.open(fixture_nemo("tiny_llama_zarr")) as archive:
        archive.extractall(folder, filter="data")
    return folder


@pytest.mark.parametrize("inside", ["model_weights", "model_config.yaml", "new_folder", "."])
def test_an_output_inside_or_equal_to_the_extracted_input_is_refused_even_with_force(extracted, inside):
    before = tree_digest(extracted)
    out = extracted / inside
    result = run_cli("convert", "--input_path", extracted, "--output_path", out, "--model_id", LLAMA_ID, "--force")
    refused(result, "choose another output path")
    assert tree_digest(extracted) == before
    assert not (extracted / "new_folder").exists() and not list(extracted.glob("*.partial"))


def test_an_output_over_the_model_config_or_tokenizer_it_reads_is_refused_even_with_force(extracted, tmp_path):
    config = tmp_path / "model_config.yaml"
    config.write_bytes((extracted / "model_config.yaml").read_bytes())
    tokenizer = next(extracted.glob("*_tokenizer.model"))
    kept = tmp_path / "tokenizer.model"
    kept.write_bytes(tokenizer.read_bytes())
    base = ["convert", "--input_path", extracted / "model_weights", "--model_id", LLAMA_ID, "--model_config", config,
            "--tokenizer_path", kept, "--force"]
    for out, what in ((config, "--model_config"), (kept, "--tokenizer_path"), (tmp_path, "contains")):
        digests = (tree_digest(config), tree_digest(kept))
        refused(run_cli(*base, "--output_path", out), what)
        assert (tree_digest(config), tree_digest(kept)) == digests


FAULT_SHIM = """
import errno, os, sys
_calls = {{"n": 0}}
_real = getattr(os, {name!r})
def _faulty(*args, **kwargs):
    _calls["n"] += 1
    if _calls["n"] == {at}:
        {action}
    return _real(*args, **kwargs)
setattr(os, {name!r}, _faulty)
"""


@pytest.mark.parametrize("name,at,action", [
    ("copy_file_range", 1, "raise OSError(errno.ENOSPC, 'No space left on device')"),
    ("copy_file_range", 3, "raise OSError(errno.ENOSPC, 'No space left on device')"),
    ("copy_file_range", 10, "raise OSError(errno.EDQUOT, 'Disk quota exceeded')"),
    ("copy_file_range", 2, "return 0"),  # a copy that moves nothing where bytes remain
    ("fsync", 2, "raise OSError(errno.EIO, 'Input/output error')"),
    ("rename", 1, "raise OSError(errno.EXDEV, 'Invalid cross-device link')"),
])
def test_an_injected_io_fault_never_leaves_a_complete_looking_output(tmp_path, name, at, action):
    # CI runs as root, so permissions never fault: the fault is injected around the I/O call itself
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(FAULT_SHIM.format(name=name, at=at, action=action))
    nemo = fixture_nemo("tiny_llama_torch_dist")
    before = tree_digest(Path(nemo))
    out = tmp_path / "out"
    result = run_cli("convert", "--input_path", nemo, "--output_path", out, "--model_id", LLAMA_ID,
                     env={"PYTHONPATH": str(shim)})
    if result.returncode == 0:  # the fault did not hit this run's I/O path (e.g. no 10th call): a complete output
        from migrator.convert.verify import verify_checkpoint

        assert verify_checkpoint(out, Path(nemo)).ok
    else:
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert not out.exists() and not (tmp_path / "out.partial").exists()
    assert tree_digest(Path(nemo)) == before


@pytest.mark.parametrize("reference", ["/etc/passwd", "/proc/self/environ", "nemo:/etc/hostname", "../../x.model",
                                       "nemo:../outside.model"])
def test_a_tokenizer_file_named_in_model_config_is_never_read_outside_the_checkpoint(tmp_path, reference):
    from migrator.convert.model.tokenizer import resolve_tokenizer
    from migrator.errors import MigratorError

    read: list[str] = []

    def read_member(name: str) -> bytes:
        read.append(name)
        raise KeyError(name)

    config = {"tokenizer": {"library": "sentencepiece", "model": reference}}
    with pytest.raises(MigratorError, match="--tokenizer_path"):
        resolve_tokenizer(config, read_member, None, None, None, None, input_dir=tmp_path)
    assert not any(name.startswith(("/", "..")) for name in read)
    for library in ("tiktoken",):
        config = {"tokenizer": {"library": library, "vocab_file": reference}}
        with pytest.raises(MigratorError, match="--tokenizer_path"):
            resolve_tokenizer(config, read_member, None, None, None, None, input_dir=tmp_path)


def test_a_gzip_nemo_with_a_corrupt_crc_is_refused(tmp_path):
    import gzip

    data = gzip.compress(Path(fixture_nemo("tiny_llama_torch_dist")).read_bytes())
    good = tmp_path / "good.nemo"
    good.write_bytes(data)
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:])  # the trailer's CRC32, first byte flipped
    out = tmp_path / "out"
    result = run_cli("convert", "--input_path", bad, "--output_path", out, "--model_id", LLAMA_ID)
    refused(result, "bad.nemo", "CRC")
    assert not out.exists() and not (tmp_path / "out.partial").exists()
    result = run_cli("convert", "--input_path", good, "--output_path", out, "--model_id", LLAMA_ID)
    assert result.returncode == 0, result.stderr
