"""The lint's everyday habits, as a ruff user expects them (each failed on the tool before issue 13): walking,
stdin, --statistics, --show-fixes, colours, --unsafe-fixes, unreadable files in every format, --fail-on in JUnit."""
from __future__ import annotations

import json
import subprocess
from xml.etree import ElementTree as ET

import pytest

from tests.conftest import run_cli

# NM113 has a safe fix (yes -> True), NM101 an unsafe one ("True" -> True); --select keeps other rules out
CONFIG = 'model:\n  dist_ckpt_parallel_load: yes\n  dist_ckpt_parallel_save: "True"\n'
SELECT = ("--select", "NM101,NM113")
PY = "from nemo import lightning as nl\ns = nl.MegatronStrategy(ckpt_include_optimizer=True)\n"
NO_COLOR_ENV = {"NO_COLOR": "", "FORCE_COLOR": ""}


def test_unsafe_fixes_without_fix_only_shows_them(files):
    path = files("conf/gpt.yaml", CONFIG)
    proc = run_cli("lint", *SELECT, "--unsafe-fixes", str(path), env=NO_COLOR_ENV)
    assert path.read_text() == CONFIG  # nothing written
    assert f"{path}:3:28: NM101 [*] error" in proc.stdout and "[*] 2 fixable with the --fix option." in proc.stdout
    assert "hidden fix" not in proc.stdout and proc.returncode == 1
    proc = run_cli("lint", *SELECT, "--fix", "--unsafe-fixes", str(path))
    assert path.read_text() == "model:\n  dist_ckpt_parallel_load: True\n  dist_ckpt_parallel_save: True\n"
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _tree(files):
    files("proj/conf/gpt.yaml", CONFIG)
    files("proj/train.py", PY)
    files("proj/env/pyvenv.cfg", "home = /usr/bin\n")  # a virtualenv with any name
    files("proj/env/lib/site.yaml", CONFIG)
    files("proj/.hidden/conf.yaml", CONFIG)
    files("proj/outputs/run.yaml", CONFIG)
    files("proj/conf/gen.yaml", CONFIG)
    files("proj/.gitignore", "outputs/\n")
    files("proj/conf/.gitignore", "gen.yaml\n")


def _linted(folder, *extra) -> list[str]:
    proc = run_cli("lint", "--output-format", "json", "--exit-zero", *extra, str(folder))
    assert proc.returncode == 0, proc.stderr
    return sorted({str(__import__("pathlib").Path(f["filename"]).relative_to(folder)) for f in json.loads(proc.stdout)})


@pytest.mark.parametrize("git", [False, True], ids=["plain-folder", "git-work-tree"])
def test_walking_respects_gitignore_and_skips_virtualenvs_and_hidden_folders(files, tmp_path, git):
    _tree(files)
    folder = tmp_path / "proj"
    if git:
        subprocess.run(["git", "init", "-q", str(folder)], check=True)
    assert _linted(folder) == ["conf/gpt.yaml", "train.py"]
    # a path named on the command line is always linted
    proc = run_cli("lint", "--output-format", "json", "--exit-zero", str(folder / "env/lib/site.yaml"),
                   str(folder / ".hidden"), str(folder / "outputs/run.yaml"))
    assert {f["filename"].rsplit("/", 1)[-1] for f in json.loads(proc.stdout)} == {"site.yaml", "conf.yaml",
                                                                                    "run.yaml"}


def test_stdin_with_stdin_filename(files, tmp_path):
    proc = run_cli("lint", "--output-format", "json", *SELECT, "-", "--stdin-filename", "conf/gpt.yaml", input=CONFIG)
    findings = json.loads(proc.stdout)
    assert {(f["filename"], f["code"]) for f in findings} == {("conf/gpt.yaml", "NM101"), ("conf/gpt.yaml", "NM113")}
    assert proc.returncode == 1
    # Python by the name's suffix
    proc = run_cli("lint", "-", "--stdin-filename", "train.py", input=PY, env=NO_COLOR_ENV)
    assert "train.py:2:25: NM108" in proc.stdout
    # --fix: the fixed text on stdout, what remains on stderr, no file written
    proc = run_cli("lint", *SELECT, "--fix", "-", "--stdin-filename", "conf/gpt.yaml", input=CONFIG, cwd=tmp_path,
                   env=NO_COLOR_ENV)
    assert proc.stdout == 'model:\n  dist_ckpt_parallel_load: True\n  dist_ckpt_parallel_save: "True"\n'
    assert "conf/gpt.yaml:3:28: NM101 error" in proc.stderr and proc.returncode == 1
    assert not (tmp_path / "conf").exists()
    # a syntax error: exit 2, and with --fix the text comes back unchanged
    proc = run_cli("lint", "--fix", "-", "--stdin-filename", "x.yaml", input="model: [\n")
    assert proc.returncode == 2 and proc.stdout == "model: [\n" and "x.yaml:" in proc.stderr


