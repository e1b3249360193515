"""`nemo-migrate lint` as a real subprocess: exit codes, output shapes, bad input, selection, suppression, fixes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

BAD = "model:\n  dist_ckpt_format: zarr\n  dist_ckpt_parallel_load: \"False\"\n"
CLEAN = ("exp_manager:\n  checkpoint_callback_params:\n    async_save: true\n"
         "model:\n  dist_ckpt_parallel_load: true\n  dist_ckpt_parallel_save: true\n")


def test_exit_codes_and_summary(files):
    clean, bad = files("clean.yaml", CLEAN), files("bad.yaml", BAD)
    proc = run_cli("lint", str(clean))
    assert proc.returncode == 0 and "All checks passed" in proc.stdout
    proc = run_cli("lint", str(bad))
    assert proc.returncode == 1
    assert f"{bad}:2:21: NM106" in proc.stdout and f"{bad}:3:28: NM101" in proc.stdout
    assert "Found 3 findings (2 errors, 1 info) in 1 file." in proc.stdout
    assert run_cli("lint", "--fail-on", "error", str(files("w.yaml", "model:\n  dist_ckpt_format: zarr\n")),
                   "--target", "megatron-core=0.15").returncode == 0
    assert run_cli("lint", "--exit-zero", str(bad)).returncode == 0


def test_json_shape_is_ruffs(files):
    bad = files("bad.yaml", BAD)
    proc = run_cli("lint", "--output-format", "json", str(bad))
    findings = json.loads(proc.stdout)
    assert {tuple(sorted(f)) for f in findings} == {tuple(sorted(
        ["code", "name", "message", "severity", "filename", "location", "end_location", "fix"]))}
    typed = next(f for f in findings if f["code"] == "NM101")
    assert typed["name"] == "invalid-type" and typed["severity"] == "error" and typed["filename"] == str(bad)
    assert typed["location"] == {"row": 3, "column": 28} and typed["end_location"] == {"row": 3, "column": 35}
    assert typed["fix"] == {"applicability": "unsafe", "message": "Write `False`", "edits": [
        {"content": "False", "location": {"row": 3, "column": 28}, "end_location": {"row": 3, "column": 35}}]}


def test_columns_count_code_points(files):
    path = files("u.yaml", "model:\n  # ünïcödé\n  name: \"ĉĥ\"\n  dist_ckpt_parallel_save: {é: 1}\n")
    finding = json.loads(run_cli("lint", "--output-format", "json", str(path)).stdout)
    typed = next(f for f in finding if f["code"] == "NM101")
    assert typed["location"] == {"row": 4, "column": 28} and typed["end_location"] == {"row": 4, "column": 34}  # é is 1 code point (2 bytes)


@pytest.mark.parametrize("name, content, expected", [
    ("broken.yaml", "model:\n  a: [1\n  b: 2\n", "broken.yaml:3:4: YAML syntax error"),
    ("binary.yaml", b"\x00\x01\x02model: 1", "binary.yaml: binary file"),
    ("latin1.yaml", "model:\n  name: caf\xe9\n".encode("latin-1"), "latin1.yaml: not UTF-8"),
])
def test_bad_input_is_one_line_exit_2_and_others_still_linted(files, name, content, expected):
    bad_file = files(name, content)
    other = files("other.yaml", BAD)
    proc = run_cli("lint", str(bad_file), str(other))
    assert proc.returncode == 2
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and expected in errors[0] and errors[0].startswith("nemo-migrate: error: ")
    assert f"{other}:2:21: NM106" in proc.stdout  # the other file was still linted


def test_missing_path_and_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    proc = run_cli("lint", str(tmp_path / "nope.yaml"), str(tmp_path / "empty"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "nope.yaml: no such file or directory" in lines[0]
    assert "empty: directory holds no" in lines[1]


def test_directories_are_walked_and_non_nemo_yaml_is_ignored(files, tmp_path):
    files("conf/a.yml", BAD)
    files("conf/sub/b.yaml", BAD)
    files("conf/.github/workflow.yaml", "on:\n  push: {}\njobs: {}\n")
    files("conf/.venv/x.yaml", BAD)  # skipped folder
    proc = run_cli("lint", "--output-format", "json", str(tmp_path / "conf"))
    names = {Path(f["filename"]).name for f in json.loads(proc.stdout)}
    assert names == {"a.yml", "b.yaml"}


def test_select_ignore_by_code_prefix_and_name(files):
    bad = files("bad.yaml", BAD)
    def codes(*args):
        return {f["code"] for f in json.loads(run_cli("lint", "--output-format", "json", str(bad), *args).stdout)}
    assert codes() == {"NM101", "NM106", "NM111"}
    assert codes("--select", "NM101") == {"NM101"}
    assert codes("--select", "removed-value,NM11") == {"NM106", "NM111"}
    assert codes("--ignore", "NM1") == set()
    assert codes("--ignore", "invalid-type", "--ignore", "NM111") == {"NM106"}
    proc = run_cli("lint", str(bad), "--select", "NM999")
    assert proc.returncode == 2 and "no rule matches NM999" in proc.stderr


def test_suppression_comments(files):
    text = ("model:\n  # nemo-migrate: ignore[NM106]\n  dist_ckpt_format: zarr\n"
            "  dist_ckpt_parallel_load: \"False\"  # nemo-migrate: ignore[invalid-type]\n"
            "  dist_ckpt_parallel_save: false  # nemo-migrate: ignore\n")
    findings = json.loads(run_cli("lint", "--output-format", "json", str(files("s.yaml", text))).stdout)
    assert [(f["code"], f["location"]["row"]) for f in findings] == [("NM111", 1)]


def test_fix_diff_and_unsafe_fixes(files):
    text = "model:\n  dist_ckpt_parallel_load: off   # keep me\n  dist_ckpt_formt: torch_dist\n"
    path = files("f.yaml", text)
    proc = run_cli("lint", "--diff", str(path))
    assert proc.returncode == 1 and "+  dist_ckpt_parallel_load: False   # keep me" in proc.stdout
    assert path.read_text() == text  # --diff writes nothing
    proc = run_cli("lint", "--fix", str(path))
    assert path.read_text() == text.replace(": off", ": False")  # only the safe fix; every other byte kept
    assert proc.returncode == 1  # the unknown key remains
    assert "1 hidden fix can be enabled with the --unsafe-fixes option" in proc.stdout
    proc = run_cli("lint", "--fix", "--unsafe-fixes", str(path))
    assert "dist_ckpt_format: torch_dist" in path.read_text() and "# keep me" in path.read_text()
    again = run_cli("lint", "--fix", "--unsafe-fixes", "--exit-non-zero-on-fix", str(path))
    assert path.read_text().count("\n") == 3 and again.returncode == 0  # idempotent: nothing left to change


def test_fix_keeps_crlf_line_endings(files):
    path = files("crlf.yaml", b"model:\r\n  dist_ckpt_parallel_load: yes\r\n  x: 1\r\n")
    run_cli("lint", "--fix", str(path))
    assert path.read_bytes() == b"model:\r\n  dist_ckpt_parallel_load: True\r\n  x: 1\r\n"


def test_target_and_source_errors(files):
    bad = files("bad.yaml", BAD)
    for args, message in [(("--target", "nemo"), "--target: expected COMPONENT=VERSION"),
                          (("--target", "nemo=two"), "not a version number"),
                          (("--source", "megatron-core=0.9"), "--source: only nemo=VERSION")]:
        proc = run_cli("lint", str(bad), *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_help_states_the_default_target():
    proc = run_cli("lint", "--help")
    assert "Default: nemo=2.5,megatron-core=0.16" in " ".join(proc.stdout.split())


def test_rule_command_prints_documentation():
    proc = run_cli("rule", "NM106")
    for heading in ("# removed-value (NM106)", "## What it does", "## Why is this bad?", "## Example", "## Fix"):
        assert heading in proc.stdout
    assert run_cli("rule", "yaml11-boolean").stdout.startswith("# yaml11-boolean (NM113)")
    listing = run_cli("rule").stdout
    assert "NM101  invalid-type" in listing
    proc = run_cli("rule", "NM000")
    assert proc.returncode == 2 and "unknown rule" in proc.stderr


def test_lint_never_imports_torch_or_megatron(files):
    bad = files("bad.yaml", BAD)
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['nemo-migrate', 'lint', {str(bad)!r}]\n"
        "try:\n    runpy.run_module('migrator', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron', 'numpy', 'pydantic', 'libcst'))\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("text, loads", [
    (BAD, False),
    ("checkpoint: last.ckpt\nmodel:\n  mcore_gpt: true\n", False),  # `checkpoint:` but no mapping: no Bridge file
    ("checkpoint:\n  save_interval: 100\n  ckpt_format: torch_dist\n", True),  # a Bridge override file
])
def test_the_bridge_table_is_loaded_only_for_a_top_level_checkpoint_mapping(files, text, loads):
    path = files("c.yaml", text)
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['nemo-migrate', 'lint', {str(path)!r}]\n"
        "try:\n    runpy.run_module('migrator', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('BRIDGE', 'migrator.engine.bridge_table' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert f"BRIDGE {loads}" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
