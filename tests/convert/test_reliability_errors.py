"""`convert` and `verify` under signals and non-regular inputs (issue 14, part "errors"), as real subprocesses.

- SIGINT, SIGTERM and SIGHUP at any point of a conversion (reading, a `--dtype bf16` cast, the context, the fsync)
  end within seconds with exit 130, 143 or 129, one line "interrupted by SIGxxx; OUT was not written", no
  traceback, and neither OUT nor OUT.partial (today's main: SIGTERM exited 130, SIGHUP left OUT.partial);
- a device, a FIFO, a socket or a link loop named as an input is one line and exit 2, never a hang;
- `verify`: an input that is no checkpoint is one line naming it (exit 2), a damaged checkpoint is FAIL lines
  naming the file (exit 1), a signal is one line and 128 + N.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.convert import checkpoint_factory as factory
from tests.convert.conftest import LLAMA_ID, REPO, fixture_nemo, run_cli, with_settings

NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if not line.startswith(("nemo-migrate: warning:", "nemo-migrate: writing weights"))]


@pytest.fixture(scope="module")
def fp32_nemo(tmp_path_factory, llama_config_text: str, llama_tokenizer) -> Path:
    """A Llama .nemo of about 200 MB of fp32 tensors: a `--dtype bf16` conversion takes a few seconds."""
    import torch

    folder = tmp_path_factory.mktemp("fp32")
    sizes = dict(layers=8, hidden=1024, ffn=2816, heads=8, groups=8)
    tensors = {k: torch.full(v.shape, 0.5, dtype=torch.float32)
               for k, v in factory.tiny_llama_tensors(**sizes).items()}
    config = with_settings(llama_config_text, num_layers=8, hidden_size=1024, ffn_hidden_size=2816,
                           num_attention_heads=8, num_query_groups=8, dist_ckpt_format="torch_dist")
    factory.write_torch_dist(folder / "w" / "model_weights", tensors, factory.extra_states(layers=8))
    name, tokenizer = llama_tokenizer
    return factory.pack_nemo(folder / "fp32.nemo", config, folder / "w" / "model_weights", {name: tokenizer})


def _convert(source: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "migrator", "convert", "--input_path",
                             str(source), "--output_path", str(out), "--model_id", LLAMA_ID, *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_signals_at_every_phase_of_a_cast(tmp_path: Path, fp32_nemo: Path) -> None:
    """A full run is timed first; then each signal is sent at several fractions of that time (reading, casting,
    the context, the fsync: the last fractions land after the weights are written)."""
    out = tmp_path / "out"
    start = time.monotonic()
    full = _convert(fp32_nemo, out, "--dtype", "bf16")
    _, stderr = full.communicate(timeout=300)
    duration = time.monotonic() - start
    assert full.returncode == 0, stderr
    for sig, fractions in ((signal.SIGINT, (0.15, 0.6)), (signal.SIGTERM, (0.35, 0.8, 0.97)),
                           (signal.SIGHUP, (0.05, 0.5))):
        for fraction in fractions:
            out = tmp_path / f"out-{NAMES[sig]}-{fraction}"
            process = _convert(fp32_nemo, out, "--dtype", "bf16")
            time.sleep(duration * fraction)
            if process.poll() is not None:  # it finished first (a quicker run): a complete output
                assert process.returncode == 0 and (out / "weights" / "metadata.json").exists()
                continue
            process.send_signal(sig)
            sent = time.monotonic()
            try:
                _, stderr = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:  # faulthandler dumps every thread on SIGABRT
                process.send_signal(signal.SIGABRT)
                _, stderr = process.communicate()
                raise AssertionError(f"{NAMES[sig]} at {fraction}: no exit 60 s after it:\n{stderr[-6000:]}") from None
            waited = time.monotonic() - sent
            lines = _error_lines(stderr)
            if process.returncode == 0:  # the signal came after OUT was complete and the process had ended
                assert (out / "weights" / "metadata.json").exists() and not lines, stderr
                continue
            assert process.returncode == 128 + sig, (NAMES[sig], fraction, stderr[-3000:])
            assert "Traceback" not in stderr, stderr
            assert len(lines) == 1, (NAMES[sig], fraction, stderr[-3000:])
            if lines[0].endswith("(it is complete)"):  # the rename had happened when the signal was acted on
                assert (out / "weights" / "metadata.json").exists()
            else:  # the short form: the signal came while the CLI loaded, before `convert` began
                assert lines[0] in (f"nemo-migrate: interrupted by {NAMES[sig]}; {out} was not written",
                                    f"nemo-migrate: interrupted by {NAMES[sig]}"), stderr
                assert not out.exists()
            assert not out.with_name(out.name + ".partial").exists(), (NAMES[sig], fraction, waited, stderr[-3000:])
            assert waited < 20, f"{NAMES[sig]} at {fraction}: {waited:.1f} s to exit"


def test_a_second_signal_does_not_interrupt_the_cleanup(tmp_path: Path, fp32_nemo: Path) -> None:
    out = tmp_path / "out"
    process = _convert(fp32_nemo, out, "--dtype", "bf16")
    deadline = time.monotonic() + 60
    while not (tmp_path / "out.partial" / "weights").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the conversion ended before it could be interrupted"
    process.send_signal(signal.SIGINT)  # Ctrl-C, then Ctrl-C again while the first one is being answered
    time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert _error_lines(stderr) == [f"nemo-migrate: interrupted by SIGINT; {out} was not written"], stderr
    assert not out.exists() and not (tmp_path / "out.partial").exists()


@pytest.fixture
def odd_paths(tmp_path: Path):
    """name -> a path that is no regular file: a device, a FIFO, a socket, a link loop, a link to a device."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "zero.nemo").symlink_to("/dev/zero")
    yield {"/dev/zero": (Path("/dev/zero"), "is a character device"), "fifo": (fifo, "is a named pipe"),
           "socket": (sock_path, "is a socket"), "link loop": (tmp_path / "loop1", "a symbolic link loop"),
           "link to /dev/zero": (tmp_path / "zero.nemo", "is a character device")}
    server.close()


