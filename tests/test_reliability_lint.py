"""Hostile input on the lint side (issue 14): every case ends as one line and exit 2, or a correct result; no input
is ever changed unless a fix says so, no fix corrupts a file, no read runs without bound."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

CONFIG = ("trainer:\n  devices: 8\n  num_nodes: 4\nexp_manager:\n  checkpoint_callback_params:\n    async_save: true\n"
          "model:\n  dist_ckpt_format: torch_dist\n  dist_ckpt_load_on_device: yes\n"
          "  dist_ckpt_parallel_load: true\n  dist_ckpt_parallel_save: true\n  num_layers: 2\n")


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("brk", ["\r\r\n", "\r", "\r\r\r\n"])
def test_safe_fix_after_an_odd_line_break_changes_only_the_fixed_value(files, brk):
    # a CR CR LF (or a lone CR) is a line break for the YAML parser but not for the fix applier: the fix
    # landed on other bytes (`torch_dist` became `torch_diTrueeee...`) and the lint said "Fixed 10 findings"
    text = CONFIG.replace("  num_nodes: 4\n", f"  num_nodes: 4{brk}")
    path = files("odd.yaml", text.encode("utf-8"))
    proc = run_cli("lint", "--fix", "--exit-zero", str(path))
    assert proc.returncode == 0, proc.stderr
    assert path.read_bytes().decode("utf-8") == text.replace("dist_ckpt_load_on_device: yes",
                                                            "dist_ckpt_load_on_device: True")
    assert "Fixed 1 finding in" in proc.stderr
    # the reported positions count rows at line feeds, as the fix applier and editors' "go to line" do
    proc = run_cli("lint", "--output-format", "json", str(files("odd2.yaml", text.encode("utf-8"))))
    import json
    at = [f["location"] for f in json.loads(proc.stdout) if f["code"] == "NM113"]
    assert at == [{"row": 9 if brk.endswith("\n") else 8, "column": 29}]


def test_strip_after_a_cr_cr_lf_removes_whole_lines_and_keeps_every_other_value(files):
    text = CONFIG.replace("  num_nodes: 4\n", "  num_nodes: 4\r\r\n").replace(
        "  dist_ckpt_format: torch_dist\n", "  dist_ckpt_format: torch_dist\r\r\n")
    path = files("old.yaml", text.encode("utf-8"))
    proc = run_cli("config", str(path), "--strip", "--no-backup", "-o", os.devnull)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    after = path.read_bytes().decode("utf-8")
    before_values, after_values = yaml.safe_load(text), yaml.safe_load(after)
    assert after_values["trainer"] == before_values["trainer"]
    assert after.startswith("trainer:\n  devices: 8\n  num_nodes: 4\r\r\n")
    assert not any(k.startswith("dist_ckpt_") for k in after_values.get("model") or {})


def _deep_python(tmp: Path, terms: int) -> Path:
    path = tmp / "deep.py"
    path.write_text("from nemo import lightning as nl\nx = " + " + ".join(["1"] * terms)
                    + "\ns = nl.MegatronStrategy(ckpt_async_save=True)\n")
    return path


def test_a_3000_term_expression_is_one_line_in_lint_and_patch(tmp_path, files):  # a RecursionError traceback
    path = _deep_python(tmp_path, 3000)
    before = path.read_bytes()
    proc = run_cli("lint", str(path))
    assert proc.returncode == 2
    one_error_line(proc, "deep.py", "nested too deeply")
    config = files("old.yaml", CONFIG)
    proc = run_cli("patch", "--config", str(config), str(path))
    assert proc.returncode == 2
    one_error_line(proc, "deep.py", "nested too deeply", "left untouched")
    assert path.read_bytes() == before


def test_a_300000_term_expression_is_refused_within_seconds(tmp_path):
    path = _deep_python(tmp_path, 300_000)  # LibCST alone spends minutes on it: CPython's parser refuses it first
    started = time.monotonic()
    proc = run_cli("lint", str(path))
    assert proc.returncode == 2 and time.monotonic() - started < 30
    one_error_line(proc, "nested too deeply")


def test_changed_lines_from_a_file_that_is_not_a_diff_is_a_usage_error(files):
    config = files("bad.yaml", "model:\n  dist_ckpt_format: zarr\n")
    report = files("report.txt", "bad.yaml:2:21: NM106 error: zarr\nFound 1 finding\n")
    proc = run_cli("lint", "--changed-lines-from", str(report), str(config))
    assert proc.returncode == 2 and "All checks passed" not in proc.stdout
    one_error_line(proc, "report.txt", "not a unified diff")
    # an empty diff is a change that touches nothing: every finding is dropped, as before
    proc = run_cli("lint", "--changed-lines-from", str(files("empty.diff", "")), str(config))
    assert proc.returncode == 0


@pytest.mark.parametrize("through_link", [False, True])
def test_migrate_config_refuses_to_write_its_output_over_its_input(files, through_link):
    config = files("old.yaml", CONFIG)
    target = config
    if through_link:
        target = config.with_name("link.yaml")
        target.symlink_to(config.name)
    proc = run_cli("config", str(config), "--emit-python", "-o", str(target), entry="nemo-migrate")
    assert proc.returncode == 2
    one_error_line(proc, "input config")
    proc = run_cli(str(config), "--force", "--output-format", "json", "-o", str(target), entry="migrate-config")
    assert proc.returncode == 2
    assert config.read_text() == CONFIG


def test_the_temporary_file_of_a_fix_is_never_opened_through_a_planted_link(tmp_path):
    from migrator.migrate.files import write_bytes_atomically

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = tmp_path / "c.yaml"
    target.write_text("model: {}\n")
    # the name the old writer used (.NAME.PID.nemo-migrate.tmp) and a spread of others
    for name in [f".c.yaml.{os.getpid()}.nemo-migrate.tmp", ".c.yaml.tmp", "c.yaml.tmp"]:
        (tmp_path / name).symlink_to(victim)
    write_bytes_atomically(target, b"model: {x: 1}\n")
    assert victim.read_text() == "precious\n"
    assert target.read_text() == "model: {x: 1}\n" and not target.is_symlink()


def _limited(limit: int = 2 << 30):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _run_limited(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "nemo-migrate"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_limited())


def test_lint_reads_only_regular_files(tmp_path):
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")  # read to the end, this grew lint to 11 GB
    proc = _run_limited("lint", str(zero))
    assert proc.returncode == 2
    one_error_line(proc, "zero.yaml", "character device", "only regular files")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # with no writer, a plain open() or read() waits forever
    proc = _run_limited("lint", str(fifo), timeout=30)
    assert proc.returncode == 2
    one_error_line(proc, "pipe.yaml", "named pipe")
    # a folder walk reports each of them in one line and still lints the real file beside them
    (tmp_path / "real.yaml").write_text(CONFIG)
    proc = _run_limited("lint", "--exit-zero", str(tmp_path), timeout=30)
    assert proc.returncode == 2 and "in 1 file." in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "zero.yaml: is a character device" in proc.stderr
    assert "pipe.yaml: is a named pipe" in proc.stderr


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)) + \
    "model:\n  dist_ckpt_format: torch_dist\n  tokenizer: *i\n"


@pytest.mark.parametrize("name,text,needle", [
    ("laughs.yaml", BILLION_LAUGHS, "aliases are expanded"),
    ("deep.yaml", "model:\n  x: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("deep_block.yaml", "model:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(150)) + "  " * 151 + "v: 1\n",
     "nested"),
    ("recursive.yaml", "model: &m\n  dist_ckpt_format: torch_dist\n  self: *m\n", None),
])
def test_yaml_bounds_end_lint_within_seconds(files, name, text, needle):
    path = files(name, text)
    started = time.monotonic()
    proc = _run_limited("lint", str(path), timeout=60)
    assert time.monotonic() - started < 30
    if needle is None:  # a recursive alias: refused, or read (it holds nothing to judge), but never a traceback
        assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr
        return
    assert proc.returncode == 2
    one_error_line(proc, name, needle)


def test_a_50_mb_config_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    line = "  key_%08d: some value that fills the line up\n"
    with open(path, "w") as handle:
        handle.write("model:\n")
        for i in range(50_000_000 // len(line % 0)):
            handle.write(line % i)
    started = time.monotonic()
    proc = _run_limited("lint", str(path), timeout=120)
    assert proc.returncode == 2 and time.monotonic() - started < 20
    one_error_line(proc, "huge.yaml", "too large")


@pytest.mark.parametrize("text,needle", [
    (BILLION_LAUGHS.replace("model:\n", "num_layers: 2\nmodel:\n"), "aliases are expanded"),
    ("num_layers: 2\nx: &x [*x]\n", "recursive alias"),
    ("num_layers: 2\n" + "x: " + "[" * 3000 + "]" * 3000 + "\n", "nested"),
    ("num_layers: 2\n<<: 5\n", "merge key"),
    ("num_layers: 2\n? [a, b]\n: 1\n", "must be a scalar"),
    ("num_layers: 2\n? {a: 1}\n: 1\n", "must be a scalar"),
])
def test_model_config_yaml_bounds_and_shapes_are_one_line(text, needle):
    from migrator.convert.read.model_config import load_model_config
    from migrator.errors import MigratorError

    with pytest.raises(MigratorError, match=needle):
        load_model_config(text.encode("utf-8"), "model.nemo:model_config.yaml")


def test_model_config_size_is_checked_before_decoding():
    from migrator.convert.read.model_config import load_model_config
    from migrator.errors import MigratorError
    from migrator.yaml import bounds

    with pytest.raises(MigratorError, match="too large"):
        load_model_config(b"num_layers: 2\n" + b"#" * bounds.MAX_BYTES, "model_config.yaml")


def test_a_failed_fix_write_is_one_line_and_the_file_stays(files, monkeypatch, tmp_path):
    # the write itself fails (a full disk): the file keeps its bytes, the error names it, exit 2
    path = files("c.yaml", CONFIG)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import os\n_real = os.fsync\n"
        "def _full(fd):\n    raise OSError(28, 'No space left on device')\nos.fsync = _full\n")
    proc = run_cli("lint", "--fix", str(path),
                   env={"PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc, "c.yaml", "No space left on device")
    assert path.read_text() == CONFIG
    assert sorted(p.name for p in path.parent.iterdir() if p.name != "shim") == ["c.yaml"]
