"""Hostile checkpoint contents (issue 14): a malformed torch_dist `.metadata`, zarr `.zarray` or chunk, dist-ckpt
`metadata.json`, or NeMo 2.0 `context/` ends as one line naming the file (and key or tensor), exit 2, nothing at
OUT, in bounded memory and time. The last test runs the generated campaign (tests/campaign/convert_fuzz.py) at a
fixed seed; `scripts/fuzz_convert.py` runs it longer."""
from __future__ import annotations

import json
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import pytest

from migrator.convert.formats.safe_pickle import dump_stand_ins, load_allowlisted, make_object, stand_in
from migrator.convert.read.torch_dist import ALLOWED_GLOBALS
from tests.campaign import convert_fuzz
from tests.convert.conftest import LLAMA_ID, fixture_nemo, run_cli


def extracted(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    with tarfile.open(fixture_nemo(f"tiny_llama_{name}")) as archive:
        archive.extractall(folder, filter="data")
    return folder


def refused(result, *needles: str) -> str:
    """Exit 2, one error line, no traceback; returns that line."""
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def convert(source: Path, out: Path, *flags: str):
    model = [] if "bridge" in flags else ["--model_id", LLAMA_ID]
    return run_cli("convert", "--input_path", source, "--output_path", out, *model, *flags, timeout=120)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


# --- torch_dist .metadata -----------------------------------------------------------------------------------------

def _state(obj: Any) -> dict:
    return obj.state[0] if isinstance(obj.state, tuple) else obj.state


def _entry(metadata: Any, suffix: str) -> dict:
    entries = _state(metadata)["state_dict_metadata"]
    return _state(next(v for k, v in entries.items() if k.endswith(suffix)))


def _size(*dims: Any) -> Any:
    return make_object("torch", "Size", tuple(dims), via="reduce")


def _set_chunk_offsets(metadata: Any, suffix: str, index: int, offsets: tuple) -> None:
    _state(_entry(metadata, suffix)["chunks"][index])["offsets"] = _size(*offsets)


def _rename(metadata: Any, old_suffix: str, new: Any) -> None:
    entries = _state(metadata)["state_dict_metadata"]
    old = next(k for k in entries if k.endswith(old_suffix))
    entries[new] = entries.pop(old)
    for index in _state(metadata)["storage_data"]:
        if _state(index)["fqn"] == old:
            _state(index)["fqn"] = new


def _swap_dtype(metadata: Any) -> None:  # bfloat16 -> float16: the same width, so every size still matches
    properties = _entry(metadata, "linear_proj.weight")["properties"]
    properties.state = (stand_in("torch", "float16"),) + tuple(properties.state[1:])


INDEX_MUTATIONS: dict[str, tuple[Callable[[Any], None], str]] = {
    # name: (mutation of the unpickled Metadata, what the one line names)
    "negative size": (lambda m: _entry(m, "final_layernorm.weight").update(size=_size(-64)), "final_layernorm"),
    "size of strings": (lambda m: _entry(m, "final_layernorm.weight").update(size=_size("9" * 5000)),
                        "final_layernorm"),
    "size 2**62 x 2**62": (lambda m: _entry(m, "final_layernorm.weight").update(size=_size(2 ** 62, 2 ** 62)),
                           "final_layernorm"),
    "properties an empty tuple": (lambda m: setattr(_entry(m, "final_layernorm.weight")["properties"], "state", ()),
                                  "final_layernorm"),
    "properties an int": (lambda m: _entry(m, "final_layernorm.weight").update(properties=7), "final_layernorm"),
    "chunks an int": (lambda m: _entry(m, "linear_fc2.weight").update(chunks=5), "linear_fc2"),
    "two chunks at one offset (a gap and an overlap)": (
        lambda m: _set_chunk_offsets(m, "linear_fc2.weight", 1, (0, 0, 0)), "linear_fc2"),
    "planner_data with an int key": (lambda m: _state(m).update(planner_data={5: ("a",)}), "planner_data"),
    "mcore_data with a None key": (lambda m: _state(m).update(mcore_data={None: {}}), "mcore_data"),
    "planner_data nested 100000 deep": (lambda m: _state(m).update(planner_data={"k": "__DEEP__"}), ".metadata"),
    "a key with a newline": (lambda m: _rename(m, "final_layernorm.weight", "model.a\nb"), "'model.a\\nb'"),
    "an int key": (lambda m: _rename(m, "final_layernorm.weight", 5), "key 5"),
    "storage length past the end of the data file": (
        lambda m: next(_state(i) for k, i in _state(m)["storage_data"].items()
                       if _state(k)["fqn"].endswith("output_layer.weight")).update(length=10 ** 9), "truncated"),
    "storage offset a string": (
        lambda m: next(_state(i) for k, i in _state(m)["storage_data"].items()
                       if _state(k)["fqn"].endswith("output_layer.weight")).update(offset="0"), "bad storage range"),
    "a dtype of the same width (bfloat16 read as float16)": (_swap_dtype, "the index says [1, 64, 64] float16"),
}


@pytest.mark.parametrize("name", sorted(INDEX_MUTATIONS))
def test_a_malformed_torch_dist_index_is_one_line_exit_2(tmp_path, name):
    mutate, needle = INDEX_MUTATIONS[name]
    route = ["--to", "bridge"] if "key" in name or "dtype" in name else []  # the Bridge route renames keys too
    source = extracted(tmp_path, "torch_dist")
    index = source / "model_weights" / ".metadata"
    metadata = load_allowlisted(index.read_bytes(), ALLOWED_GLOBALS, ".metadata")
    mutate(metadata)
    data = dump_stand_ins(metadata, protocol=2)
    data = data.replace(convert_fuzz._pickled_str("__DEEP__"), convert_fuzz.RAW_VALUES["a list nested 100000 deep"])
    index.write_bytes(data)
    out = tmp_path / "out"
    line = refused(convert(source, out, *route), needle)
    assert "model_weights/.metadata" in line or "__0_" in line, line
    assert_nothing_written(out)


def test_a_compressed_nemo_whose_index_misdescribes_its_chunks_is_refused_before_the_index_is_written(tmp_path):
    """A .nemo.gz is read as a stream: its chunk headers are checked as the copy route passes them (a folder or an
    uncompressed .nemo is checked when it is opened); before, the swapped dtype went into an output with exit 0."""
    import shutil

    source = extracted(tmp_path, "torch_dist")
    index = source / "model_weights" / ".metadata"
    metadata = load_allowlisted(index.read_bytes(), ALLOWED_GLOBALS, ".metadata")
    _swap_dtype(metadata)
    index.write_bytes(dump_stand_ins(metadata, protocol=2))
    packed = tmp_path / "swapped.nemo"
    with tarfile.open(packed, "w:gz") as archive:
        for path in sorted(source.rglob("*")):
            archive.add(path, arcname="./" + path.relative_to(source).as_posix(), recursive=False)
    out = tmp_path / "out"
    refused(convert(packed, out), "swapped.nemo: model_weights/__0_", "the index says [1, 64, 64] float16")
    assert_nothing_written(out)
    shutil.rmtree(source)
    intact = tmp_path / "intact.nemo"  # the same route on an intact .nemo.gz converts and verifies
    with tarfile.open(fixture_nemo("tiny_llama_torch_dist")) as plain, tarfile.open(intact, "w:gz") as archive:
        for info in plain.getmembers():
            archive.addfile(info, plain.extractfile(info) if info.isfile() else None)
    result = convert(intact, tmp_path / "ok")
    assert result.returncode == 0, result.stderr
    from migrator.convert.verify import verify_checkpoint

    assert verify_checkpoint(tmp_path / "ok", against=intact).ok


def test_a_shared_reference_bomb_in_the_index_is_described_in_a_few_characters(tmp_path):
    """repr() of a list holding one list twice, 30 levels deep, walks 2**30 leaves: the message must not."""
    from migrator.convert.formats.safe_pickle import brief

    bomb = convert_fuzz.RAW_VALUES["a 2**30-fold shared-reference bomb"]
    value = __import__("pickle").loads(b"\x80\x02" + bomb + b".")
    started = time.monotonic()
    assert len(brief(value)) <= 120 and time.monotonic() - started < 1
    source = extracted(tmp_path, "torch_dist")
    index = source / "model_weights" / ".metadata"
    metadata = load_allowlisted(index.read_bytes(), ALLOWED_GLOBALS, ".metadata")
    _entry(metadata, "final_layernorm.weight")["properties"].state = ("__BOMB__",)
    index.write_bytes(dump_stand_ins(metadata, protocol=2).replace(convert_fuzz._pickled_str("__BOMB__"), bomb))
    result = run_cli("convert", "--input_path", source, "--output_path", tmp_path / "out", "--model_id", LLAMA_ID,
                     timeout=60)
    refused(result, "unsupported tensor dtype")


@pytest.mark.parametrize("packed", [True, False], ids=["tar", "folder"])
def test_a_member_name_with_a_newline_is_refused_in_one_line(tmp_path, packed):
    source = extracted(tmp_path, "zarr")
    odd = source / "model_weights" / "model.a\nb"
    odd.mkdir()
    (odd / ".zarray").write_bytes((source / "model_weights" / "model.decoder.final_layernorm.weight" / ".zarray")
                                  .read_bytes())
    if packed:
        nemo = tmp_path / "odd.nemo"
        with tarfile.open(nemo, "w") as archive:
            archive.add(source, arcname=".")
        source = nemo
    refused(convert(source, tmp_path / "out"), "control characters", r"model.a\nb")


# --- zarr ---------------------------------------------------------------------------------------------------------

ZARRAY_FIELDS = [("shape", "x"), ("shape", [64.0]), ("shape", ["64"]), ("shape", [-1]), ("chunks", [0]),
                 ("chunks", [True]), ("dtype", ["<f4"]), ("dtype", 5), ("compressor", 5), ("compressor", {"id": []}),
                 ("order", ["C"]), ("order", "F"), ("zarr_format", "2"), ("filters", [{"id": "delta"}]),
                 ("dimension_separator", ["/"])]


@pytest.mark.parametrize("field,value", ZARRAY_FIELDS, ids=[f"{f}={v!r}" for f, v in ZARRAY_FIELDS])
def test_a_zarray_field_of_the_wrong_type_is_one_line_exit_2(tmp_path, field, value):
    source = extracted(tmp_path, "zarr")
    zarray = source / "model_weights" / "model.decoder.final_layernorm.weight" / ".zarray"
    meta = json.loads(zarray.read_text())
    meta[field] = value
    zarray.write_text(json.dumps(meta))
    out = tmp_path / "out"
    refused(convert(source, out), "model.decoder.final_layernorm.weight/.zarray")
    assert_nothing_written(out)


@pytest.mark.parametrize("text", [b"[" * 100_000 + b"]" * 100_000, b"[]", b"\xff\xfe", b" " * (2 << 20) + b"{}"],
                         ids=["nested-100000", "a-list", "not-utf8", "2-MiB"])
def test_a_zarray_that_is_no_json_object_is_one_line_exit_2(tmp_path, text):
    source = extracted(tmp_path, "zarr")
    (source / "model_weights" / "model.decoder.final_layernorm.weight" / ".zarray").write_bytes(text)
    refused(convert(source, tmp_path / "out"), "final_layernorm.weight/.zarray")


def test_a_huge_chunk_grid_is_refused_before_it_is_listed(tmp_path):
    source = extracted(tmp_path, "zarr")
    zarray = source / "model_weights" / "model.decoder.final_layernorm.weight" / ".zarray"
    meta = json.loads(zarray.read_text())
    meta["shape"], meta["chunks"] = [2 ** 40], [1]
    zarray.write_text(json.dumps(meta))
    started = time.monotonic()
    refused(convert(source, tmp_path / "out"), "declares 1099511627776 chunks")
    assert time.monotonic() - started < 30


def _compress_array(source: Path, key: str, how: str) -> list[Path]:
    folder = source / "model_weights" / key
    meta = json.loads((folder / ".zarray").read_text())
    meta["compressor"] = {"id": how, "level": 1}
    (folder / ".zarray").write_text(json.dumps(meta))
    chunks = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for chunk in chunks:
        raw = chunk.read_bytes()
        chunk.write_bytes(zlib.compress(raw) if how == "zlib" else __import__("gzip").compress(raw))
    return chunks


@pytest.mark.parametrize("how", ["zlib", "gzip"])
def test_a_compressed_zarr_converts_and_verifies(tmp_path, how):
    """The bounded decompression still reads what numcodecs wrote (the campaign's "exit 0 must verify" side)."""
    from migrator.convert.verify import verify_checkpoint

    source = extracted(tmp_path, "zarr")
    _compress_array(source, "model.decoder.layers.mlp.linear_fc1.weight", how)
    out = tmp_path / "out"
    result = convert(source, out)
    assert result.returncode == 0, result.stderr
    assert verify_checkpoint(out, against=source).ok


@pytest.mark.parametrize("how,damage", [(how, damage) for how in ("zlib", "gzip")
                                        for damage in ("flip", "truncate", "longer") + (("crc",) if how == "gzip" else ())])
def test_corrupt_compressed_zarr_chunks_are_one_line_exit_2(tmp_path, how, damage):
    source = extracted(tmp_path, "zarr")
    chunk = _compress_array(source, "model.decoder.layers.mlp.linear_fc1.weight", how)[0]
    data = bytearray(chunk.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "crc":
        data[-8] ^= 0xFF
    else:
        inflated = zlib.decompress(bytes(data), 15 if how == "zlib" else 31) + bytes(64)
        data = bytearray(zlib.compress(inflated) if how == "zlib" else __import__("gzip").compress(inflated))
    chunk.write_bytes(bytes(data))
    out = tmp_path / "out"
    refused(convert(source, out), chunk.name, "linear_fc1.weight")
    assert_nothing_written(out)


@pytest.mark.parametrize("how", ["zlib", "gzip"])
def test_a_zlib_bomb_in_a_chunk_is_refused_quickly_in_little_memory(tmp_path, how):
    """A 2 MB chunk file that inflates to 2 GiB (a 4.1 GB RSS before): decompression stops one byte past the
    declared chunk size. Peak RSS of the conversion is measured in the child itself (VmHWM)."""
    source = extracted(tmp_path, "zarr")
    chunk = _compress_array(source, "model.decoder.layers.mlp.linear_fc1.weight", how)[0]
    bomb = convert_fuzz.bomb_data()
    chunk.write_bytes(bomb if how == "zlib" else convert_fuzz._gzip_of_zlib(bomb))
    assert chunk.stat().st_size < 3 << 20
    out = tmp_path / "out"
    outcome = convert_fuzz.run_cli(["convert", "--input_path", str(source), "--output_path", str(out),
                                    "--model_id", LLAMA_ID])
    assert outcome.code == 2 and "decompresses to more than" in outcome.stderr, outcome.stderr[-1000:]
    assert outcome.rss_mb < 500, outcome.rss_mb  # torch imported (about 280 MB), never the 2 GiB
    assert outcome.seconds < 30
    assert_nothing_written(out)


# --- metadata.json and NeMo 2.0 context ---------------------------------------------------------------------------

MARKERS = {"nested-200000": b"[" * 200_000 + b"]" * 200_000, "a-list": b"[\"torch_dist\"]",
           "backend-a-list": b"{\"sharded_backend\": [\"torch_dist\"]}", "3-MiB": b" " * (3 << 20) + b"{}",
           "not-utf8": b"{\"sharded_backend\": \"\xfe\"}"}


@pytest.fixture(scope="module")
def nemo2_dir(tmp_path_factory) -> Path:
    """Our NeMo 2.0 conversion of the torch_dist fixture."""
    out = tmp_path_factory.mktemp("nemo2") / "out"
    result = convert(fixture_nemo("tiny_llama_torch_dist"), out)
    assert result.returncode == 0, result.stderr
    return out


def _copy(folder: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(folder, dest)
    return dest


@pytest.mark.parametrize("name", sorted(MARKERS))
def test_a_malformed_metadata_json_is_one_line_exit_2_in_convert_and_a_report_in_verify(tmp_path, nemo2_dir, name):
    source = extracted(tmp_path, "torch_dist")
    (source / "model_weights" / "metadata.json").write_bytes(MARKERS[name])
    refused(convert(source, tmp_path / "out1"), "model_weights/metadata.json")
    nemo2 = _copy(nemo2_dir, tmp_path / "nemo2")
    (nemo2 / "weights" / "metadata.json").write_bytes(MARKERS[name])
    refused(convert(nemo2, tmp_path / "out2", "--to", "bridge"), "weights/metadata.json")
    result = run_cli("verify", nemo2)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"FAIL: {nemo2 / 'weights' / 'metadata.json'}" in result.stdout


def test_our_own_nemo2_output_converts_to_bridge(tmp_path, nemo2_dir):
    """context/model.yaml holds the arguments a config was built with; the rest (here add_qkv_bias) comes from
    the class's preset, as NeMo builds it (before: a KeyError traceback)."""
    from migrator.convert.verify import verify_checkpoint

    out = tmp_path / "bridge"
    result = convert(nemo2_dir, out, "--to", "bridge")
    assert result.returncode == 0, result.stderr
    assert verify_checkpoint(out, against=nemo2_dir).ok


@pytest.mark.parametrize("edit,needle", [
    ({"objects": [1, 2]}, "no `objects` mapping"),
    ({"objects": {"a": 5}}, "is not a fiddle object"),
    ({"objects": {"a": {"items": [["x"]], "paths": ["<root>.model"]}}}, "is not a fiddle object"),
    ({"objects": {"a": {"items": [], "paths": 5}}}, "is not a fiddle object"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_a_malformed_io_json_is_one_line_exit_2(tmp_path, nemo2_dir, edit, needle):
    nemo2 = _copy(nemo2_dir, tmp_path / "nemo2")
    (nemo2 / "context" / "model.yaml").unlink()  # io.json is what is read without model.yaml
    graph = json.loads((nemo2 / "context" / "io.json").read_text())
    text = edit if isinstance(edit, str) else json.dumps({**graph, **edit})
    (nemo2 / "context" / "io.json").write_text(text)
    refused(convert(nemo2, tmp_path / "out", "--to", "bridge"), "context/io.json", needle)


@pytest.mark.parametrize("field,value", [("hidden_size", "'64'"), ("num_layers", "-2"), ("add_qkv_bias", "'no'"),
                                         ("normalization", "[1]"), ("num_attention_heads", "null")])
def test_a_context_value_of_the_wrong_type_is_one_line_exit_2(tmp_path, nemo2_dir, field, value):
    import re

    nemo2 = _copy(nemo2_dir, tmp_path / "nemo2")
    model_yaml = nemo2 / "context" / "model.yaml"
    text = model_yaml.read_text()
    text, n = re.subn(rf"(?m)^(  {field}:).*$", rf"\1 {value}", text)
    if not n:
        text = text.replace("\nconfig:\n", f"\nconfig:\n  {field}: {value}\n", 1)
    model_yaml.write_text(text)
    needle = f"config field {field} is null" if value == "null" else f"{field}: expected"
    refused(convert(nemo2, tmp_path / "out", "--to", "bridge"), "context/model.yaml", needle)


def test_a_context_tokenizer_link_leading_out_of_context_is_not_read(tmp_path, nemo2_dir):
    outside = tmp_path / "secret.model"
    outside.write_bytes(b"not for the output")
    nemo2 = _copy(nemo2_dir, tmp_path / "nemo2")
    for model in (nemo2 / "context").glob("*.model"):
        model.unlink()
        model.symlink_to(outside)
    out = tmp_path / "out"
    refused(convert(nemo2, out, "--to", "bridge"), "is not a file in context/")
    assert_nothing_written(out)


# --- non-distributed rank files (model_weights.ckpt) ---------------------------------------------------------------

def _tensor_args(state: dict, index: int = 1) -> tuple[Any, str]:
    key = [k for k in state if not k.endswith("_extra_state")][index]
    tensor = state[key].args[0] if state[key].pickle_name == "_rebuild_parameter" else state[key]
    return tensor, key


def _set_arg(state: dict, position: int, value: Any) -> None:
    tensor, _ = _tensor_args(state)
    args = list(tensor.args)
    args[position] = value
    tensor.args = tuple(args)


def _extra(state: dict, value: Any) -> None:
    state["model.x._extra_state"] = value


def _bad_pid(state: dict) -> None:
    from migrator.convert.formats.safe_pickle import PersistentRef

    _extra(state, [PersistentRef(5)])


RANK_MUTATIONS: dict[str, tuple[Callable[[dict], None], str]] = {
    "a size of 5000 digits": (lambda s: _set_arg(s, 2, ("9" * 5000,)), "has size"),
    "a string offset": (lambda s: _set_arg(s, 1, "x"), "offset 'x'"),
    "a string stride": (lambda s: _set_arg(s, 3, ("a",)), "stride ('a',)"),
    "an _extra_state nested 100000 deep": (lambda s: _extra(s, "__DEEP__"), "100 levels"),
    "an _extra_state with an int storage reference": (_bad_pid, "unexpected storage reference 5"),
    "a key with a newline": (lambda s: s.__setitem__("a\nb", s.pop(_tensor_args(s)[1])), "not a printable string"),
}


@pytest.mark.parametrize("name", sorted(RANK_MUTATIONS))
def test_a_malformed_rank_file_is_one_line_exit_2(tmp_path, name):
    import io as io_module
    import zipfile

    from migrator.convert.read.nonsharded import _plain_stand_ins, _StateUnpickler

    mutate, needle = RANK_MUTATIONS[name]
    source = tmp_path / "nondist"
    with tarfile.open(convert_fuzz.NONDIST if convert_fuzz.NONDIST.is_file() else fixture_nemo("missing")) as tar:
        tar.extractall(source, filter="data")
    ckpt = source / "model_weights.ckpt"
    with zipfile.ZipFile(ckpt) as archive:
        records = {n: archive.read(n) for n in archive.namelist()}
    pkl = next(n for n in records if n.endswith("/data.pkl"))
    state = {k: _plain_stand_ins(v) for k, v in _StateUnpickler(io_module.BytesIO(records[pkl]), "x").load().items()}
    mutate(state)
    data = dump_stand_ins(state, protocol=2).replace(convert_fuzz._pickled_str("__DEEP__"),
                                                     convert_fuzz.RAW_VALUES["a list nested 100000 deep"])
    with zipfile.ZipFile(ckpt, "w", zipfile.ZIP_STORED) as archive:
        for record, content in records.items():
            archive.writestr(record, data if record == pkl else content)
    out = tmp_path / "out"
    refused(convert(source, out), "model_weights.ckpt", needle)
    assert_nothing_written(out)


# --- the campaign -------------------------------------------------------------------------------------------------

CAMPAIGN_SEED = 14
CAMPAIGN_CASES = {"archives": 14, "indexes": 20, "zarr": 14, "metadata.json": 6, "context": 6, "rank files": 8}


def test_hostile_checkpoint_campaign(tmp_path, capsys):
    """Generated hostile archives, indexes, zarr arrays, metadata.json and context files: every case exit 2 with
    one line (or exit 0 with an output that verifies against its input), bounded RSS and time. About a minute."""
    fixture_nemo("tiny_llama_torch_dist")
    groups = convert_fuzz.run(CAMPAIGN_SEED, CAMPAIGN_CASES, tmp_path)
    text = convert_fuzz.report(groups)
    with capsys.disabled():
        print("\n" + text)
    assert all(groups[name].tried == count for name, count in CAMPAIGN_CASES.items()), text
    assert sum(len(g.defects) for g in groups.values()) == 0, text
