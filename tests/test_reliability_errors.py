"""One error model for every command (issue 14, part "errors"), as real subprocesses of the installed CLI.

- a bug (an unexpected exception) is exit 3 and one line asking for a report; the traceback only with the global
  `--debug` (or NEMO_MIGRATE_DEBUG=1); click never turns one into "Aborted!";
- a signal while the CLI still loads is one line "interrupted by SIGINT" and exit 130 (never click's "Aborted!",
  never a KeyboardInterrupt traceback from our code);
- a file the rewriter cannot read (a link to /dev/zero, a FIFO) is one error line, never a hang, and left as it was.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPTS = Path(sys.executable).parent
GOOD_YAML = "model:\n  mcore_gpt: true\n  dist_ckpt_format: zarr\n"
REPORT = ("(please report this at https://github.com/nemo-migrator/nemo-migrator/issues; run with --debug for the "
          "traceback)")


def _with_bug(module: str, attribute: str, exception: str, entry: str = "main") -> str:
    """A real CLI process whose `module.attribute` raises `exception` (an injected bug), run through the entry point."""
    return (f"import sys, {module} as target\n"
            f"def broken(*args, **kwargs):\n    raise {exception}\n"
            f"target.{attribute} = broken\n"
            f"from migrator.cli.main import {entry}\n{entry}()\n")


def run_bug(code: str, *args: str, env: dict | None = None, prog: str = "nemo-migrate") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gpt.yaml"
    path.write_text(GOOD_YAML)
    return path


def test_a_bug_is_exit_3_with_one_line_and_no_traceback(config: Path) -> None:
    code = _with_bug("migrator.engine.runner", "lint_paths", "ValueError('injected: a bug')")
    result = run_bug(code, "lint", str(config))
    assert result.returncode == 3, result.stderr
    assert _one_line(result.stderr) == f"nemo-migrate: internal error: ValueError: injected: a bug {REPORT}"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(config: Path, how: str) -> None:
    code = _with_bug("migrator.engine.runner", "lint_paths", "ValueError('injected: a bug')")
    args = ["--debug", "lint", str(config)] if how == "flag" else ["lint", str(config)]
    result = run_bug(code, *args, env={"NEMO_MIGRATE_DEBUG": "1"} if how == "env" else None)
    assert result.returncode == 3, result.stderr
    assert "Traceback (most recent call last)" in result.stderr and "in broken" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == f"nemo-migrate: internal error: ValueError: injected: a bug {REPORT}"


def test_an_eof_error_bug_is_not_clicks_aborted(config: Path) -> None:
    """click's own main turns an EOFError (a truncated pickle, a bug) into "Aborted!" and exit 1, the code of
    "findings"."""
    code = _with_bug("migrator.engine.runner", "lint_paths", "EOFError('Ran out of input')")
    result = run_bug(code, "lint", str(config))
    assert result.returncode == 3, result.stderr
    assert "Aborted" not in result.stderr
    assert _one_line(result.stderr).startswith("nemo-migrate: internal error: EOFError: Ran out of input (please report")


def test_migrate_config_bug_and_debug(config: Path) -> None:
    code = _with_bug("migrator.migrate.mapping", "load_mapping", "KeyError('x')", entry="migrate_config_main")
    result = run_bug(code, str(config), "--emit-python")
    assert result.returncode == 3, result.stderr
    assert _one_line(result.stderr).startswith("migrate-config: internal error: KeyError: 'x' (please report")
    debug = run_bug(code, "--debug", str(config), "--emit-python")
    assert debug.returncode == 3 and "Traceback (most recent call last)" in debug.stderr, debug.stderr


def test_expected_failures_keep_their_codes(tmp_path: Path, config: Path) -> None:
    lint = SCRIPTS / "nemo-migrate"
    findings = subprocess.run([lint, "lint", config], capture_output=True, text=True, timeout=120)
    assert findings.returncode == 1, findings.stderr
    missing = subprocess.run([lint, "lint", tmp_path / "absent.yaml"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "absent.yaml" in missing.stderr and "Traceback" not in missing.stderr
    usage = subprocess.run([lint, "lint", "--no-such-option", config], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "No such option" in usage.stderr
    assert subprocess.run([lint, "--version"], capture_output=True, text=True, timeout=120).returncode == 0
    helped = subprocess.run([lint, "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--debug" in helped.stdout and "129/130/143" in helped.stdout


def _classify(result: subprocess.CompletedProcess, prog: str) -> str:
    """"ours": one line "PROG: interrupted by SIGINT", exit 130; "python": SIGINT landed in the interpreter's own
    start-up, before any line of nemo-migrate ran (killed by the signal, or Python's own KeyboardInterrupt lines in
    `site`/the import of the package: nothing the project can answer); "done": finished before the signal."""
    last = result.stderr.strip().splitlines()[-1:]
    if result.returncode == 130 and last and last[0].startswith(f"{prog}: interrupted by SIGINT") \
            and "Traceback" not in result.stderr and "Aborted" not in result.stderr:
        return "ours"
    if result.returncode in (-signal.SIGINT, 1) and "/migrator/" not in result.stderr.replace(
            "from migrator.cli.main import", "") and "click" not in result.stderr and f"{prog}:" not in result.stderr:
        return "python"
    if result.returncode in (0, 1) and "interrupted" not in result.stderr and "Aborted" not in result.stderr \
            and "Traceback" not in result.stderr:
        return "done"
    return "bad"


def _early_args(command: str, config: Path, out: Path, many: int = 0) -> list[str]:
    """`many`: lint that many copies of the config (a run long enough that a signal sent once a module is seen to
    load lands in it, however late the parent reads the child's stderr)."""
    from tests.convert.conftest import LLAMA_ID, fixture_nemo

    if command == "lint" and many:
        folder = out.with_name("configs")
        folder.mkdir(exist_ok=True)
        for index in range(many):
            (folder / f"c{index}.yaml").write_text(config.read_text())
        return ["lint", str(folder)]
    if command == "lint":
        return ["lint", str(config)]
    return ["convert", "--input_path", str(fixture_nemo("tiny_llama_torch_dist")), "--output_path", str(out),
            "--model_id", LLAMA_ID]


@pytest.mark.parametrize("command", ["lint", "convert"])
def test_early_sigint_is_one_line_and_exit_130(tmp_path: Path, config: Path, command: str) -> None:
    """SIGINT at 0, 20, 50, 100 and 300 ms after start: never click's "Aborted!" (exit 1) nor a traceback from
    nemo-migrate's code. On a loaded machine the interpreter's own start-up can outlast a delay: such a run is
    "python" (see _classify); the import-paced test below hits the CLI's own loading every time."""
    outcomes = {}
    for delay in (0, 0.02, 0.05, 0.1, 0.3):
        out = tmp_path / f"out{delay}"
        args = _early_args(command, config, out)
        process = subprocess.Popen([SCRIPTS / "nemo-migrate", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        outcomes[delay] = outcome = _classify(result, "nemo-migrate")
        assert outcome != "bad", (delay, result.returncode, stderr[-3000:])
        if command == "convert":
            assert not out.with_name(out.name + ".partial").exists()
            assert out.exists() == (outcome == "done" and result.returncode == 0), (delay, stderr[-2000:])


@pytest.mark.parametrize("command,module", [("lint", "click"), ("lint", "yaml"),
                                            ("convert", "migrator.convert.storage.fileops"),
                                            ("convert", "migrator.convert.pipeline")])
def test_sigint_while_the_cli_loads(tmp_path: Path, config: Path, command: str, module: str) -> None:
    """SIGINT the moment Python reports (PYTHONPROFILEIMPORTTIME) that `module` was imported: while click, the
    command's modules, PyYAML or the converter load. Today's main printed click's "Aborted!" (exit 1) or a KeyboardInterrupt
    traceback."""
    out = tmp_path / "out"
    args = _early_args(command, config, out, many=1500)
    process = subprocess.Popen([SCRIPTS / "nemo-migrate", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert process.stderr is not None
    seen = []
    sent = False
    for line in process.stderr:
        seen.append(line)
        name = line.rsplit("|", 1)[-1].strip()
        if name == module or name.startswith(module + "."):
            process.send_signal(signal.SIGINT)
            sent = True
            break
    stdout, rest = process.communicate(timeout=120)
    assert sent, f"{module} was never imported"
    stderr = "".join(line for line in [*seen, *rest.splitlines(True)] if not line.startswith("import time:"))
    assert process.returncode == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "warning:" not in line and "writing weights" not in line]
    assert lines[-1:] == ["nemo-migrate: interrupted by SIGINT"] or (
        command == "convert" and len(lines) == 1 and lines[0].startswith("nemo-migrate: interrupted by SIGINT;")), stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert not out.exists() and not out.with_name("out.partial").exists()


def test_patch_refuses_a_link_to_dev_zero_and_a_fifo(tmp_path: Path) -> None:
    """`migrate-config OLD.yaml --patch` read every .py with read_bytes(): a link to /dev/zero never ended, a FIFO
    blocked. Now each is one error line, the other files are still patched."""
    config = tmp_path / "gpt.yaml"
    config.write_text("model:\n  mcore_gpt: true\n  dist_ckpt_format: torch_dist\n")
    (tmp_path / "zero.py").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.py")
    script = tmp_path / "train.py"
    script.write_text("import nemo.lightning as nl\ns = nl.MegatronStrategy(ckpt_load_on_device=True)\n")
    for args in (["--patch", str(tmp_path / "zero.py"), str(script), "--diff"],
                 ["--patch", str(tmp_path / "pipe.py"), str(script), "--diff"]):
        result = subprocess.run([SCRIPTS / "migrate-config", str(config), *args], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("migrate-config: error:")]
        assert len(errors) == 1 and ("character device" in errors[0] or "named pipe" in errors[0]), result.stderr
        assert "+s = nl.MegatronStrategy(" in result.stdout  # the readable file is still handled
    assert (tmp_path / "zero.py").is_symlink() and os.readlink(tmp_path / "zero.py") == "/dev/zero"


def test_lint_summary_never_says_passed_beside_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    result = subprocess.run([SCRIPTS / "nemo-migrate", "lint", tmp_path / "zero.yaml", tmp_path / "binary.yaml"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "All checks passed" not in result.stdout + result.stderr
    assert "2 files could not be linted" in result.stdout
