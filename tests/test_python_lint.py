"""`nemo-migrate lint train.py`: the Python rules through the same engine, output, suppression, selection, fixes and
exit codes as the YAML lint (the per-rule VALID/INVALID cases live in rules/lint/*.yaml)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from migrator.cli.options import resolve_target
from migrator.engine.runner import LintOptions, check_text
from migrator.engine.table import load_table
from migrator.errors import MigratorError
from tests.conftest import PROJECT_FIXTURES, ROOT, run_cli

TABLE = load_table()
HEAD = "from nemo import lightning as nl\n"
PY = PROJECT_FIXTURES / "python"


def lint(text: str, **options):
    diagnostics, _ = check_text(text, "train.py", TABLE, LintOptions(target=resolve_target(options.get("target")),
                                                                     config_path=options.get("config")))
    return diagnostics


def codes(text: str, **options) -> list[tuple[str, int]]:
    return [(d.code, d.location.row) for d in lint(text, **options)]


def test_syntax_errors_are_one_line_with_a_position():
    with pytest.raises(MigratorError, match=r"^train.py:2:\d+: Python syntax error"):
        lint(HEAD + "s = nl.MegatronStrategy(\n")
    with pytest.raises(MigratorError, match=r"^train.py:2:\d+: Python syntax error"):
        lint("MegatronStrategy = 1\ndef f(:\n")


def test_a_file_that_never_names_the_class_is_not_parsed():
    # the byte pre-filter: no strategy call can be written without the class's name, so the file is not parsed
    # (its syntax is Python's and ruff's business, as NeMo's tree of 2,900 files shows: parsing them all costs
    # more than the whole lint)
    assert lint("def f(:\n") == []


def test_a_file_without_the_class_has_nothing_to_check():
    assert lint("import os\nprint(os.getcwd())\n") == []


def test_noqa_and_ignore_comments_suppress():
    text = HEAD + ("s = nl.MegatronStrategy(\n    ckpt_include_optimizer=True,  # noqa: NM108\n"
                   "    # nemo-migrate: ignore[unknown-setting]\n    ckpt_load_on_device=True,\n"
                   "    save_ckpt_format='zarr',  # noqa\n)\n")
    assert lint(text) == []


def test_bom_shifts_columns_on_the_first_line_only():
    text = "\ufeff" + "import nemo.lightning as nl; s = nl.MegatronStrategy(ckpt_include_optimizer=True)\n"
    (finding,) = lint(text)
    assert text.index("ckpt_include_optimizer") + 1 == finding.location.column


def test_the_removed_argument_fix_keeps_the_layout():
    from migrator.engine.fixes import apply_edits

    text = HEAD + "s = nl.MegatronStrategy(\r\n    ckpt_include_optimizer=False,  # inference\r\n)\r\n"
    (finding,) = lint(text)
    assert finding.fix.applicability == "unsafe"
    assert apply_edits(text, finding.fix.edits) == HEAD + (
        "s = nl.MegatronStrategy(\r\n    ckpt_save_optimizer=False,\r\n"
        "    ckpt_load_optimizer=False,  # inference\r\n)\r\n")
    text = HEAD + "s = nl.MegatronStrategy(\n    # a\x0cb\n    ckpt_include_optimizer=False,\n)\n"  # a form feed
    (finding,) = lint(text)
    assert apply_edits(text, finding.fix.edits) == HEAD + (
        "s = nl.MegatronStrategy(\n    # a\x0cb\n    ckpt_save_optimizer=False,\n    ckpt_load_optimizer=False,\n)\n")


def test_conflicting_arguments_are_not_judged_through_kwargs_or_variables():
    assert codes(HEAD + "s = nl.MegatronStrategy(ckpt_load_main_params=True, ckpt_load_optimizer=flag)\n") == []
    assert codes(HEAD + "s = nl.MegatronStrategy(ckpt_load_main_params=True)\n") == [("NM115", 2)]


def test_nm109_is_an_error_in_python():
    (finding,) = lint(HEAD + "s = nl.MegatronStrategy(ckpt_load_strictness='log_all')\n", target="nemo=2.0")
    assert finding.code == "NM109" and finding.severity == "error"  # the rule's YAML severity is warning


def test_config_mismatch_uses_the_same_plan_as_patch():
    config = PY / "old_config.yaml"
    found = lint((PY / "docs_migration_page.py").read_text(), config=config)
    assert sorted(d.code for d in found) == ["NM103", "NM120", "NM120", "NM120"]
    messages = " | ".join(d.message for d in found if d.code == "NM120")
    assert "ckpt_parallel_save_optim=False disagrees with model.dist_ckpt_parallel_dist_opt: True" in messages
    assert "inverted" in messages and "ckpt_async_save=False" in messages
    # the patched file agrees with the config: nothing left to report but the NM114 note
    patched = (PY / "expected" / "docs_migration_page.py").read_text()
    assert [d.code for d in lint(patched, config=config)] == ["NM114"]


def test_cli_text_json_exit_codes_and_selection(files):
    path = files("train.py", HEAD + "s = nl.MegatronStrategy(ckpt_include_optimizer=True, ckpt_load_on_device=True)\n")
    proc = run_cli("lint", str(path))
    assert proc.returncode == 1
    assert f"{path}:2:25: NM108 [*] error: ckpt_include_optimizer was removed" in proc.stdout
    assert f"{path}:2:54: NM103 error: ckpt_load_on_device" in proc.stdout
    findings = json.loads(run_cli("lint", "--output-format", "json", str(path)).stdout)
    assert [(f["code"], f["fix"]["applicability"]) for f in findings] == [("NM108", "safe"), ("NM103", "unsafe")]
    assert run_cli("lint", "--ignore", "NM1", str(path)).returncode == 0
    assert run_cli("lint", "--select", "removed-argument", "--fail-on", "error", str(path)).returncode == 1
    clean = files("clean.py", HEAD + "s = nl.MegatronStrategy(ckpt_async_save=False)\n")
    assert run_cli("lint", str(clean)).returncode == 0


def test_cli_fix_unsafe_fixes_and_diff_on_python(files):
    text = HEAD + "s = nl.MegatronStrategy(\n    ckpt_include_optimizer=True,\n    ckpt_load_on_device=True,\n)\n"
    path = files("train.py", text)
    proc = run_cli("lint", "--diff", str(path))
    assert proc.returncode == 1 and "+    ckpt_save_optimizer=True,\n+    ckpt_load_optimizer=True," in proc.stdout
    assert path.read_text() == text
    run_cli("lint", "--fix", str(path))  # the safe fix only
    assert "ckpt_load_on_device=True" in path.read_text() and "ckpt_include_optimizer" not in path.read_text()
    proc = run_cli("lint", "--fix", "--unsafe-fixes", str(path))
    assert proc.returncode == 0, proc.stdout
    assert path.read_text() == HEAD + ("s = nl.MegatronStrategy(\n    ckpt_save_optimizer=True,\n"
                                       "    ckpt_load_optimizer=True,\n    ckpt_load_directly_on_device=True,\n)\n")


def test_cli_lint_config_reports_and_fixes_the_inversion(files):
    config = files("old.yaml", "model:\n  dist_ckpt_parallel_dist_opt: True\n  dist_ckpt_parallel_load: True\n"
                   "  dist_ckpt_parallel_save: True\nexp_manager:\n  checkpoint_callback_params:\n"
                   "    async_save: True\n")
    path = files("train.py", HEAD + "s = nl.MegatronStrategy(ckpt_parallel_save_optim=False)\n")
    proc = run_cli("lint", "--config", str(config), str(path))
    assert proc.returncode == 1 and "NM120" in proc.stdout and "inverted" in proc.stdout
    assert run_cli("lint", str(path)).returncode == 0  # without --config there is nothing wrong with it
    run_cli("lint", "--config", str(config), "--fix", "--unsafe-fixes", str(path))
    assert path.read_text() == HEAD + "s = nl.MegatronStrategy(ckpt_parallel_save_optim=True)\n"
    proc = run_cli("lint", "--config", str(config.with_name("missing.yaml")), str(path))
    assert proc.returncode == 2 and "missing.yaml" in proc.stderr


def test_cli_python_syntax_error_is_exit_2_and_other_files_still_linted(files):
    broken = files("broken.py", HEAD + "s = nl.MegatronStrategy(\n")
    other = files("other.py", HEAD + "s = nl.MegatronStrategy(ckpt_include_optimizer=True)\n")
    proc = run_cli("lint", str(broken), str(other))
    assert proc.returncode == 2 and "broken.py:2:" in proc.stderr and "Python syntax error" in proc.stderr
    assert f"{other}:2:25: NM108" in proc.stdout


def test_directories_lint_python_files_too(files, tmp_path):
    files("proj/conf/old.yaml", "model:\n  dist_ckpt_format: zarr\n")
    files("proj/train.py", HEAD + "s = nl.MegatronStrategy(save_ckpt_format='zarr')\n")
    findings = json.loads(run_cli("lint", "--output-format", "json", str(tmp_path / "proj")).stdout)
    assert sorted((Path(f["filename"]).name, f["code"]) for f in findings if f["code"] == "NM106") == [
        ("old.yaml", "NM106"), ("train.py", "NM106")]


def test_python_lint_loads_libcst_only_to_fix(files):
    """Detection runs on Python's ast; LibCST (about 250 ms of metadata per file on NeMo's tree) only re-checks a
    fixed text."""
    py = files("train.py", HEAD + "s = nl.MegatronStrategy(ckpt_include_optimizer=True)\n")

    def modules(*args: str) -> str:
        code = (
            "import sys, runpy\n"
            f"sys.argv = ['nemo-migrate', 'lint', *{list(args)!r}, {str(py)!r}]\n"
            "try:\n    runpy.run_module('migrator', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron', 'pydantic')))\n"
            "print('LIBCST', 'libcst' in sys.modules)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        return proc.stdout + proc.stderr

    modules()  # warms the rule-table cache (a cold cache validates the table with pydantic once)
    out = modules()
    assert "NM108" in out and "HEAVY []" in out and "LIBCST False" in out, out
    out = modules("--fix")
    assert "Fixed 1 finding" in out and "HEAVY []" in out and "LIBCST True" in out, out


# Python's ast finds the calls and LibCST's scope analysis was the reference: the two must agree on every spelling
NL = "from nemo import lightning as nl\n"
SAME_AS_LIBCST = {
    "alias": "from nemo.lightning import MegatronStrategy as MS\nMS(ckpt_load_on_device=True, save_ckpt_format='zar')\n",
    "dotted import": "import nemo.lightning\nnemo.lightning.pytorch.strategies.MegatronStrategy(save_ckpt_format=\"zarr\")\n",
    "other dotted import": "import nemo.collections\nnemo.lightning.MegatronStrategy(ckpt_include_optimizer=True)\n",
    "local class": "class MegatronStrategy:\n    pass\nMegatronStrategy(ckpt_include_optimizer=True)\n",
    "used before its import": "MegatronStrategy(ckpt_include_optimizer=True)\nfrom nemo.lightning import MegatronStrategy\n",
    "import below, used in a function": "def f():\n    return MegatronStrategy(ckpt_include_optimizer=1)\n"
                                        "from nemo.lightning import MegatronStrategy\n",
    "function import": "def f():\n    from nemo.lightning import MegatronStrategy\n"
                       "    return MegatronStrategy(ckpt_include_optimizer=False)\n",
    "shadowed in its scope": "from nemo.lightning import MegatronStrategy\ndef f(MegatronStrategy):\n"
                             "    return MegatronStrategy(ckpt_include_optimizer=True)\n",
    "class attribute not seen by methods": NL + "class A:\n    nl = None\n    def f(self):\n"
                                            "        return nl.MegatronStrategy(ckpt_include_optimizer=True)\n",
    "rebound after import": NL + "nl.MegatronStrategy(ckpt_async_save='yes')\nnl = None\n",
    "wrappers": NL + "import nemo_run as run\nimport functools\n"
                "a = run.Config(nl.MegatronStrategy, ckpt_async_save='yes', ckpt_parallel_load=1.5)\n"
                "b = functools.partial(nl.MegatronStrategy, ckpt_torch_dist_multiproc=-1)\n"
                "c = run.Partial(nl.MegatronStrategy)\n",
    "pytest.raises": NL + "import pytest\nwith pytest.raises(ValueError):\n"
                     "    nl.MegatronStrategy(ckpt_load_main_params=True)\nnl.MegatronStrategy(ckpt_load_main_params=True)\n",
    "enum": NL + "from megatron.core.dist_checkpointing.validation import StrictHandling\n"
            "from megatron.core.dist_checkpointing import validation as v\n"
            "nl.MegatronStrategy(ckpt_load_strictness=StrictHandling.LOG_ALL)\n"
            "nl.MegatronStrategy(ckpt_load_strictness=v.StrictHandling.NOPE, ckpt_load_main_params=True)\n",
    "unicode columns": NL + "s = 'été'; t = nl.MegatronStrategy(ckpt_include_optimizer=True, save_ckpt_format='torch_dis')\n",
    "literals": NL + "nl.MegatronStrategy(save_ckpt_format='za' 'rr', ckpt_async_save=f'{x}', ckpt_parallel_save=b'x',\n"
                "    ckpt_parallel_load=-True, ckpt_torch_dist_multiproc=+2.0, ckpt_save_optimizer=None, "
                "ckpt_load_optimizer=..., ckpt_assume_constant_structure=1j, save_ckpt_format_x=r'zarr')\n",
    "removed argument layout": NL + "s = nl.MegatronStrategy(\r\n\tckpt_include_optimizer=False,  # x\r\n)\r\n",
    "comprehension and lambda": NL + "a = [nl.MegatronStrategy(ckpt_include_optimizer=x) for x in (1,)]\n"
                                "b = lambda s=nl.MegatronStrategy(ckpt_load_on_device=1): s\n",
    "kwargs": NL + "nl.MegatronStrategy(ckpt_load_main_params=True, **extra)\n",
    "parentheses and continuations": NL + "nl.MegatronStrategy(ckpt_include_optimizer=(  # why\n    False\n),\n"
                                     "    save_ckpt_format = \\\n  ('zar'), ckpt_async_save=('yes'))\n",
}


@pytest.mark.parametrize("name", sorted(SAME_AS_LIBCST))
def test_ast_detection_matches_libcst(name):
    import ast

    from migrator.python import ast_calls
    from migrator.python.lint import _AstChecker, _cst_check

    text = SAME_AS_LIBCST[name]
    target = resolve_target("nemo=2.0")
    calls = ast_calls.find_calls(ast.parse(text), text, TABLE, "train.py")  # the ast path takes every one of them
    fast = _AstChecker(text, "train.py", TABLE, target, None, 0).run(calls)
    reference = _cst_check(text, "train.py", TABLE, target, None, 0)
    assert fast == reference
    assert lint(text, target="nemo=2.0") == sorted(reference, key=lambda d: d.sort_key)


def test_files_the_ast_path_declines_go_to_libcst():
    from migrator.python import ast_calls

    # `global` rebinds names across scopes: LibCST's scope analysis decides
    text = HEAD + "def f():\n    global nl\ns = nl.MegatronStrategy(ckpt_include_optimizer=True)\n"
    with pytest.raises(ast_calls.Unsupported):
        ast_calls.find_calls(__import__("ast").parse(text), text, TABLE, "train.py")
    (finding,) = lint(text)
    assert (finding.code, finding.location.row, finding.location.column) == ("NM108", 4, 25)
