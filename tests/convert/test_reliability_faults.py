"""Integrity under I/O faults (issue 14): every write, copy and read result is checked, the size (and content) of
what was written is checked before `metadata.json`, and any fault ends as exit 0 with a complete output or exit 2
with one line naming the file and the OS error, nothing left behind, the input unchanged.

The fault is injected around the I/O call in a real `nemo-migrate convert` process (tests/campaign/fault_shim.py,
installed as its sitecustomize): CI runs as root, so permission-based faults never happen there. A small tmpfs
gives real ENOSPC (bytes, inodes) where `mount` is allowed."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.campaign import io_faults
from tests.convert.conftest import LLAMA_ID, fixture_nemo, run_cli


def _verify(out: Path, against: Path) -> bool:
    from migrator.convert.verify import verify_checkpoint

    return verify_checkpoint(out, against).ok


def convert_with_fault(tmp_path: Path, fault: dict, *args: str, nemo: Path | None = None):
    """`convert` of the tiny Llama torch_dist fixture (or `nemo`) with one injected fault; (result, out, input)."""
    shim = io_faults.install_shim(tmp_path)
    nemo = nemo or fixture_nemo("tiny_llama_torch_dist")
    out = tmp_path / "out"
    log = tmp_path / "fault.json"
    result = run_cli("convert", "--input_path", nemo, "--output_path", out, "--model_id", LLAMA_ID, *args,
                     env={"PYTHONPATH": str(shim), "NEMO_MIGRATE_FAULT": json.dumps({**fault, "log": str(log)})})
    fired = log.exists() and json.loads(log.read_text()).get("fired")
    assert fired, f"the fault {fault} never fired: {result.stderr[-500:]}"
    return result, out, nemo


def one_line_exit_2(result, out: Path, *needles: str) -> str:
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# --- short counts: every count is checked ------------------------------------------------------------------------

@pytest.mark.parametrize("fn,kind,args", [
    ("copy_file_range", "zero", ()),  # a 0-byte copy where bytes remain: sendfile, then read/write, finish the copy
    ("copy_file_range", "short", ()),
    ("file.write", "short", ()),  # a data file write that takes half the bytes: the rest is written, not lost
    ("file.write", "short", ("--dtype", "fp16")),
    ("preadv", "short", ("--dtype", "fp16")),
])
def test_a_short_or_empty_count_is_continued_to_a_complete_output(tmp_path, fn, kind, args):
    result, out, nemo = convert_with_fault(tmp_path, {"fn": fn, "at": 2, "kind": kind}, *args)
    assert result.returncode == 0, result.stderr
    assert _verify(out, nemo)


@pytest.mark.parametrize("fn,at,args", [
    ("copy_file_range", 2, ()),
    ("file.write", 3, ()),
    ("file.write", 7, ("--dtype", "fp16")),
    ("file.write", 5, ("--to", "bridge")),
])
def test_a_write_that_reports_success_but_writes_nothing_is_caught_before_metadata_json(tmp_path, fn, at, args):
    """The size and content checks before metadata.json: a lost write never becomes an OUT that looks complete."""
    result, out, _ = convert_with_fault(tmp_path, {"fn": fn, "at": at, "kind": "lie"}, *args)
    if result.returncode == 0:  # the lost bytes were rewritten later (e.g. a header patched after its data)
        assert _verify(out, fixture_nemo("tiny_llama_torch_dist"))
    else:
        line = one_line_exit_2(result, out, "nothing written")
        assert "/out.partial/" in line, line  # names the file that came out wrong


def test_a_write_that_never_progresses_is_an_error_not_a_hang(tmp_path, monkeypatch):
    from migrator.convert.storage import fileops

    def refuse(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def unsupported(*args):
        raise OSError(errno.EINVAL, "Invalid argument")

    source = tmp_path / "source"
    source.write_bytes(os.urandom(100_000))
    dest = tmp_path / "dest"
    monkeypatch.setattr(os, "copy_file_range", refuse)
    monkeypatch.setattr(os, "sendfile", unsupported)
    monkeypatch.setattr(os, "write", lambda fd, data: 0)  # the read/write fallback: a write that takes nothing
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            fileops.copy_file(source, dest)
        except BaseException as error:  # noqa: BLE001 - checked below
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "copy_file loops forever on a write that returns 0"
    error = outcome.get("error")
    assert isinstance(error, OSError) and error.filename == str(dest) and "no progress" in str(error), error


def test_a_buffered_write_that_returns_nothing_is_an_error_naming_the_file(tmp_path):
    from migrator.convert.storage.fileops import CheckedWriter

    class Stuck:
        def write(self, data):
            return 0

    writer = CheckedWriter(tmp_path / "file")
    writer._file.close()
    writer._file = Stuck()  # type: ignore[assignment]
    with pytest.raises(OSError, match="no progress") as caught:
        writer.write(b"abc")
    assert caught.value.filename == str(tmp_path / "file")


# --- one line naming the file: read faults, mkdir, the worker's error is not an interrupt -----------------------

@pytest.mark.parametrize("fault,needle", [
    ({"fn": "pread", "at": 2, "kind": "errno", "errno": "EIO"}, "tiny_llama_torch_dist.nemo"),
    ({"fn": "preadv", "at": 1, "kind": "errno", "errno": "EIO"}, "tiny_llama_mcore_tp2pp1.nemo"),
    ({"fn": "mkdir", "at": 1, "kind": "errno", "errno": "EROFS", "match": "out.partial"}, "out.partial"),
    ({"fn": "mkdir", "at": 1, "kind": "errno", "errno": "EACCES", "match": "out.partial"}, "out.partial"),
    ({"fn": "mkdir", "at": 1, "kind": "errno", "errno": "ENOSPC", "match": "weights"}, "weights"),
])
def test_a_read_or_mkdir_fault_is_one_line_naming_the_file(tmp_path, fault, needle):
    nemo = None
    if fault["fn"] == "preadv":
        nemo = io_faults.LEGACY_TP2
        if not nemo.exists():
            fixture_nemo("missing_legacy_fixture")  # skips (or fails in CI) the way every shared fixture does
    result, out, nemo = convert_with_fault(tmp_path, fault, nemo=nemo)
    one_line_exit_2(result, out, needle, os.strerror(getattr(errno, fault["errno"])))


@pytest.mark.parametrize("workers", ["1", "3"])
def test_enospc_in_a_worker_is_reported_as_that_error_never_as_an_interrupt(tmp_path, workers):
    result, out, _ = convert_with_fault(tmp_path, {"fn": "copy_file_range", "at": 1, "kind": "errno",
                                                   "errno": "ENOSPC"}, "--workers", workers)
    line = one_line_exit_2(result, out, "No space left on device", ".distcp")
    assert "interrupt" not in result.stderr.lower() and result.returncode != 130, line


def test_a_failed_flush_after_the_rename_leaves_the_complete_output_and_says_so(tmp_path):
    """The last fsync (of OUT's parent folder, after the rename) fails: OUT is complete and stays; the run must not
    claim that nothing was written."""
    counts = io_faults.census(io_faults.ROUTES["copy"], tmp_path / "census", io_faults.install_shim(tmp_path))
    result, out, nemo = convert_with_fault(tmp_path, {"fn": "fsync", "at": counts["fsync"], "kind": "errno",
                                                      "errno": "EIO"})
    assert result.returncode == 0 and "nothing written" not in result.stderr, result.stderr
    assert "Input/output error" in result.stderr and "sync" in result.stderr
    assert _verify(out, nemo)


# --- the campaign -------------------------------------------------------------------------------------------------

CI_CASES = {"copy": 20, "copy-workers": 8, "link": 12, "gzip": 8, "stream-zarr": 16, "merge": 12, "bridge": 12,
            "cast": 4}


def test_io_fault_campaign(tmp_path):
    """Every I/O function the converter calls, N-th call, errnos and short/empty/lying counts, on every route
    (fixed seed, about a minute; scripts/fuzz_faults.py runs longer): 0 defects."""
    for route in io_faults.ROUTES.values():
        for path in route.needs:
            if not path.exists():
                fixture_nemo("missing_fixture_" + path.name)  # skip or fail like every shared fixture
    groups = io_faults.run_campaign(tmp_path, seed=14, cases_per_route=CI_CASES, budget_s=50)
    text = io_faults.report(groups)
    print(text)
    assert all(g.tried for g in groups.values()), text  # the budget cut every route's sample, none away
    assert not any(g.defects for g in groups.values()), text


# --- real faults: a small tmpfs ------------------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, inodes) -> a fresh tmpfs folder (skips where mount is not allowed: not root, no CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(size: str, inodes: int) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _outcome(result, out: Path, nemo: Path) -> str:
    if result.returncode == 0:
        assert _verify(out, nemo), result.stderr
        return "ok"
    one_line_exit_2(result, out, "No space left on device")
    return "enospc"


def test_inode_exhaustion_on_a_real_tmpfs(tmpfs):
    """nr_inodes too small for the output's files and folders: every shortage ends in one ENOSPC line."""
    nemo = fixture_nemo("tiny_llama_torch_dist")
    outcomes = []
    for inodes in (3, 5, 8, 12, 40):
        point = tmpfs("8m", inodes)
        out = point / "out"
        result = run_cli("convert", "--input_path", nemo, "--output_path", out, "--model_id", LLAMA_ID)
        outcomes.append(_outcome(result, out, nemo))
        assert sorted(p.name for p in point.iterdir()) == (["out"] if outcomes[-1] == "ok" else [])
    print("inodes", outcomes)
    assert "enospc" in outcomes and outcomes[-1] == "ok", outcomes


FILL_SHIM = """
import os, shutil
_real = os.{fn}
_real_usage = shutil.disk_usage
_state = {{"done": False, "armed": False}}
def _usage(*args, **kwargs):  # armed once the run has checked the free space: the disk fills after that
    _state["armed"] = True
    return _real_usage(*args, **kwargs)
shutil.disk_usage = _usage
def _fill_then_call(*args, **kwargs):
    if _state["armed"] and not _state["done"]:
        _state["done"] = True
        st = os.statvfs({mount!r})
        free = st.f_bavail * st.f_frsize - {leave}
        if free > 0:
            with open({mount!r} + "/filler", "wb") as f:  # another process filling the disk meanwhile
                f.write(b"\\0" * free)
    return _real(*args, **kwargs)
os.{fn} = _fill_then_call
"""


@pytest.mark.parametrize("route,fn", [("copy", "copy_file_range"), ("stream", "preadv"), ("cast", "preadv")])
def test_a_disk_that_fills_up_during_the_conversion_on_a_real_tmpfs(tmpfs, tmp_path, route, fn):
    """The tmpfs has room when the run starts (the free-space check passes); another writer then fills it up to
    `leave` bytes as the first data moves: the kernel's own ENOSPC, at several points of the output (and with
    room enough, a complete output)."""
    nemo = fixture_nemo("tiny_llama_zarr" if route == "stream" else "tiny_llama_torch_dist")
    args = ["--dtype", "fp16"] if route == "cast" else []
    outcomes = []
    for leave in (0, 128 << 10, 240 << 10, 320 << 10, 2 << 20):
        point = tmpfs("4m", 1000)
        shim = tmp_path / f"fill{leave}"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(FILL_SHIM.format(fn=fn, mount=str(point), leave=leave))
        out = point / "out"
        result = run_cli("convert", "--input_path", nemo, "--output_path", out, "--model_id", LLAMA_ID, *args,
                         env={"PYTHONPATH": str(shim)})
        outcomes.append(_outcome(result, out, nemo))
        assert sorted(p.name for p in point.iterdir()) == (["filler", "out"] if outcomes[-1] == "ok" else ["filler"])
    print(route, outcomes)
    assert outcomes[0] == "enospc" and outcomes[-1] == "ok", outcomes
