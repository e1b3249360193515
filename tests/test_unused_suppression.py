"""NM001 unused-suppression: reported only when certain, fixed by removing the comment or the unused codes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.engine.fixes import apply_edits
from migrator.engine.selection import Selection
from migrator.engine.suppression import IGNORE_COMMENT, NOQA_COMMENT, Suppressions
from migrator.engine.table import load_table
from migrator.engine.unused_suppression import unused_suppressions
from tests.conftest import run_cli

STALE = "model:\n  dist_ckpt_parallel_load: True  # nemo-migrate: ignore[NM110]\n"  # nothing fires on that line


def findings(path: Path, *args: str, cwd: Path | None = None) -> list[dict]:
    proc = run_cli("lint", "--output-format", "json", str(path), *args, cwd=cwd)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def nm001(path: Path, *args: str, cwd: Path | None = None) -> list[dict]:
    return [f for f in findings(path, *args, cwd=cwd) if f["code"] == "NM001"]


def test_reported_with_default_selection(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(STALE)
    (finding,) = nm001(path)
    assert finding["name"] == "unused-suppression" and finding["severity"] == "info"
    assert finding["location"] == {"row": 2, "column": 34} and finding["fix"]["applicability"] == "safe"


@pytest.mark.parametrize("args", [
    ("--select", "NM001,NM106"),  # NM110 did not run: it might have fired there
    ("--ignore", "NM110"),
    ("--ignore", "no-effect"),
    ("--ignore", "NM001"),
    ("--select", "NM1"),  # NM001 itself not selected
])
def test_not_reported_when_the_suppressed_rule_did_not_run(tmp_path, args):
    path = tmp_path / "c.yaml"
    path.write_text(STALE)
    assert nm001(path, *args) == []


def test_not_reported_when_per_file_ignores_turn_the_rule_off(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "c.yaml"
    path.write_text(STALE)
    (tmp_path / "nemo-migrator.toml").write_text('[per-file-ignores]\n"conf/" = ["NM110"]\n')
    assert nm001(Path("conf/c.yaml"), cwd=tmp_path) == []
    (tmp_path / "nemo-migrator.toml").write_text('[per-file-ignores]\n"other/" = ["NM110"]\n')
    assert len(nm001(Path("conf/c.yaml"), cwd=tmp_path)) == 1


def test_blanket_comment_judged_only_when_every_rule_ran(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  dist_ckpt_parallel_load: True  # nemo-migrate: ignore\n")
    assert len(nm001(path)) == 1
    assert nm001(path, "--ignore", "NM112") == []


def test_fix_removes_the_comment_and_keeps_crlf_and_other_comments(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"model:\r\n  # nemo-migrate: ignore[NM106]\r\n  dist_ckpt_format: torch_dist  # why\r\n"
                     b"  dist_ckpt_parallel_load: True  # nemo-migrate: ignore[NM110, NM111]\r\n")
    proc = run_cli("lint", "--fix", str(path))
    assert path.read_bytes() == (b"model:\r\n  dist_ckpt_format: torch_dist  # why\r\n"
                                 b"  dist_ckpt_parallel_load: True\r\n")
    assert "NM001" not in proc.stdout
    assert run_cli("lint", "--fix", "--exit-non-zero-on-fix", str(path)).returncode == 0  # idempotent



def test_fix_through_a_symbolic_link_edits_the_file_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.yaml"
    target.write_text(STALE)
    target.chmod(0o640)
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    run_cli("lint", "--fix", str(link))
    assert link.is_symlink() and target.read_text() == "model:\n  dist_ckpt_parallel_load: True\n"
    assert target.stat().st_mode & 0o777 == 0o640


def test_fix_on_a_last_line_without_a_line_break(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  dist_ckpt_parallel_load: True\n  # nemo-migrate: ignore[NM110]")
    run_cli("lint", "--fix", str(path))
    assert path.read_text() == "model:\n  dist_ckpt_parallel_load: True"


def _python_nm001(text: str, selection: Selection = Selection()) -> list:
    suppressions = Suppressions.scan(text, (IGNORE_COMMENT, NOQA_COMMENT))
    return unused_suppressions(suppressions, text, "train.py", load_table(), selection, "python")


def test_noqa_other_tools_codes_and_blanket_noqa_are_left_alone():
    assert _python_nm001("import os  # noqa: F401\nx = 1  # noqa\n") == []
    (finding,) = _python_nm001("import os  # noqa: F401, NM110\n")
    assert "NM110 does not check Python files" in finding.message
    assert apply_edits("import os  # noqa: F401, NM110\n", finding.fix.edits) == "import os  # noqa: F401\n"
    (finding,) = _python_nm001("x = 1  # noqa: NM110\ny = 2\n")
    assert apply_edits("x = 1  # noqa: NM110\ny = 2\n", finding.fix.edits) == "x = 1\ny = 2\n"


def test_a_comment_naming_nm001_silences_it():
    text = "model:\n  # nemo-migrate: ignore[NM001]\n  x: 1  # nemo-migrate: ignore[NM110]\n"
    suppressions = Suppressions.scan(text)
    found = unused_suppressions(suppressions, text, "c.yaml", load_table(), Selection(), "yaml")
    assert found == []


def test_only_real_comments_suppress_not_strings_or_block_scalars(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('model:\n  name: "gpt # nemo-migrate: ignore[NM106]"\n  dist_ckpt_format: zarr\n'
                    '  notes: |\n    # nemo-migrate: ignore[NM101]\n  dist_ckpt_parallel_load: "True"\n')
    found = sorted((f["code"], f["location"]["row"]) for f in findings(path))
    assert found == [("NM101", 6), ("NM106", 3), ("NM111", 1)]  # NM111: the note on `model:`
    before = path.read_text()
    run_cli("lint", "--fix", str(path))  # no NM001 fix may cut into the string or the block scalar
    assert path.read_text() == before
    script = tmp_path / "train.py"
    script.write_text('from nemo import lightning as nl\nNOTE = "see below  # noqa: NM103"\n'
                      's = nl.MegatronStrategy(ckpt_load_on_device=True)\n')
    assert [(f["code"], f["location"]["row"]) for f in findings(script)] == [("NM103", 3)]


def test_rows_count_line_feeds_as_the_findings_do_not_form_feeds(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("from nemo import lightning as nl\n\x0c\n"
                      "s = nl.MegatronStrategy(ckpt_load_on_device=True)  # type: ignore  # noqa: NM103\n")
    assert findings(script) == []
    text = "a: 1\x0c\r\n# nemo-migrate: ignore[NM110]\r\n"
    (item,) = Suppressions.scan(text).items
    assert (item.row, item.column) == (2, 1)


SCRIPT = ("from nemo import lightning as nl\n"
          "s = nl.MegatronStrategy({above}\n"
          "    ckpt_load_on_device=True,{here}\n"
          "    ckpt_parallel_save=True,\n"
          ")\n"
          'NOTE = """\n# noqa: NM103\n"""\n'
          "{later}\n")


