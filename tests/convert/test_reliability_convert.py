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
