"""Opening the converter's input: NeMo-made `.nemo` fixtures, the same data as gzip tar / folder / bare weights,
and bad archives (each a one-line MigratorError naming the member or key)."""
from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from migrator.convert.read.model_config import load_model_config
from migrator.convert.read.source import open_source
from migrator.errors import MigratorError
from tests.convert.conftest import NEMO1, fixture_nemo, need

LLAMA_SHAPES = {
    "model.embedding.word_embeddings.weight": (128, 64),
    "model.decoder.layers.self_attention.linear_qkv.layer_norm_weight": (2, 64),
    "model.decoder.layers.self_attention.linear_qkv.weight": (2, 128, 64),
    "model.decoder.layers.self_attention.linear_proj.weight": (2, 64, 64),
    "model.decoder.layers.mlp.linear_fc1.layer_norm_weight": (2, 64),
    "model.decoder.layers.mlp.linear_fc1.weight": (2, 352, 64),
    "model.decoder.layers.mlp.linear_fc2.weight": (2, 64, 176),
    "model.decoder.final_layernorm.weight": (64,),
    "model.output_layer.weight": (128, 64),
}
LLAMA_OBJECTS = {f"model.decoder.layers.{m}._extra_state/shard_{l}_2" for l in range(2)
                 for m in ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1",
                           "mlp.linear_fc2")}


@pytest.mark.parametrize("name,backend", [("tiny_llama_torch_dist", "torch_dist"), ("tiny_llama_zarr", "zarr")])
def test_fixture_index_matches_the_manifest(name: str, backend: str) -> None:
    with open_source(fixture_nemo(name)) as source:
        assert source.kind == "tar" and source.backend == backend
        assert {k: t.shape for k, t in source.tensors.items()} == LLAMA_SHAPES
        assert {t.dtype for t in source.tensors.values()} == {"bfloat16"}
        assert set(source.objects) == LLAMA_OBJECTS
        assert source.model_config["num_layers"] == 2 and source.model_config["mcore_gpt"] is True
        fc1 = source.chunks["model.decoder.layers.mlp.linear_fc1.weight"]
        assert sorted((c.offsets, c.sizes) for c in fc1) == [
            ((0, 0, 0), (1, 176, 64)), ((0, 176, 0), (1, 176, 64)), ((1, 0, 0), (1, 176, 64)),
            ((1, 176, 0), (1, 176, 64))]
        tokenizer = source.model_config["tokenizer"]["model"].removeprefix("nemo:")
        assert len(source.read_member(tokenizer)) == 1285 and source.members[tokenizer] == 1285


def test_mixtral_fixture_has_expert_objects() -> None:
    with open_source(fixture_nemo("tiny_mixtral_moe")) as source:
        assert source.tensors["model.decoder.layers.mlp.experts.experts.linear_fc1.weight"].shape == (2, 4, 256, 64)
        experts = [k for k in source.objects if ".experts." in k]
        assert len(experts) == 16 and "model.decoder.layers.mlp.experts.experts.linear_fc1._extra_state/shard_1.3_2.4" \
            in experts


def _index(source) -> tuple:
    chunks = {k: sorted((c.offsets, c.sizes, c.byte_length) for c in v) for k, v in source.chunks.items()}
    return source.backend, source.tensors, chunks, set(source.objects), source.model_config


def test_gzip_folder_and_bare_weights_give_the_same_index(tmp_path: Path) -> None:
    nemo = fixture_nemo("tiny_llama_torch_dist")
    gz = tmp_path / "llama.nemo"
    gz.write_bytes(gzip.compress(nemo.read_bytes()))
    folder = tmp_path / "extracted"
    with tarfile.open(nemo) as archive:
        archive.extractall(folder, filter="data")
    with open_source(nemo) as plain:
        expected = _index(plain)
        tokenizer = plain.model_config["tokenizer"]["model"].removeprefix("nemo:")
        token_bytes = plain.read_member(tokenizer)
    for path, config in [(gz, None), (folder, None), (folder / "model_weights", folder / "model_config.yaml")]:
        with open_source(path, config) as source:
            assert _index(source) == expected, path
            if config is None:
                assert source.read_member(tokenizer) == token_bytes
    with open_source(gz) as source:
        assert source.kind == "compressed tar" and not source.random_access


