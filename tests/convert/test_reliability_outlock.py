"""Never lose the user's data around OUT (issue 14): the lock on OUT, leftovers of interrupted runs, a kill-safe
`--force`, and a SIGKILL campaign (tests/campaign/kill_convert.py; a longer run: scripts/fuzz_kill.py)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrator.convert.storage import outlock
from migrator.convert.verify import verify_checkpoint
from migrator.errors import MigratorError
from tests.campaign import kill_convert
from tests.convert.conftest import LLAMA_ID, REPO, fixture_nemo, run_cli

SEED = 14


def convert_args(nemo: Path, out: Path, *extra: str) -> list[str]:
    return ["convert", "--input_path", str(nemo), "--output_path", str(out), "--model_id", LLAMA_ID, *extra]


def one_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemo-migrate: error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def complete(out: Path, nemo: Path) -> bool:
    return verify_checkpoint(out, against=nemo).ok


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A complete conversion of the tiny torch_dist fixture, copied as an existing OUT."""
    out = tmp_path_factory.mktemp("template") / "out"
    result = run_cli(*convert_args(fixture_nemo("tiny_llama_torch_dist"), out))
    assert result.returncode == 0, result.stderr
    return out


def beside(out: Path) -> list[str]:
    return sorted(n for n in os.listdir(out.parent) if n != out.name)


# --- the lock ---------------------------------------------------------------------------------------------------

def start_and_stop_inside(out: Path) -> subprocess.Popen:
    """A real conversion stopped (SIGSTOP) while it holds OUT's lock and writes OUT.partial/ (the zarr fixture with
    a cast: the cast's torch import keeps it there for a while)."""
    for _ in range(3):
        process = subprocess.Popen([sys.executable, "-m", "migrator",
                                    *convert_args(fixture_nemo("tiny_llama_zarr"), out, "--dtype", "fp32")],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lock = out.with_name("out.lock")
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if (out.with_name("out.partial") / "weights").exists() and lock.exists() \
                    and lock.read_text().split("\n")[0] == str(process.pid):
                process.send_signal(signal.SIGSTOP)
                return process
            time.sleep(0.0005)
        process.communicate()
        shutil.rmtree(out, ignore_errors=True)
    raise AssertionError("the conversion never was caught writing")


@pytest.mark.parametrize("force", [False, True])
def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path: Path, force: bool) -> None:
    out = tmp_path / "out"
    first = start_and_stop_inside(out)
    try:
        partial = out.with_name("out.partial")
        inode = partial.stat().st_ino
        second = run_cli(*convert_args(fixture_nemo("tiny_llama_torch_dist"), out, *(["--force"] if force else [])))
        one_error(second, f"{out}: locked by another nemo-migrate run (pid {first.pid})")
        assert partial.stat().st_ino == inode and (partial / "weights").exists()  # the first's work is untouched
        assert not out.exists()
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert complete(out, fixture_nemo("tiny_llama_zarr")) and beside(out) == []