@pytest.mark.parametrize("flag", ["--input_path", "--model_config", "--tokenizer_path", "--tokenizer_vocab_file"])
def test_convert_refuses_non_regular_inputs(tmp_path: Path, odd_paths, flag: str) -> None:
    """`--input_path /dev/zero` spun forever on today's main (a FIFO blocked, a link loop was a RuntimeError)."""
    for name, (path, fragment) in odd_paths.items():
        out = tmp_path / f"out-{name.replace(' ', '-').replace('/', '')}"
        source = path if flag == "--input_path" else fixture_nemo("tiny_llama_torch_dist")
        extra = [] if flag == "--input_path" else [flag, path]
        result = run_cli("convert", "--input_path", source, "--output_path", out, "--model_id", LLAMA_ID, *extra,
                         timeout=60)
        assert result.returncode == 2, (flag, name, result.stderr)
        errors = _error_lines(result.stderr)
        assert len(errors) == 1 and errors[0].startswith("nemo-migrate: error:"), (flag, name, result.stderr)
        assert str(path) in errors[0] and fragment in errors[0], (flag, name, result.stderr)
        assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_convert_refuses_an_output_path_in_a_link_loop(tmp_path: Path, odd_paths) -> None:
    for out in (odd_paths["link loop"][0], odd_paths["link loop"][0] / "out"):
        result = run_cli("convert", "--input_path", fixture_nemo("tiny_llama_torch_dist"), "--output_path", out,
                         "--model_id", LLAMA_ID, timeout=60)
        assert result.returncode == 2, result.stderr
        assert _error_lines(result.stderr) == [f"nemo-migrate: error: --output_path {out}: a symbolic link loop"]