def test_opening_a_source_does_not_import_torch() -> None:
    """The same-dtype route needs no torch (importing it costs seconds and hundreds of MB)."""
    code = ("import sys; from pathlib import Path; from migrator.convert.read.source import open_source; "
            f"open_source(Path({str(fixture_nemo('tiny_llama_torch_dist'))!r})); "
            f"open_source(Path({str(fixture_nemo('tiny_llama_zarr'))!r})); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def _tar(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:") as archive:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                archive.addfile(info, io.BytesIO(entry[1]))
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize("entries,expected", [
    ([("/etc/model_config.yaml", b"x")], "has an absolute name"),
    ([("./../model_config.yaml", b"x")], "points outside the archive"),
    ([("model_weights/../../evil", b"x")], "points outside the archive"),
    ([_link("model_config.yaml", "/etc/passwd", tarfile.SYMTYPE)], "is a link"),
    ([("a", b"x"), _link("model_config.yaml", "a", tarfile.LNKTYPE)], "is a link"),
    ([_link("dev", "", tarfile.CHRTYPE)], "not a regular file"),
    ([("model_config.yaml", b"a: 1"), ("./model_config.yaml", b"a: 2")], "appears twice"),
    ([("model_weights/metadata.json", b"{}")], "no model_config.yaml member"),
    ([("model_config.yaml", b"num_layers: 2\n")], "model_weights/metadata.json: missing"),
    ([("model_config.yaml", b"a: 1\n"), ("model_weights/metadata.json", b'{"sharded_backend": "zarr2"}')],
     "unsupported sharded_backend 'zarr2'"),
    ([("model_config.yaml", b"a: 1\n"), ("mp_rank_00/model_weights.ckpt", b"x")],
     "mp_rank_00/model_weights.ckpt: not a zip-format torch.save file"),
    ([("model_config.yaml", b"a: 1\n"), ("model_weights.ckpt", b"PK" + b"\0" * 64)],
     "model_weights.ckpt: not a torch.save archive (no zip end record)"),
    ([("model_config.yaml", b"[1, 2]\n"), ("model_weights/metadata.json", b"{}")], "expected a mapping"),
])
def test_bad_archives_are_refused(tmp_path: Path, entries: list, expected: str) -> None:
    with pytest.raises(MigratorError, match=expected.replace("(", r"\(").replace(")", r"\)")) as error:
        open_source(_tar(tmp_path / "bad.nemo", entries))
    assert "\n" not in str(error.value)


def test_not_a_tar_and_missing_paths(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nemo"
    junk.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(MigratorError, match="not a tar archive"):
        open_source(junk)
    with pytest.raises(MigratorError, match="no such file or folder"):
        open_source(tmp_path / "absent.nemo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MigratorError, match="neither a .nemo folder"):
        open_source(tmp_path / "empty")


def test_truncated_archives_name_the_member(tmp_path: Path) -> None:
    data = fixture_nemo("tiny_llama_torch_dist").read_bytes()
    cut = tmp_path / "cut.nemo"
    cut.write_bytes(data[:200_000])  # inside model_weights/__0_0.distcp
    with pytest.raises(MigratorError, match=r"model_weights/__0_\d\.distcp: truncated"):
        open_source(cut)
    gz = tmp_path / "cut_gz.nemo"
    gz.write_bytes(gzip.compress(data)[:50_000])
    with pytest.raises(MigratorError, match="unreadable compressed archive"):
        open_source(gz)


def test_data_file_shorter_than_its_index(tmp_path: Path) -> None:
    folder = tmp_path / "extracted"
    with tarfile.open(fixture_nemo("tiny_llama_torch_dist")) as archive:
        archive.extractall(folder, filter="data")
    data = folder / "model_weights" / "__0_1.distcp"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(MigratorError, match=r"__0_1\.distcp: truncated \(\d+ bytes; model\.\S+ needs bytes up to"):
        open_source(folder)
    (folder / "model_weights" / "__0_1.distcp").unlink()
    with pytest.raises(MigratorError, match=r"__0_1\.distcp: missing \(the index stores model\."):
        open_source(folder)


def test_bare_weights_need_a_model_config(tmp_path: Path) -> None:
    folder = tmp_path / "extracted"
    with tarfile.open(fixture_nemo("tiny_llama_zarr")) as archive:
        archive.extractall(folder, filter="data")
    with pytest.raises(MigratorError, match="needs --model_config"):
        open_source(folder / "model_weights")
    with open_source(folder / "model_weights", folder / "model_config.yaml") as source:
        assert source.backend == "zarr" and source.kind == "weights folder"
        with pytest.raises(MigratorError, match="not part of a bare model_weights"):
            source.read_member("tokenizer.model")


def test_zarr_missing_and_short_chunks(tmp_path: Path) -> None:
    folder = tmp_path / "extracted"
    with tarfile.open(fixture_nemo("tiny_llama_zarr")) as archive:
        archive.extractall(folder, filter="data")
    chunk = folder / "model_weights" / "model.decoder.layers.mlp.linear_fc2.weight" / "1.0.0"
    chunk.write_bytes(chunk.read_bytes()[:1000])
    with pytest.raises(MigratorError, match=r"linear_fc2\.weight/1\.0\.0: truncated chunk of model\.decoder"):
        open_source(folder)
    chunk.unlink()
    with pytest.raises(MigratorError, match=r"linear_fc2\.weight/1\.0\.0: chunk file of .* is missing"):
        open_source(folder)


def test_model_config_is_read_as_omegaconf_reads_it() -> None:
    config = load_model_config(b"a: yes\nb: 'yes'\nc: 1e-5\nd: off\ne: 1.0e-05\nf: null\ng: ~\n"
                               b"h: &x {i: 1}\nj: *x\nk: 0x10\nl: '${foo}'\n", "t.yaml")
    assert config == {"a": True, "b": "yes", "c": 1e-5, "d": False, "e": 1e-5, "f": None, "g": None,
                      "h": {"i": 1}, "j": {"i": 1}, "k": 16, "l": "${foo}"}
    with pytest.raises(MigratorError, match="t.yaml: YAML error"):
        load_model_config(b"a: [1,\n", "t.yaml")


def test_fixture_configs_parse_like_the_manifest() -> None:
    config = load_model_config(need(NEMO1 / "tiny_mixtral_moe.model_config.yaml").read_bytes(), "moe")
    assert (config["num_moe_experts"], config["moe_router_topk"], config["moe_router_pre_softmax"],
            config["layernorm_epsilon"], config["rotary_base"]) == (4, 2, True, 1e-5, 1000000)
