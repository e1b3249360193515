"""--diff-only BASE (a real `git diff`) and --changed-lines-from DIFF: only findings on lines a change adds."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from migrator.engine.changed_lines import parse_unified_diff, touches
from migrator.engine.diagnostics import Diagnostic, Location
from tests.conftest import run_cli

GIT = shutil.which("git")
BASE = "model:\n  dist_ckpt_format: zarr\n  dist_ckpt_parallel_load: True\n"
NEW = "model:\n  dist_ckpt_format: zarr\n  dist_ckpt_parallel_load: \"True\"\n  dist_ckpt_parallel_save: yes\n"


def test_parse_unified_diff_with_context_u0_and_odd_lines():
    diff = (
        "diff --git a/conf/a.yaml b/conf/a.yaml\n--- a/conf/a.yaml\n+++ b/conf/a.yaml\n"
        "@@ -1,4 +1,5 @@\n model:\n-  x: 1\n+  x: 2\n+++ starts with pluses\n \n   y: 3\n"
        "\\ No newline at end of file\n"
        "diff --git a/b.yaml b/b.yaml\n--- a/b.yaml\n+++ b/b.yaml\n@@ -10 +10 @@\n-old\n+new\n@@ -20,2 +21,0 @@\n-a\n-b\n"
        "--- a/gone.yaml\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n"
        '--- /dev/null\n+++ "b/sp\\303\\251cial name.yaml"\n@@ -0,0 +1,2 @@\n+a\n+b\n'
    )
    assert parse_unified_diff(diff) == {"conf/a.yaml": {2, 3}, "b.yaml": {10}, "spécial name.yaml": {1, 2}}


def _d(row: int, col: int, end_row: int, end_col: int) -> Diagnostic:
    return Diagnostic("NM101", "invalid-type", "m", "error", "f.yaml", Location(row, col), Location(end_row, end_col))


def test_a_range_touches_the_rows_it_covers_and_an_end_at_column_1_is_exclusive():
    assert touches(_d(3, 5, 3, 9), {3})
    assert not touches(_d(3, 5, 3, 9), {2, 4})
    assert touches(_d(2, 5, 4, 2), {4})
    assert not touches(_d(2, 5, 4, 1), {4})
    assert touches(_d(2, 5, 2, 9), None)  # a wholly new (untracked) file


def test_changed_lines_from_stdin(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(NEW)
    diff = "--- a/a.yaml\n+++ b/a.yaml\n@@ -3 +3,2 @@\n-  dist_ckpt_parallel_load: True\n" \
           "+  dist_ckpt_parallel_load: \"True\"\n+  dist_ckpt_parallel_save: yes\n"
    proc = run_cli("lint", "--output-format", "json", "--changed-lines-from", "-", "a.yaml", cwd=tmp_path, input=diff)
    found = json.loads(proc.stdout)
    assert sorted((f["code"], f["location"]["row"]) for f in found) == [("NM101", 3), ("NM113", 4)]  # no NM106 (row 2)
    assert proc.returncode == 1
    (tmp_path / "d.diff").write_text(diff.replace("@@ -3 +3,2 @@", "@@ -3 +3 @@").replace(
        "+  dist_ckpt_parallel_save: yes\n", ""))
    proc = run_cli("lint", "--output-format", "json", "--changed-lines-from", "d.diff", "a.yaml", cwd=tmp_path)
    assert [(f["code"], f["location"]["row"]) for f in json.loads(proc.stdout)] == [("NM101", 3)]


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_diff_only_against_a_git_revision(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.yaml").write_text(BASE)
    (tmp_path / "conf" / "untouched.yaml").write_text(BASE)
    git("add", ".")
    git("commit", "-q", "-m", "base")
    (tmp_path / "conf" / "a.yaml").write_text(NEW)
    (tmp_path / "conf" / "new.yaml").write_text(BASE)  # untracked: every line is new
    # run from a subfolder: git's paths are relative to the top level, the findings' to the current directory
    proc = run_cli("lint", "--output-format", "json", "--diff-only", "HEAD", ".", cwd=tmp_path / "conf")
    found = sorted((f["filename"], f["code"], f["location"]["row"]) for f in json.loads(proc.stdout))
    assert found == [("a.yaml", "NM101", 3), ("a.yaml", "NM113", 4), ("new.yaml", "NM106", 2), ("new.yaml", "NM111", 1)]
    proc = run_cli("lint", "--diff-only", "no-such-rev", "conf", cwd=tmp_path)
    assert proc.returncode == 2 and "--diff-only: 'no-such-rev' is not a commit" in proc.stderr


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_diff_only_errors(tmp_path):
    (tmp_path / "a.yaml").write_text(BASE)
    proc = run_cli("lint", "--diff-only", "HEAD", "a.yaml", cwd=tmp_path, env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert proc.returncode == 2 and "--diff-only: not inside a git repository" in proc.stderr
    proc = run_cli("lint", "--fix", "--changed-lines-from", "-", "a.yaml", cwd=tmp_path, input="")
    assert proc.returncode == 2 and "cannot be combined with --fix" in proc.stderr


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_diff_only_counts_from_the_merge_base_not_from_where_base_has_moved_since(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout

    git("init", "-q", "-b", "main")
    (tmp_path / "a.yaml").write_text(BASE)
    git("add", ".")
    git("commit", "-q", "-m", "base")
    git("checkout", "-q", "-b", "feature")
    (tmp_path / "a.yaml").write_text(NEW)  # the branch's change: rows 3 and 4
    git("commit", "-q", "-am", "feature")
    git("checkout", "-q", "main")
    (tmp_path / "a.yaml").write_text(BASE.replace("zarr", "torch_dist"))  # main moves on: row 2
    git("commit", "-q", "-am", "main moves")
    git("checkout", "-q", "feature")
    proc = run_cli("lint", "--output-format", "json", "--diff-only", "main", "a.yaml", cwd=tmp_path)
    # row 2 (zarr, NM106) differs from main's tip, but the branch did not touch it
    assert sorted((f["code"], f["location"]["row"]) for f in json.loads(proc.stdout)) == [("NM101", 3), ("NM113", 4)]
    assert proc.returncode == 1