def test_a_bug_in_convert_is_exit_3_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = ("import migrator.convert.write.nemo2 as target\n"
            "def broken(*args, **kwargs):\n    raise AttributeError('injected: a bug while writing the context')\n"
            "target.write_context = broken\n"
            "from migrator.cli.main import main\nmain()\n")
    result = subprocess.run([sys.executable, "-c", code, "convert", "--input_path",
                             str(fixture_nemo("tiny_llama_torch_dist")), "--output_path", str(out), "--model_id",
                             LLAMA_ID], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 3, result.stderr
    assert _error_lines(result.stderr) == [
        "nemo-migrate: internal error: AttributeError: injected: a bug while writing the context (please report this at "
        "https://github.com/nemo-migrator/nemo-migrator/issues; run with --debug for the traceback)"], result.stderr
    assert not out.exists() and not (tmp_path / "out.partial").exists()


# ------------------------------------------------------------------------------------------------- verify
@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "good"
    result = run_cli("convert", "--input_path", fixture_nemo("tiny_llama_torch_dist"), "--output_path", out,
                     "--model_id", LLAMA_ID)
    assert result.returncode == 0, result.stderr
    return out


def test_verify_refuses_what_is_no_checkpoint(tmp_path: Path, odd_paths, converted: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("hello\n")
    cases = {**{name: (path, fragment.replace("character device", "character device, not a regular file"))
                for name, (path, fragment) in odd_paths.items()},
             "empty folder": (tmp_path / "empty", "not a NeMo 2.0 checkpoint"),
             "a folder that is no checkpoint": (REPO / "docs", "not a NeMo 2.0 checkpoint"),
             "a file": (tmp_path / "file", "not a NeMo 2.0 checkpoint"),
             "missing": (tmp_path / "absent", "no such file or folder")}
    for name, (path, fragment) in cases.items():
        result = run_cli("verify", path, timeout=60)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.splitlines() == [line for line in result.stderr.splitlines()
                                              if line.startswith(f"nemo-migrate: error: {path}: ")], (name, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, (name, result.stderr)
    for name, (path, fragment) in odd_paths.items():  # --against: /dev/zero spun forever, a FIFO blocked
        result = run_cli("verify", converted, "--against", path, timeout=60)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, (name, result.stderr)
        assert f"{path}: " in result.stderr and fragment in result.stderr, (name, result.stderr)


def test_verify_reports_a_damaged_checkpoint_as_failures_naming_the_file(tmp_path: Path, converted: Path) -> None:
    import shutil

    truncated = tmp_path / "truncated"
    shutil.copytree(converted, truncated)
    data = sorted((truncated / "weights").glob("*.distcp"))[0]
    os.truncate(data, 1000)
    result = run_cli("verify", truncated)
    assert result.returncode == 1, result.stderr
    fails = [line for line in result.stdout.splitlines() if line.startswith("  FAIL: ")]
    assert fails and all(line.startswith(f"  FAIL: {data}: truncated (") for line in fails), result.stdout
    assert "ok: read back" not in result.stdout  # some chunks were not read back
    corrupt = tmp_path / "corrupt"
    shutil.copytree(converted, corrupt)
    (corrupt / "weights" / "metadata.json").write_text('{"sharded_backend": ')
    result = run_cli("verify", corrupt)
    assert result.returncode == 1, result.stderr
    assert f"  FAIL: {corrupt / 'weights' / 'metadata.json'}: not valid JSON" in result.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_verify_interrupted(tmp_path: Path, fp32_nemo: Path, sig: int) -> None:
    out = tmp_path / "out"
    assert run_cli("convert", "--input_path", fp32_nemo, "--output_path", out, "--model_id", LLAMA_ID).returncode == 0
    command = [sys.executable, "-m", "migrator", "verify", str(out), "--against", str(fp32_nemo)]
    start = time.monotonic()
    assert subprocess.run(command, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    duration = time.monotonic() - start
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(duration * 0.4)
    assert process.poll() is None, "verify ended before it could be interrupted"
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + sig, stderr
    assert stderr.splitlines() == [f"nemo-migrate: interrupted by {NAMES[sig]}"], stderr


def test_verify_load_interrupted(converted: Path) -> None:
    """`verify --load`: a SIGINT inside torch DCP's load came back wrapped in its CheckpointException (a
    BaseException): a traceback and exit 1. Now: one line, exit 130."""
    from tests.conftest import need_megatron_core

    need_megatron_core()
    command = [sys.executable, "-m", "migrator", "verify", str(converted), "--load", "--tokens", "1 2 3"]
    start = time.monotonic()
    assert subprocess.run(command, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    duration = time.monotonic() - start
    for fraction in (0.3, 0.6, 0.85):
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(duration * fraction)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        if process.returncode == 0:  # it had finished
            continue
        assert process.returncode == 130, (fraction, stderr[-3000:])
        assert stderr.splitlines()[-1:] == ["nemo-migrate: interrupted by SIGINT"], (fraction, stderr[-3000:])
        assert "Traceback" not in stderr, (fraction, stderr[-3000:])