@pytest.mark.parametrize("force", [False, True])
def test_two_runs_at_once_to_one_output(tmp_path: Path, converted: Path, force: bool) -> None:
    nemo = fixture_nemo("tiny_llama_torch_dist")
    for n in range(3):
        out = tmp_path / f"race{n}" / "out"
        out.parent.mkdir()
        if force:
            shutil.copytree(converted, out)
        runs = [subprocess.Popen([sys.executable, "-m", "migrator",
                                  *convert_args(nemo, out, *(["--force"] if force else []))],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        results = [(p, *p.communicate(timeout=120)) for p in runs]
        codes = sorted(p.returncode for p, _, _ in results)
        for p, _, stderr in results:
            assert "Traceback" not in stderr
            if p.returncode == 2:  # refused: the other holds the lock, or (no --force) has already written OUT
                assert "locked by another nemo-migrate run" in stderr or (not force and "already exists" in stderr), \
                    stderr
        # without --force exactly one writes OUT; with it both may succeed one after the other, never both fail
        assert codes in ([[0, 2]] if not force else [[0, 0], [0, 2]]), results
        assert complete(out, nemo) and beside(out) == []


def test_the_lock_names_its_holder_and_is_removed_when_released(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = outlock.OutputLock(out)
    first.acquire()
    assert out.with_name("out.lock").read_text() == f"{os.getpid()}\n{socket.gethostname()}\n"
    with pytest.raises(MigratorError, match=rf"locked by another nemo-migrate run \(pid {os.getpid()}\)"):
        outlock.OutputLock(out).acquire()
    first.release()
    assert not out.with_name("out.lock").exists()
    # a holder on another machine (a network file system) is named with its host
    elsewhere = outlock.OutputLock(out)
    elsewhere.acquire()
    os.pwrite(elsewhere._fd, b"4242\nnode-b17\n", 0)
    with pytest.raises(MigratorError, match=r"locked by another nemo-migrate run \(pid 4242 on node-b17\)"):
        outlock.OutputLock(out).acquire()
    elsewhere.release()
    with outlock.OutputLock(out):
        pass


def test_a_stale_lock_file_is_taken_over_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.with_name("out.lock").write_text("999999\n")  # a killed run's: its flock went with it
    result = run_cli(*convert_args(fixture_nemo("tiny_llama_torch_dist"), out))
    assert result.returncode == 0, result.stderr
    assert beside(out) == []


@pytest.mark.parametrize("kind", ["link to a folder", "dangling link", "fifo"])
def test_a_lock_file_that_is_not_a_plain_file_is_refused(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    lock = out.with_name("out.lock")
    target = tmp_path / "elsewhere"
    if kind == "link to a folder":
        target.mkdir()
        lock.symlink_to(target)
    elif kind == "dangling link":
        lock.symlink_to(target)
    else:
        os.mkfifo(lock)
    result = run_cli(*convert_args(fixture_nemo("tiny_llama_torch_dist"), out, "--force"))
    one_error(result, f"{lock}: ", "remove it")
    assert not out.exists() and os.path.lexists(lock)
    assert (target.exists() and not any(target.iterdir())) if kind == "link to a folder" else not target.exists()


def test_a_lock_file_with_other_hard_links_is_never_written(tmp_path: Path) -> None:
    # a hard link planted as OUT.lock would make "write the pid" truncate the file it shares its data with
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's notes\n")
    out = tmp_path / "out"
    os.link(victim, out.with_name("out.lock"))
    result = run_cli(*convert_args(fixture_nemo("tiny_llama_torch_dist"), out))
    one_error(result, f"{out}.lock: not a nemo-migrate lock file (2 hard links)", "remove it")
    assert victim.read_text() == "the user's notes\n" and not out.exists()


# --- OUT.partial ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["link to a folder", "dangling link", "file"])
@pytest.mark.parametrize("force", [False, True])
def test_a_partial_that_is_not_a_folder_is_never_followed_or_removed(tmp_path: Path, kind: str, force: bool
                                                                     ) -> None:
    out = tmp_path / "out"
    partial = out.with_name("out.partial")
    target = tmp_path / "precious"
    if kind == "link to a folder":
        (target / "weights").mkdir(parents=True)
        (target / "weights" / "data").write_text("keep me")
        partial.symlink_to(target)
    elif kind == "dangling link":
        partial.symlink_to(target)
    else:
        partial.write_text("keep me")
    result = run_cli(*convert_args(fixture_nemo("tiny_llama_torch_dist"), out, *(["--force"] if force else [])))
    one_error(result, f"{partial}: {'a file' if kind == 'file' else 'a symbolic link'}", "remove it yourself")
    assert os.path.lexists(partial) and not out.exists() and not out.with_name("out.lock").exists()
    if kind == "link to a folder":
        assert (target / "weights" / "data").read_text() == "keep me"
    elif kind == "file":
        assert partial.read_text() == "keep me"
    else:
        assert not target.exists()


# --- --force and OUT.replaced-* ---------------------------------------------------------------------------------

def test_force_says_the_old_checkpoint_is_removed(tmp_path: Path, converted: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(converted, out)
    result = run_cli(*convert_args(fixture_nemo("tiny_llama_torch_dist"), out, "--force"))
    assert result.returncode == 0, result.stderr
    assert f"{out}: replaced; the previous checkpoint is removed" in result.stdout
    assert beside(out) == []


@pytest.mark.parametrize("name", ["out.replaced-old", "out.replaced-0a1b2c3d"])  # ours; an older release's
def test_a_kept_copy_is_restored_when_out_is_absent(tmp_path: Path, converted: Path, name: str) -> None:
    # what a kill between the two renames of a --force replacement leaves: the old OUT aside, the new one partial
    out = tmp_path / "out"
    kept = out.with_name(name)
    shutil.copytree(converted, kept)
    shutil.copytree(converted, out.with_name("out.partial"))
    inode = kept.stat().st_ino
    nemo = fixture_nemo("tiny_llama_torch_dist")
    result = run_cli(*convert_args(nemo, out))
    one_error(result, f"{out}: already exists; pass --force")  # restored first: it is the user's checkpoint
    assert f"{out}: restored from {name}, the previous checkpoint kept by an interrupted --force replace" \
        in result.stdout
    assert f"{out.with_name('out.partial')}: removed, left by an interrupted run" in result.stdout
    assert out.stat().st_ino == inode and complete(out, nemo) and beside(out) == []


def test_several_kept_copies_with_out_absent_are_left_to_the_user(tmp_path: Path, converted: Path) -> None:
    out = tmp_path / "out"
    for name in ("out.replaced-old", "out.replaced-0a1b2c3d"):
        shutil.copytree(converted, out.with_name(name))
    result = run_cli(*convert_args(fixture_nemo("tiny_llama_torch_dist"), out, "--force"))
    one_error(result, f"{out}: absent, and 2 copies kept by interrupted --force replaces exist "
                      "(out.replaced-old, out.replaced-0a1b2c3d)")
    assert beside(out) == ["out.replaced-0a1b2c3d", "out.replaced-old"] and not out.exists()


def test_a_kept_copy_beside_a_complete_out_is_reported_then_removed_with_force(tmp_path: Path, converted: Path
                                                                               ) -> None:
    # what a kill after the second rename leaves: the new OUT in place, the old one still aside
    out = tmp_path / "out"
    shutil.copytree(converted, out)
    kept = out.with_name("out.replaced-old")
    shutil.copytree(converted, kept)
    nemo = fixture_nemo("tiny_llama_torch_dist")
    plain = run_cli(*convert_args(nemo, out))
    one_error(plain, "already exists; pass --force", f"{kept} holds the checkpoint it replaced, kept by an "
                                                     "interrupted --force (--force removes it too)")
    assert kept.exists()
    forced = run_cli(*convert_args(nemo, out, "--force"))
    assert forced.returncode == 0, forced.stderr
    assert f"{kept}: removed, the previous checkpoint kept by an interrupted --force replace of {out}" \
        in forced.stdout
    assert complete(out, nemo) and beside(out) == []


def test_dry_run_reports_leftovers_and_changes_nothing(tmp_path: Path, converted: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(converted, out.with_name("out.replaced-old"))
    (out.with_name("out.partial") / "weights").mkdir(parents=True)
    result = run_cli(*convert_args(fixture_nemo("tiny_llama_torch_dist"), out, "--dry-run"))
    assert result.returncode == 0, result.stderr
    assert "the run will restore it to" in result.stdout and "the run removes it if no other run holds" \
        in result.stdout
    assert beside(out) == ["out.partial", "out.replaced-old"] and not out.exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_force_killed_at_every_step_keeps_the_old_or_the_new_checkpoint(tmp_path: Path, converted: Path,
                                                                        exchange: bool) -> None:
    if exchange and not _exchange_works(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here (the two-rename case covers the fallback)")
    group = kill_convert.kill_at_steps(tmp_path, fixture_nemo("tiny_llama_torch_dist"), converted, exchange)
    # exchange: before the swap, before and halfway through removing the old one, before the release;
    # renames: the exchange declined, two renames, the rename and removal of the old one, the release
    assert group.tried >= (4 if exchange else 7)
    assert group.defects == 0, "\n".join(group.problems)


def _exchange_works(folder: Path) -> bool:
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    try:
        return outlock._exchange(folder / "a", folder / "b")
    finally:
        (folder / "a").rmdir()
        (folder / "b").rmdir()


def test_sigkill_campaign(tmp_path: Path, capsys) -> None:
    fixtures = {name: fixture_nemo(name) for name in kill_convert.FIXTURES}
    groups = kill_convert.run(SEED, cases=24, root=tmp_path, fixtures=fixtures, budget_s=35)
    report = kill_convert.report(groups)
    with capsys.disabled():
        print("\n" + report)
    assert all(g.tried >= 4 for g in groups.values()), report
    assert sum(g.killed for g in groups.values()) >= 8, report  # most kills land before the run ends
    assert sum(g.defects for g in groups.values()) == 0, report


def test_an_io_error_while_recovering_is_one_error(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    (out.with_name("out.partial") / "weights").mkdir(parents=True)

    def busy(path: Path) -> None:
        raise OSError(16, "Device or resource busy", str(path / "weights"))

    monkeypatch.setattr(outlock, "_remove_tree", busy)
    with pytest.raises(MigratorError, match=r"out.partial/weights: Device or resource busy; cannot clear what an "
                                            r"interrupted run left beside .*out$"):
        outlock.recover(out, force=False, note=lambda line: None)


@pytest.mark.parametrize("exchange", [True, False])
def test_an_old_checkpoint_that_cannot_be_removed_is_reported_not_lost(tmp_path: Path, monkeypatch,
                                                                       exchange: bool) -> None:
    out, partial = tmp_path / "out", tmp_path / "out.partial"
    (out / "old").mkdir(parents=True)
    (partial / "new").mkdir(parents=True)
    if not exchange:
        monkeypatch.setattr(outlock, "_exchange", lambda a, b: False)

    def busy(path: Path) -> None:
        raise OSError(16, "Device or resource busy", str(path))

    monkeypatch.setattr(outlock, "_remove_tree", busy)
    message = outlock.replace(partial, out)
    assert (out / "new").is_dir()  # the new one is in place whatever became of the old one
    assert message is not None and message.startswith(f"{out}: replaced, but the previous checkpoint could not be "
                                                      "removed")
    assert "the next run removes it)" in message and (partial / "old").is_dir()


def test_a_second_interrupt_while_the_old_checkpoint_is_removed_still_reports_the_new_one(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    out, partial = tmp_path / "out", tmp_path / "out.partial"
    (out / "old").mkdir(parents=True)
    (partial / "new").mkdir(parents=True)

    def interrupted(path: Path) -> None:
        raise KeyboardInterrupt()

    monkeypatch.setattr(outlock, "_remove_tree", interrupted)
    message = outlock.replace(partial, out)
    assert (out / "new").is_dir() and message is not None
    assert "could not be removed (interrupted); what is left of it is in" in message


def test_a_file_system_without_locks_is_said_and_the_run_goes_on(tmp_path: Path, monkeypatch) -> None:
    import errno
    import fcntl

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "out"
    notes: list[str] = []
    lock = outlock.OutputLock(out)
    lock.acquire(note=notes.append)
    assert notes == [f"{out}.lock: cannot lock (No locks available); going on without a lock: do not run another "
                     f"conversion to {out} meanwhile"]
    lock.release()
    assert beside(out) == []