def test_statistics(files):
    path = files("gpt.yaml", CONFIG + "trainer:\n  x: 1\nexp_manager:\n  y: 1\n")
    other = files("llama.yaml", 'model:\n  dist_ckpt_parallel_save: "False"\n')
    proc = run_cli("lint", *SELECT, "--statistics", str(path), str(other), env=NO_COLOR_ENV)
    lines = proc.stdout.splitlines()
    assert lines[0].split("\t") == ["2", "NM101", "[ ] invalid-type"]
    assert lines[1].split("\t") == ["1", "NM113", "[*] yaml11-boolean"]
    assert "message" not in proc.stdout and "dist_ckpt_parallel_save" not in proc.stdout
    proc = run_cli("lint", *SELECT, "--statistics", "--output-format", "json", "--unsafe-fixes", str(path), str(other))
    assert json.loads(proc.stdout) == [{"code": "NM101", "name": "invalid-type", "count": 2, "fixable": True},
                                       {"code": "NM113", "name": "yaml11-boolean", "count": 1, "fixable": True}]


def test_show_fixes(files):
    path = files("gpt.yaml", CONFIG)
    proc = run_cli("lint", *SELECT, "--fix", "--show-fixes", str(path), env=NO_COLOR_ENV)
    assert f"Fixed 1 finding:\n- {path}:\n    1 × NM113 (yaml11-boolean)\n" in proc.stdout


def test_colours_follow_no_color_and_force_color(files):
    path = files("gpt.yaml", CONFIG)
    assert "\033[" not in run_cli("lint", str(path), env=NO_COLOR_ENV).stdout  # piped: no colour
    forced = run_cli("lint", str(path), env={"FORCE_COLOR": "1", "NO_COLOR": ""}).stdout
    assert "\033[1m\033[31mNM101\033[0m" in forced
    assert "\033[" not in run_cli("lint", str(path), env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert "\033[" not in run_cli("lint", "--output-format", "json", str(path), env={"FORCE_COLOR": "1"}).stdout


def test_no_success_line_when_a_file_could_not_be_linted(files):
    broken = files("broken.yaml", "model: [\n")
    clean = files("clean.yaml", "model:\n  dist_ckpt_format: torch_dist\n")
    proc = run_cli("lint", "--select", "NM101", str(broken), str(clean), env=NO_COLOR_ENV)
    assert proc.returncode == 2 and "All checks passed" not in proc.stdout
    assert "1 file could not be linted (NM002 unreadable-file)" in proc.stdout


def test_every_machine_format_carries_an_unreadable_file(files):
    broken = files("broken.yaml", "model: [\n")
    missing = str(broken.with_name("missing.yaml"))
    proc = run_cli("lint", "--output-format", "json", str(broken), missing)
    assert proc.returncode == 2
    entries = json.loads(proc.stdout)
    assert [(e["code"], e["name"], e["severity"], e["filename"]) for e in entries] == [
        ("NM002", "unreadable-file", "error", str(broken)), ("NM002", "unreadable-file", "error", missing)]
    assert entries[0]["location"]["row"] == 2 and "YAML syntax error" in entries[0]["message"]
    for name in ("junit", "sarif", "rdjson", "github", "gitlab"):
        out = run_cli("lint", "--output-format", name, str(broken)).stdout
        assert "broken.yaml" in out and "YAML syntax error" in out, name


def test_junit_fails_only_findings_at_or_above_fail_on(files):
    path = files("gpt.yaml", CONFIG)

    def counts(*args):
        root = ET.fromstring(run_cli("lint", "--output-format", "junit", *SELECT, *args, str(path)).stdout)
        return int(root.get("tests")), int(root.get("failures"))

    assert counts() == (2, 1)  # the NM113 note is a passing case (its text in system-out)
    assert counts("--fail-on", "info") == (2, 2)
    assert counts("--fail-on", "error") == (2, 1)
