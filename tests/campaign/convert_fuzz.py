"""The converter's hostile-input campaign (issue 14): generated malformed checkpoints through `nemo-migrate convert`
(and `verify`), each run as a real subprocess with its peak memory and time measured.

Five groups of generators, each mutating a real NeMo-made checkpoint (the shared tiny Llama fixtures) or our own
conversion of it, with a seeded `random.Random` so that a seed names a run:

- archives: `.nemo` tar files truncated, with huge declared sizes, duplicate names, `..` / absolute names, links,
  devices, FIFOs, odd pax headers, flipped header bytes, corrupt gzip/bzip2/xz streams, a mutated index in a
  `.nemo.gz`;
- indexes: the torch_dist `.metadata`, unpickled into stand-ins, mutated structurally (sizes, shapes, dtypes,
  chunks that overlap or leave gaps, odd or unhashable keys, planner/mcore data, storage entries, byte ranges past
  the end of the data file, deep nesting, shared-reference bombs) and pickled again the way torch writes it;
- zarr: `.zarray` fields of every wrong type, huge chunk grids, missing/short/long chunk files, corrupt zlib and
  gzip data and a zlib bomb (a small chunk file that inflates to gigabytes);
- metadata.json: the dist-ckpt marker of a `.nemo` and of a NeMo 2.0 directory (wrong types, deep nesting,
  non-object top levels, huge files), read by `convert` (also `--to bridge` from a NeMo 2.0 directory) and `verify`;
- context: a NeMo 2.0 directory's `context/io.json`, `context/model.yaml` and `weights/common.pt` mutated;
- rank files: a non-distributed `model_weights.ckpt` (the legacy fixture b_tp1) whose pickled state_dict is
  mutated (sizes, strides, offsets, storage references, keys, deeply nested `_extra_state`) and zipped again.

Every case must end as promised: exit 2 with one `error` line and no traceback, nothing at OUT and no
OUT.partial left; or exit 0 with an output that `verify_checkpoint(OUT, against=IN)` finds OK (for `verify` runs:
exit 0/1 with a report, or exit 2 with one line). The subprocess's peak RSS (its VmHWM at exit) must stay under
RSS_LIMIT_MB and its wall time under CASE_TIMEOUT_S.
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "nemo1"
NONDIST = ROOT.parent / "shared" / "fixtures" / "legacy" / "b_tp1" / "tiny_llama_mcore_nondist.nemo"
LLAMA_ID = "meta-llama/Meta-Llama-3-8B"

# A conversion of these tiny inputs peaks at about 26 MB (index and copy routes) and about 280 MB when torch is
# imported (the casting and zarr routes); the limit leaves room for slower machines and other torch builds, and
# catches what the campaign is after: a chunk or index that makes the reader allocate what the file declares.
RSS_LIMIT_MB = 700
CASE_TIMEOUT_S = 60
BOMB_BYTES = 2 << 30  # the zlib bomb inflates to this much


@dataclass
class Group:
    name: str
    tried: int = 0
    clean: int = 0
    defects: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    seconds: float = 0.0


@dataclass
class Outcome:
    code: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    rss_mb: float
    seconds: float


# --- running one case -------------------------------------------------------------------------------------------

# The child records its own peak RSS (VmHWM of its own address space) when it exits: ru_maxrss from wait4 would
# include the address space it was forked from (this test process, with torch imported) before exec.
_BOOT = """
import atexit, runpy, sys
def _peak(path=sys.argv.pop(1)):
    with open("/proc/self/status") as status, open(path, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(_peak)
sys.argv[0] = "nemo-migrate"
runpy.run_module("migrator", run_name="__main__", alter_sys=True)
"""


def run_cli(args: list[str], timeout: float = CASE_TIMEOUT_S) -> Outcome:
    """`nemo-migrate ARGS` as a subprocess, killed after `timeout` s; its peak RSS is its VmHWM at exit."""
    import tempfile

    start = time.monotonic()
    with open(os.devnull, "rb") as stdin, _temp() as out, _temp() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as peak:
        proc = subprocess.Popen([sys.executable, "-c", _BOOT, peak.name, *args], stdin=stdin, stdout=out,
                                stderr=err, cwd=ROOT, start_new_session=True)
        sampled = 0  # also sampled while it runs, for a process that leaves through os._exit
        code: int | None = None
        while True:
            try:
                code = proc.wait(0.02)
                break
            except subprocess.TimeoutExpired:
                sampled = max(sampled, _vm_hwm(proc.pid))
                if time.monotonic() - start > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
        text = peak.read().strip()
        kb = max(int(text) if text.isdigit() else 0, sampled)
        out.seek(0)
        err.seek(0)
        return Outcome(code, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                       kb / 1024 if kb else float("nan"), time.monotonic() - start)


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


def _temp():
    import tempfile

    return tempfile.TemporaryFile()


def judge_convert(outcome: Outcome, source: Path, out: Path) -> str | None:
    """None when the conversion ended as promised, else what went wrong."""
    problem = _common(outcome)
    if problem:
        return problem
    partial = out.with_name(out.name + ".partial")
    if partial.exists() or partial.is_symlink():
        return f"exit {outcome.code} left {partial.name}"
    if outcome.code == 2:
        if out.exists():
            return "exit 2 but OUT exists"
        return _one_error_line(outcome)
    if outcome.code == 0:
        from migrator.convert.verify import verify_checkpoint
        from migrator.errors import MigratorError

        try:
            report = verify_checkpoint(out, against=source)
        except MigratorError as error:
            return f"exit 0, but verify --against raised: {error}"
        return None if report.ok else f"exit 0, but verify --against: {report.problems[:2]}"
    return f"exit {outcome.code}: {_last(outcome.stderr)}"


def judge_verify(outcome: Outcome) -> str | None:
    """`verify` on a damaged output: a report (exit 0 or 1) or one error line (exit 2)."""
    problem = _common(outcome)
    if problem:
        return problem
    if outcome.code == 2:
        return _one_error_line(outcome)
    if outcome.code not in (0, 1):
        return f"verify exit {outcome.code}: {_last(outcome.stderr)}"
    return None


def _common(outcome: Outcome) -> str | None:
    if outcome.code is None:
        return f"still running after {CASE_TIMEOUT_S} s (killed)"
    if "Traceback" in outcome.stderr or "Traceback" in outcome.stdout:
        return f"exit {outcome.code} with a traceback: {_last(outcome.stderr)}"
    if not outcome.rss_mb <= RSS_LIMIT_MB:  # NaN: the process did not exit normally
        return f"peak RSS {outcome.rss_mb:.0f} MB > {RSS_LIMIT_MB} MB"
    return None


def _one_error_line(outcome: Outcome) -> str | None:
    errors = [line for line in outcome.stderr.splitlines() if "error" in line.lower()]
    if len(errors) != 1 or "wrote" in outcome.stdout:
        return f"exit 2 with {len(errors)} error lines: {outcome.stderr[-300:]!r}"
    return None


def _last(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# --- the bases ----------------------------------------------------------------------------------------------------

@dataclass
class Bases:
    work: Path
    torch_dist: Path  # an extracted NeMo 1.0 torch_dist .nemo folder
    zarr: Path  # an extracted zarr .nemo folder
    nemo2: Path  # our NeMo 2.0 conversion of torch_dist
    nondist: Path  # an extracted non-distributed .nemo folder (model_weights.ckpt)


def make_bases(work: Path) -> Bases:
    bases = work / "bases"
    if bases.exists():
        shutil.rmtree(bases)
    bases.mkdir(parents=True)
    folders = {}
    for name in ("torch_dist", "zarr"):
        folder = bases / name
        with tarfile.open(FIXTURES / f"tiny_llama_{name}.nemo") as archive:
            archive.extractall(folder, filter="data")
        folders[name] = folder
    nemo2 = bases / "nemo2"
    outcome = run_cli(["convert", "--input_path", str(folders["torch_dist"]), "--output_path", str(nemo2),
                       "--model_id", LLAMA_ID])
    if outcome.code != 0:
        raise RuntimeError(f"the NeMo 2.0 base did not convert: {outcome.stderr[-500:]}")
    nondist = bases / "nondist"
    with tarfile.open(NONDIST) as archive:
        archive.extractall(nondist, filter="data")
    return Bases(work, folders["torch_dist"], folders["zarr"], nemo2, nondist)


def bomb_data(bases: Bases | None = None) -> bytes:
    """zlib data that inflates to BOMB_BYTES of zeros (about 2 MB for 2 GiB). Made from one 16 MiB block compressed
    after a full flush (so every block compresses to the same bytes) repeated; its Adler-32 is wrong, which a reader
    that stops at the declared chunk size never reaches."""
    block = bytes(16 << 20)
    compressor = zlib.compressobj(9)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first + again * (BOMB_BYTES // len(block) - 1) + compressor.flush()


def clone(src: Path, dest: Path) -> Path:
    """A copy of a folder whose files are hard links (cheap); `replace` a file before changing it."""
    shutil.copytree(src, dest, copy_function=os.link)
    return dest


def replace(path: Path, data: bytes) -> None:
    """Write a new file at `path` (never through the hard link to the base)."""
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_bytes(data)


# --- values that break types --------------------------------------------------------------------------------------

def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


ODD_JSON: list[Any] = [None, True, False, -1, 0, 1.5, 2 ** 70, -(2 ** 63), "", "x", "torch_dist", "zarr", [], [1],
                       [-1], [1.5], ["1"], [True], [2 ** 62] * 3, [1] * 100, {}, {"a": {}}, [[1]], "\u0000\n"]


def odd_json(rng: random.Random) -> Any:
    return rng.choice(ODD_JSON)


# --- group: indexes -----------------------------------------------------------------------------------------------

def _load_index(data: bytes) -> Any:
    from migrator.convert.formats.safe_pickle import load_allowlisted
    from migrator.convert.read.torch_dist import ALLOWED_GLOBALS

    return load_allowlisted(data, ALLOWED_GLOBALS, ".metadata")


def _dump_index(obj: Any) -> bytes:
    from migrator.convert.formats.safe_pickle import dump_stand_ins

    return dump_stand_ins(obj, protocol=2)  # no frames: placeholders can be replaced byte for byte


def _state(obj: Any) -> dict:
    state = obj.state
    return state[0] if isinstance(state, tuple) else state


def _size(*dims: Any) -> Any:
    from migrator.convert.formats.safe_pickle import make_object

    return make_object("torch", "Size", tuple(dims), via="reduce")


def _pickled_str(text: str) -> bytes:
    """How protocol 2 writes a str (BINUNICODE), to find a placeholder in a pickle."""
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


PLACEHOLDER = "__HOSTILE_PLACEHOLDER__"
# raw protocol-2 pickle fragments that push one value (they replace a pickled PLACEHOLDER string)
RAW_VALUES: dict[str, bytes] = {
    "a list nested 100000 deep": b"]" * 100_000 + b"a" * 99_999,
    "a list (unhashable) as a dict key": b"]",
    # a list holding one list twice, 30 times over (2**30 leaves for a naive walk), kept in a memo slot the
    # surrounding pickle does not use (LONG_BINPUT/LONG_BINGET 999999), and POPped so that one value remains
    "a 2**30-fold shared-reference bomb": b"]r?B\x0f\x000" + b"(j?B\x0f\x00j?B\x0f\x00lr?B\x0f\x000" * 30 + b"j?B\x0f\x00",
}


def index_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One structured mutation of a `.metadata` pickle: (what was done, the new bytes)."""
    from migrator.convert.formats.safe_pickle import make_object, stand_in

    metadata = _load_index(data)
    state = _state(metadata)
    entries: dict = state["state_dict_metadata"]
    storage: dict = state["storage_data"]
    tensors = [k for k, v in entries.items() if v.pickle_name == "TensorStorageMetadata"]
    objects = [k for k, v in entries.items() if v.pickle_name == "BytesStorageMetadata"]
    key = rng.choice(tensors)
    entry = _state(entries[key]) if isinstance(entries[key].state, dict) else None
    chunks = entry["chunks"] if entry else []
    kind = rng.choice(["size", "properties", "chunks", "key", "planner", "storage", "state", "raw", "bytes"])
    raw: bytes | None = None
    if kind == "size":
        value = rng.choice([_size(-1), _size(2 ** 62), _size(2 ** 62, 2 ** 62), _size(), _size("4"), _size(True),
                            _size(1.5), _size(*([1] * 100)), "abc", None, 3.5, [2, 3], _size(10 ** 5000),
                            _size(PLACEHOLDER)])
        entry["size"] = value
        what = f"{key}: size := {value!r:.80}"
        if value is not None and "PLACEHOLDER" in repr(value):
            raw = rng.choice(list(RAW_VALUES.values()))
    elif kind == "properties":
        props = entry["properties"]
        choice = rng.choice(["none", "int", "empty", "dtype-str", "swap", "wide", "bomb"])
        what = f"{key}: properties {choice}"
        if choice == "none":
            entry["properties"] = None
        elif choice == "int":
            entry["properties"] = 7
        elif choice == "empty":
            props.state = ()
        elif choice == "dtype-str":
            props.state = {"dtype": "bfloat16"}
        elif choice in ("swap", "wide"):  # another allowed dtype: same width (float16) or not (float32, int64)
            dtype = stand_in("torch", "float16" if choice == "swap" else rng.choice(["float32", "int64", "uint8"]))
            props.state = (dtype,) + tuple(props.state[1:]) if isinstance(props.state, tuple) else {"dtype": dtype}
        else:
            props.state = (PLACEHOLDER,)
            raw = RAW_VALUES["a 2**30-fold shared-reference bomb"]
    elif kind == "chunks":
        choice = rng.choice(["drop", "duplicate", "shift", "same-offsets", "none", "int", "dict", "not-a-chunk",
                             "zero-size", "negative", "wrong-rank", "grow"])
        what = f"{key}: chunks {choice}"
        if choice == "drop" and chunks:
            chunks.pop(rng.randrange(len(chunks)))
        elif choice == "duplicate" and chunks:
            chunks.append(rng.choice(chunks))
        elif choice in ("shift", "same-offsets", "zero-size", "negative", "wrong-rank", "grow") and chunks:
            chunk = rng.choice(chunks)
            chunk_state = _state(chunk)
            offsets = list(chunk_state["offsets"].args[0])
            sizes = list(chunk_state["sizes"].args[0])
            if choice == "shift":
                offsets[0] += 1
            elif choice == "same-offsets":
                other = _state(chunks[0])
                offsets = list(other["offsets"].args[0])
            elif choice == "zero-size":
                sizes[0] = 0
            elif choice == "negative":
                offsets[0] = -1
            elif choice == "wrong-rank":
                offsets.append(0)
            else:
                sizes[-1] += 1
            chunk_state["offsets"], chunk_state["sizes"] = _size(*offsets), _size(*sizes)
        elif choice == "none":
            entry["chunks"] = None
        elif choice == "int":
            entry["chunks"] = 5
        elif choice == "dict":
            entry["chunks"] = {"a": 1}
        else:
            entry["chunks"] = [7]
    elif kind == "key":
        new = rng.choice([5, ("a",), "", "a\nb", "x" * 5000, "../../etc/passwd", "model.a\x00b", None, 1.5,
                          PLACEHOLDER])
        both = rng.random() < 0.5
        what = f"key {key} := {new!r:.40} ({'index and storage' if both else 'index only'})"
        if new == PLACEHOLDER:
            raw = RAW_VALUES["a list (unhashable) as a dict key"]
        entries[new] = entries.pop(key)
        if both:
            for index in storage:
                if _state(index).get("fqn") == key:
                    _state(index)["fqn"] = new
    elif kind == "planner":
        choice = rng.choice(["int-key", "tuple-key", "list", "deep", "bomb", "mcore-none-key", "mcore-list"])
        what = f"planner/mcore data: {choice}"
        if choice == "int-key":
            state["planner_data"] = {5: ("a",)}
        elif choice == "tuple-key":
            state["planner_data"] = {("a", "b"): None}
        elif choice == "list":
            state["planner_data"] = ["x"]
        elif choice in ("deep", "bomb"):
            state["planner_data"] = {key: PLACEHOLDER}
            raw = RAW_VALUES["a list nested 100000 deep" if choice == "deep" else "a 2**30-fold shared-reference bomb"]
        elif choice == "mcore-none-key":
            state["mcore_data"] = {None: {}}
        else:
            state["mcore_data"] = [1, 2]
    elif kind == "storage":
        choice = rng.choice(["delete", "offset", "length", "path", "transforms", "duplicate", "object-delete",
                             "not-storage"])
        what = f"storage {choice}"
        targets = [i for i in storage if _state(i).get("fqn") == (key if choice != "object-delete" else
                                                                    (objects[0] if objects else key))]
        index = rng.choice(targets)
        info = _state(storage[index]) if isinstance(storage[index].state, dict) else {}
        if choice in ("delete", "object-delete"):
            del storage[index]
        elif choice == "offset":
            info["offset"] = rng.choice([-1, "0", 2 ** 70, 1.5, None, 10 ** 9])
            what += f" := {info['offset']!r}"
        elif choice == "length":
            info["length"] = rng.choice([-1, 10 ** 12, 2 ** 70, "5", 0, 1])
            what += f" := {info['length']!r}"
        elif choice == "path":
            info["relative_path"] = rng.choice(["../x.distcp", "/etc/passwd", "__9_9.distcp", 5, "", "a\nb"])
            what += f" := {info['relative_path']!r}"
        elif choice == "transforms":
            info["transform_descriptors"] = ["zstd"]
        elif choice == "duplicate":
            copy = make_object("torch.distributed.checkpoint.metadata", "MetadataIndex", state=dict(_state(index)))
            other = make_object("torch.distributed.checkpoint.filesystem", "_StorageInfo",
                                state=dict(info, offset=0))
            storage[copy] = other
        else:
            storage[index] = 5
    elif kind == "state":
        choice = rng.choice(["list", "none", "slots", "no-storage", "entries-list"])
        what = f"Metadata state {choice}"
        if choice == "list":
            metadata.state = [state]
        elif choice == "none":
            metadata.state = None
        elif choice == "slots":
            metadata.state = (state, [1])
        elif choice == "no-storage":
            del state["storage_data"]
        else:
            state["state_dict_metadata"] = list(entries.items())
    elif kind == "raw":
        choice = rng.choice(["empty", "truncated", "not-a-pickle", "a-list", "global", "persistent"])
        what = f"the file: {choice}"
        if choice == "empty":
            return what, b""
        if choice == "truncated":
            return what, data[:rng.randrange(1, len(data))]
        if choice == "not-a-pickle":
            return what, b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(64))
        if choice == "a-list":
            return what, pickle.dumps([1, 2, 3])
        if choice == "global":
            return what, b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
        return what, b"\x80\x02X\x01\x00\x00\x00aQ."
    else:  # flip a few bytes
        blob = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        return "flipped bytes", bytes(blob)
    out = _dump_index(metadata)
    if raw is not None:
        out = out.replace(_pickled_str(PLACEHOLDER), raw, 1)
    return what, out