@pytest.mark.parametrize("comment", [
    "  # noqa", "  # noqa: E501", "  # noqa: NM103", "  # noqa: E501, unknown-setting", "  # noqa: NM999",
    "  # nemo-migrate: ignore[NM110]", "  # type: ignore  # noqa: NM103,E501",
])
@pytest.mark.parametrize("where", ["above", "here", "later"])
def test_skipping_candidates_that_cannot_matter_changes_no_finding(comment, where):
    """The tokenizer is asked only about suppression candidates that can change a result (`can_matter`): the
    findings are the same as when every candidate is checked."""
    from migrator.engine.runner import LintOptions, check_text, language_for
    from migrator.engine.unused_suppression import can_matter
    from migrator.python.lint import comment_starts
    from migrator.cli.options import resolve_target

    text = SCRIPT.format(above=comment if where == "above" else "", here=comment if where == "here" else "",
                         later=f"x = 1{comment}" if where == "later" else "")
    table, options = load_table(), LintOptions(target=resolve_target(None), selection=Selection.parse(("ALL",), ()))
    found, suppressions = check_text(text, "train.py", table, options)
    language = language_for("train.py")
    raw = language.function("check")(text, "train.py", table, options)
    every = Suppressions.scan(text, language.suppressions, comment_starts, "train.py")  # no candidate skipped
    expected = every.filter(raw) + unused_suppressions(every, text, "train.py", table, options.selection, "python")
    assert sorted(found, key=lambda d: d.sort_key) == sorted(expected, key=lambda d: d.sort_key)
    relevant = can_matter(table, raw)
    assert [s.row for s in suppressions.items] == [s.row for s in every.items if relevant(s)]
    if comment in ("  # noqa: E501",) or (comment == "  # noqa" and where == "later"):
        assert suppressions.items == []  # another tool's code, a blanket noqa far from any finding: not asked