# --- group: zarr --------------------------------------------------------------------------------------------------

def zarr_mutation(rng: random.Random, folder: Path, bases: Bases, bomb: bool = False) -> str:
    weights = folder / "model_weights"
    arrays = sorted(p.parent for p in weights.glob("*/.zarray"))
    array = rng.choice(arrays)
    zarray_path = array / ".zarray"
    meta = json.loads(zarray_path.read_text())
    chunk_files = sorted(p for p in array.iterdir() if not p.name.startswith("."))
    kind = "bomb" if bomb else rng.choice(["field", "field", "file", "grid", "chunk", "compressed"])
    if kind == "field":
        name = rng.choice(["shape", "chunks", "dtype", "compressor", "order", "fill_value", "zarr_format", "filters",
                           "dimension_separator"])
        meta[name] = odd_json(rng)
        replace(zarray_path, json.dumps(meta).encode())
        return f"{array.name}/.zarray: {name} := {meta[name]!r:.60}"
    if kind == "file":
        choice = rng.choice(["not-json", "list", "deep", "huge", "not-utf8", "empty"])
        replace(zarray_path, {"not-json": b"{shape: [", "list": b"[]", "deep": deep_json(100_000).encode(),
                              "huge": b" " * (2 << 20) + b"{}", "not-utf8": b"{\"a\": \"\xff\"}", "empty": b""}[choice])
        return f"{array.name}/.zarray: {choice}"
    if kind == "grid":
        meta["shape"], meta["chunks"] = rng.choice([([2 ** 40], [1]), ([2 ** 20, 2 ** 20], [1, 1]),
                                                    ([2 ** 40], [2 ** 40]), ([10 ** 6] * 3, [1] * 3)])
        replace(zarray_path, json.dumps(meta).encode())
        return f"{array.name}/.zarray: shape {meta['shape']} chunks {meta['chunks']}"
    if kind == "chunk":
        target = rng.choice(chunk_files)
        choice = rng.choice(["missing", "short", "long", "empty"])
        data = target.read_bytes()
        if choice == "missing":
            target.unlink()
        else:
            replace(target, {"short": data[:len(data) // 2], "long": data + b"\0" * 7, "empty": b""}[choice])
        return f"{array.name}/{target.name}: {choice}"
    # compressed: rewrite the array with zlib or gzip, then damage one chunk
    compressor = rng.choice(["zlib", "gzip"])
    meta["compressor"] = {"id": compressor, "level": 1}
    replace(zarray_path, json.dumps(meta).encode())
    for chunk in chunk_files:
        raw = chunk.read_bytes()
        replace(chunk, zlib.compress(raw) if compressor == "zlib" else gzip.compress(raw))
    target = rng.choice(chunk_files)
    data = bytearray(target.read_bytes())
    if kind == "bomb":
        replace(target, bomb_data() if compressor == "zlib" else _gzip_of_zlib(bomb_data()))
        return f"{array.name}/{target.name}: a {compressor} bomb ({target.stat().st_size} bytes inflating to " \
               f"{BOMB_BYTES >> 30} GiB)"
    choice = rng.choice(["flip", "truncate", "trailing", "crc", "longer", "intact"])
    if choice == "flip":
        data[rng.randrange(2, len(data))] ^= 0xFF
    elif choice == "truncate":
        data = data[:rng.randrange(1, len(data))]
    elif choice == "trailing":
        data += b"garbage"
    elif choice == "crc" and compressor == "gzip":
        data[-8] ^= 0xFF
    elif choice == "longer":
        inflated = zlib.decompress(bytes(data), 15 if compressor == "zlib" else 31) + b"\0" * 64
        data = bytearray(zlib.compress(inflated) if compressor == "zlib" else gzip.compress(inflated))
    replace(target, bytes(data))
    return f"{array.name}/{target.name}: {compressor}, {choice}"


def _gzip_of_zlib(data: bytes) -> bytes:
    """The same deflate stream in a gzip wrapper; the CRC is left 0 (a reader that stops at the declared size never
    gets that far)."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + data[2:-4] + bytes(4) + (BOMB_BYTES & 0xFFFFFFFF).to_bytes(4, "little")


# --- group: archives ------------------------------------------------------------------------------------------------

def _tar_bytes(folder: Path, edit: Callable[[tarfile.TarFile], None] | None = None,
               skip: Callable[[str], bool] = lambda name: False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(folder.rglob("*")):
            name = "./" + path.relative_to(folder).as_posix()
            if not skip(name):
                archive.add(path, arcname=name, recursive=False)
        if edit:
            edit(archive)
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes = b"", **fields: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in fields.items():
        setattr(info, k, v)
    archive.addfile(info, io.BytesIO(data) if info.isfile() else None)


def archive_mutation(rng: random.Random, folder: Path) -> tuple[str, bytes]:
    """(what was done, the bytes of a damaged `.nemo`)."""
    kind = rng.choice(["truncate", "huge-size", "duplicate", "dotdot", "absolute", "symlink", "hardlink", "device",
                       "fifo", "pax", "flip", "compressed", "empty", "dir-as-file", "compressed-index",
                       "control"])
    if kind == "compressed-index":  # a mutated index inside a .nemo.gz (read as a stream, checked as it passes)
        what, index = index_mutation(rng, (folder / "model_weights" / ".metadata").read_bytes())
        return f"gzip with {what}", gzip.compress(_tar_bytes(
            folder, lambda a: _add(a, "./model_weights/.metadata", index), skip=lambda n: n.endswith("/.metadata")))
    if kind == "truncate":
        data = _tar_bytes(folder)
        cut = rng.randrange(1, len(data))
        return f"cut at {cut} of {len(data)} bytes", data[:cut]
    if kind == "huge-size":
        data = bytearray(_tar_bytes(folder))
        # the first regular member's header: its size field (octal, 12 bytes at 124) set to 8 GiB, checksum fixed
        for start in range(0, len(data), 512):
            if data[start + 156:start + 157] == b"0" and data[start:start + 2] == b"./":
                data[start + 124:start + 136] = b"%011o\0" % (8 << 30)
                data[start + 148:start + 156] = b" " * 8
                data[start + 148:start + 156] = b"%06o\0 " % sum(data[start:start + 512])
                return "a member declaring 8 GiB", bytes(data)
        return "unchanged", bytes(data)
    if kind == "duplicate":
        name = rng.choice(["./model_config.yaml", "./model_weights/.metadata", "./model_weights/metadata.json"])
        return f"{name} twice", _tar_bytes(folder, lambda a: _add(a, name, b"x: 1\n"))
    if kind == "control":
        name = rng.choice(["./model_weights/a\nb/.zarray", "./model_weights/x\r.distcp", "./tok\x1b[2J.model"])
        return f"member {name!r}", _tar_bytes(folder, lambda a: _add(a, name, b"{}"))
    if kind == "dotdot":
        name = rng.choice(["../evil.yaml", "./model_weights/../../evil", "a/../../b"])
        return f"member {name}", _tar_bytes(folder, lambda a: _add(a, name, b"x"))
    if kind == "absolute":
        name = rng.choice(["/tmp/evil", "/etc/passwd", "C:/evil"])
        return f"member {name}", _tar_bytes(folder, lambda a: _add(a, name, b"x"))
    if kind in ("symlink", "hardlink"):
        target = rng.choice(["/etc/passwd", "../outside", "model_config.yaml"])
        name = rng.choice(["./model_weights/.metadata", "./tokenizer.model", "./model_config.yaml"])
        skip = (lambda n: n == name)
        kind_flag = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        return f"{kind} {name} -> {target}", _tar_bytes(
            folder, lambda a: _add(a, name, type=kind_flag, linkname=target), skip=skip)
    if kind in ("device", "fifo"):
        flag = rng.choice([tarfile.CHRTYPE, tarfile.BLKTYPE]) if kind == "device" else tarfile.FIFOTYPE
        return f"{kind} member", _tar_bytes(folder, lambda a: _add(a, "./model_weights/__9_9.distcp", type=flag,
                                                                   devmajor=1, devminor=5))
    if kind == "pax":
        header = rng.choice([{"size": "99999999999999"}, {"path": "../../evil"}, {"size": "-5"}, {"size": "x"},
                             {"mtime": "nan"}, {"path": "\udcff"}])
        what = f"pax header {header!r}"

        def edit(archive: tarfile.TarFile) -> None:
            info = tarfile.TarInfo("./extra.txt")
            info.size = 1
            info.pax_headers = header
            try:
                archive.addfile(info, io.BytesIO(b"x"))
            except Exception:  # noqa: BLE001 - a header tarfile itself refuses to write: add a plain member
                _add(archive, "./extra.txt", b"x")
        return what, _tar_bytes(folder, edit)
    if kind == "flip":
        data = bytearray(_tar_bytes(folder))
        for _ in range(rng.randint(1, 3)):
            header = rng.randrange(0, len(data) // 512) * 512
            data[header + rng.randrange(512)] ^= 1 << rng.randrange(8)
        return "flipped header bits", bytes(data)
    if kind == "compressed":
        how = rng.choice(["gzip", "bz2", "xz"])
        plain = _tar_bytes(folder)
        data = bytearray({"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[how](plain))
        damage = rng.choice(["truncate", "flip", "crc"])
        if damage == "truncate":
            data = data[:rng.randrange(10, len(data))]
        elif damage == "flip":
            data[rng.randrange(20, len(data) - 8)] ^= 0xFF
        else:
            data[-rng.randrange(1, 9)] ^= 0xFF
        return f"{how} {damage}", bytes(data)
    if kind == "empty":
        return "an empty tar", _tar_bytes(folder, skip=lambda n: True)
    return "model_config.yaml is a folder", _tar_bytes(
        folder, lambda a: _add(a, "./model_config.yaml", type=tarfile.DIRTYPE), skip=lambda n: n.endswith(".yaml"))


# --- group: metadata.json and context -----------------------------------------------------------------------------

def marker_mutation(rng: random.Random) -> tuple[str, bytes]:
    choice = rng.choice(["backend", "top-level", "deep", "huge", "not-utf8", "empty", "duplicate-keys"])
    if choice == "backend":
        value = odd_json(rng)
        return f"sharded_backend := {value!r:.60}", json.dumps({"sharded_backend": value}).encode()
    if choice == "top-level":
        value = rng.choice([[], "torch_dist", 5, None, [{"sharded_backend": "torch_dist"}]])
        return f"top level {value!r:.40}", json.dumps(value).encode()
    return choice, {"deep": deep_json(200_000).encode(), "huge": b" " * (3 << 20) + b"{}",
                    "not-utf8": b"{\"sharded_backend\": \"\xfe\"}", "empty": b"",
                    "duplicate-keys": b'{"sharded_backend": "torch_dist", "sharded_backend": "zarr"}'}[choice]


def context_mutation(rng: random.Random, folder: Path) -> str:
    """Damage a NeMo 2.0 directory's context/ or weights/common.pt (read by `convert --to bridge` and `verify`)."""
    context = folder / "context"
    kind = rng.choice(["io.json", "io.json", "model.yaml", "common.pt", "tokenizer"])
    if kind == "io.json":
        graph = json.loads((context / "io.json").read_text())
        choice = rng.choice(["objects", "object", "items", "paths", "deep", "top-level", "pyref"])
        objects = graph.get("objects", {})
        key = rng.choice(sorted(objects)) if objects else None
        if choice == "objects":
            graph["objects"] = odd_json(rng)
        elif choice == "object" and key:
            objects[key] = odd_json(rng)
        elif choice == "items" and key:
            objects[key]["items"] = rng.choice([5, [5], [[1, 2]], [["a"]], "x"])
        elif choice == "paths" and key:
            objects[key]["paths"] = rng.choice([5, "<root>.model", None])
        elif choice == "pyref":
            for obj in objects.values():
                for item in obj.get("items", []):
                    if isinstance(item, list) and isinstance(item[1], dict) and item[1].get("type") == "pyref":
                        item[1]["module"] = rng.choice([None, 5, ["a"]])
        if choice == "deep":
            replace(context / "io.json", deep_json(100_000).encode())
        elif choice == "top-level":
            replace(context / "io.json", b"[1, 2]")
        else:
            replace(context / "io.json", json.dumps(graph).encode())
        (context / "model.yaml").unlink()  # io.json is read (for the architecture) only without model.yaml
        return f"context/io.json: {choice}"
    if kind == "model.yaml":
        choice = rng.choice(["list", "deep", "alias", "tokenizer-list", "config-str", "binary"])
        text = (context / "model.yaml").read_text()
        data = {"list": "- 1\n- 2\n", "deep": "a: " + "[" * 5000 + "]" * 5000 + "\n",
                "alias": "a: &a [*a]\n", "tokenizer-list": text + "\ntokenizer: [1, 2]\n",
                "config-str": "_target_: x\nconfig: 5\n", "binary": "\x00\x01\x02"}[choice]
        replace(context / "model.yaml", data.encode())
        return f"context/model.yaml: {choice}"
    if kind == "common.pt":
        replace(folder / "weights" / "common.pt", rng.choice([b"", b"garbage", pickle.dumps({"a": 1})]))
        return "weights/common.pt damaged"
    # the tokenizer the context names: a link out of context/, a NUL in the name, a folder
    model_yaml = (context / "model.yaml").read_text()
    choice = rng.choice(["link-out", "nul", "absolute"])
    if choice == "link-out":
        for path in context.rglob("*.model"):
            path.unlink()
            path.symlink_to("/etc/hostname" if Path("/etc/hostname").exists() else "/etc/passwd")
    elif choice == "nul":
        replace(context / "model.yaml", model_yaml.replace("model_path:", "model_path: \"a\\0b\"\n  _was:").encode())
    else:
        replace(context / "model.yaml", model_yaml.replace("model_path:", "model_path: /etc/passwd\n  _was:").encode())
    return f"context tokenizer: {choice}"


# --- group: rank files -------------------------------------------------------------------------------------------

def rank_file_mutation(rng: random.Random, ckpt: Path) -> tuple[str, bytes]:
    """(what was done, a damaged `model_weights.ckpt`): its data.pkl unpickled (allowlisted), one entry changed,
    pickled and zipped again with the other records as they were."""
    import zipfile

    from migrator.convert.formats.safe_pickle import PersistentRef, dump_stand_ins
    from migrator.convert.read.nonsharded import _plain_stand_ins, _StateUnpickler

    with zipfile.ZipFile(ckpt) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    pkl = next(name for name in records if name.endswith("/data.pkl"))
    state = {k: _plain_stand_ins(v) for k, v in _StateUnpickler(io.BytesIO(records[pkl]), "x").load().items()}
    key = rng.choice([k for k in state if not k.endswith("_extra_state")])
    tensor = state[key].args[0] if state[key].pickle_name == "_rebuild_parameter" else state[key]
    args = list(tensor.args)
    choice = rng.choice(["size", "stride", "offset", "pid", "args", "key", "extra-deep", "extra-pid", "extra-bomb",
                         "not-a-tensor", "flip"])
    raw = None
    if choice == "size":
        args[2] = rng.choice([("9" * 5000,), (-4, 16), (2 ** 62, 2 ** 62), 5, (1.5,), (PLACEHOLDER,)])
        raw = RAW_VALUES["a 2**30-fold shared-reference bomb"] if args[2] == (PLACEHOLDER,) else None
    elif choice == "stride":
        args[3] = rng.choice([("a",), (), (1, 1, 1, 1), None])
    elif choice == "offset":
        args[1] = rng.choice(["x", -1, 2 ** 70, 10 ** 9, None])
    elif choice == "pid":
        args[0] = rng.choice([5, PersistentRef(5), PersistentRef(("storage",)), PersistentRef(("storage", 1, 2, 3, 4))])
    elif choice == "args":
        args = args[:rng.randrange(len(args))]
    elif choice == "key":
        state[rng.choice([5, "a\nb", "", ("t",)])] = state.pop(key)
    elif choice == "extra-deep":
        state["model.x._extra_state"] = PLACEHOLDER
        raw = RAW_VALUES["a list nested 100000 deep"]
    elif choice == "extra-bomb":
        state["model.x._extra_state"] = PLACEHOLDER
        raw = RAW_VALUES["a 2**30-fold shared-reference bomb"]
    elif choice == "extra-pid":
        state["model.x._extra_state"] = [PersistentRef(rng.choice([5, ("storage", 1), ("storage", 1, [], 3, 4)]))]
    elif choice == "not-a-tensor":
        state[key] = rng.choice([5, "x", None, [1]])
    tensor.args = tuple(args)
    data = dump_stand_ins(state, protocol=2)
    if raw is not None:
        data = data.replace(_pickled_str(PLACEHOLDER), raw, 1)
    if choice == "flip":
        blob = bytearray(records[pkl])
        for _ in range(rng.randint(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        data = bytes(blob)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in records.items():
            archive.writestr(name, data if name == pkl else content)
    return f"model_weights.ckpt: {choice} ({key})", out.getvalue()


# --- the campaign -------------------------------------------------------------------------------------------------

GROUPS = ("archives", "indexes", "zarr", "metadata.json", "context", "rank files")


def run(seed: int, counts: dict[str, int], work: Path, budget_s: float | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Group]:
    """Run `counts[group]` cases of each group; stop early after `budget_s` seconds."""
    rng = random.Random(seed)
    bases = make_bases(work)
    groups = {name: Group(name) for name in GROUPS}
    started = time.monotonic()
    cases = [name for name in GROUPS for _ in range(counts.get(name, 0))]
    rng.shuffle(cases)
    for number, name in enumerate(cases):
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        case_dir = work / f"case{number}"
        if case_dir.exists():
            shutil.rmtree(case_dir)
        case_dir.mkdir()
        group = groups[name]
        first_zarr_case = name == "zarr" and not group.tried  # every run tries the zlib bomb once
        what, outcome, problem = _one_case(name, rng, bases, case_dir, bomb=first_zarr_case)
        group.tried += 1
        group.peak_rss_mb = max(group.peak_rss_mb, outcome.rss_mb)
        group.seconds += outcome.seconds
        if problem is None:
            group.clean += 1
        else:
            group.defects.append(f"{what}: {problem}")
        if log:
            log(f"{name:14} {'ok ' if problem is None else 'BAD'} exit {outcome.code} {outcome.rss_mb:5.0f} MB "
                f"{outcome.seconds:5.1f} s  {what}" + (f"  -> {problem}" if problem else ""))
        shutil.rmtree(case_dir, ignore_errors=True)
    return groups


def _one_case(name: str, rng: random.Random, bases: Bases, case_dir: Path, bomb: bool = False
              ) -> tuple[str, Outcome, str | None]:
    out = case_dir / "out"
    route = rng.choice([[], [], ["--dtype", "fp32"], ["--to", "bridge"]])
    if name == "archives":
        what, data = archive_mutation(rng, bases.torch_dist)
        source = case_dir / "in.nemo"
        source.write_bytes(data)
    elif name == "indexes":
        source = clone(bases.torch_dist, case_dir / "in")
        index = source / "model_weights" / ".metadata"
        what, data = index_mutation(rng, index.read_bytes())
        replace(index, data)
    elif name == "zarr":
        source = clone(bases.zarr, case_dir / "in")
        what = zarr_mutation(rng, source, bases, bomb=bomb)
        route = []
    elif name == "metadata.json":
        where = rng.choice(["nemo1", "nemo2", "verify"])
        what, data = marker_mutation(rng)
        if where == "nemo1":
            source = clone(bases.torch_dist, case_dir / "in")
            replace(source / "model_weights" / "metadata.json", data)
        else:
            source = clone(bases.nemo2, case_dir / "in")
            replace(source / "weights" / "metadata.json", data)
            route = ["--to", "bridge"]
        what = f"{where} metadata.json: {what}"
        if where == "verify":
            outcome = run_cli(["verify", str(source)])
            return what, outcome, judge_verify(outcome)
    elif name == "rank files":
        source = clone(bases.nondist, case_dir / "in")
        what, data = rank_file_mutation(rng, source / "model_weights.ckpt")
        replace(source / "model_weights.ckpt", data)
    else:
        source = clone(bases.nemo2, case_dir / "in")
        what = context_mutation(rng, source)
        if rng.random() < 0.3:
            outcome = run_cli(["verify", str(source)])
            return f"verify {what}", outcome, judge_verify(outcome)
        route = ["--to", "bridge"]
    args = ["convert", "--input_path", str(source), "--output_path", str(out), *route]
    if "--to" not in route:
        args += ["--model_id", LLAMA_ID]
    outcome = run_cli(args)
    return f"{what} [{' '.join(route) or 'copy'}]", outcome, judge_convert(outcome, source, out)


def report(groups: dict[str, Group], limit: int = 8) -> str:
    lines = [f"{'group':14} {'tried':>6} {'clean':>6} {'defects':>8} {'peak RSS':>9} {'time':>7}"]
    for g in groups.values():
        lines.append(f"{g.name:14} {g.tried:6} {g.clean:6} {len(g.defects):8} {g.peak_rss_mb:7.0f}MB "
                     f"{g.seconds:6.1f}s")
    for g in groups.values():
        for defect in g.defects[:limit]:
            lines.append(f"  {g.name}: {defect}")
    return "\n".join(lines)
