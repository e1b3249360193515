"""Follow-ups of the last review (issue 14, part "tidy"): the Megatron-Bridge lint finds code with Python's `ast`
(linting loads neither LibCST nor torch nor megatron), agrees with LibCST's analysis on every spelling, and the two
readings of `--target megatron-bridge=X` are named where a user meets them."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from migrator.cli.options import resolve_lint_targets
from migrator.engine.runner import LintOptions
from migrator.engine.table import load_table
from migrator.python import bridge_lint
from migrator.python.ast_calls import Unsupported
from migrator.python.bridge_ast import find_bridge_code
from tests.conftest import ROOT, run_cli

TABLE = load_table()
IMPORT = "from megatron.bridge.training.config import CheckpointConfig, ConfigContainer\n"
RECIPE = ("from megatron.bridge.recipes.llama import llama3_8b_pretrain_config\n"
          "from megatron.bridge.training.config import CheckpointConfig, ConfigContainer\n\n\n"
          "def main():\n"
          "    cfg = llama3_8b_pretrain_config()\n"
          "    cfg.checkpoint.ckpt_parallel_load = True\n"
          "    cfg.checkpoint.storage_writers_per_rank = 4\n"
          "    cfg.checkpoint.ckpt_format = \"zar\"\n"
          "    other = ConfigContainer(checkpoint=CheckpointConfig(save_ckpt_format='torch_dist', async_save=True))\n"
          "    return cfg, other\n")


def imported_packages(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the installed `nemo-migrate` under `python -X importtime` and list the top-level packages it loaded."""
    exe = Path(sys.executable).parent / "nemo-migrate"
    proc = subprocess.run([sys.executable, "-X", "importtime", str(exe), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    loaded = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
              if line.startswith("import time:") and "|" in line}
    return proc, loaded


def test_linting_bridge_code_loads_neither_libcst_nor_torch_nor_megatron(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(RECIPE)
    imported_packages("lint", str(script))  # warms the rule-table cache (a cold one validates it with pydantic)
    proc, loaded = imported_packages("lint", str(script), "--target", "megatron-bridge=0.3",
                                     "--output-format", "json")
    found = [(d["code"], d["location"]["row"], d["location"]["column"]) for d in json.loads(proc.stdout)]
    assert found == [("NM201", 7, 20), ("NM205", 8, 20), ("NM202", 9, 34), ("NM204", 10, 40), ("NM201", 10, 57)]
    assert {"migrator", "click", "ast"} <= loaded  # the listing is real: what the lint does load is in it
    assert not loaded & {"libcst", "torch", "megatron", "pydantic", "numpy"}, sorted(loaded)
    # fixing re-checks the result with LibCST (a fix must keep the file parseable): loaded there, only there
    fixed, loaded = imported_packages("lint", str(script), "--unsafe-fixes", "--fix")
    assert "libcst" in loaded and not loaded & {"torch", "megatron"}
    assert "cfg.checkpoint.fully_parallel_load = True\n" in script.read_text(), fixed.stderr
    assert "CheckpointConfig(ckpt_format='torch_dist', async_save=True)" in script.read_text()


# every spelling the Bridge lint reads, and the ones that must not count: Python's ast and LibCST's analysis agree
SAME_AS_LIBCST = {
    "direct": IMPORT + "c = CheckpointConfig(save_ckpt_format='torch_dist', fully_paralel_load=1, ckpt_format='zarr')\n",
    "module alias": "import megatron.bridge.training.config as bc\n"
                    "cfg = bc.ConfigContainer(checkpoint=bc.CheckpointConfig(async_save=True, ckpt_step=5))\n",
    "class alias": "from megatron.bridge.training.config import CheckpointConfig as CC\nCC(storage_writers_per_rank=2)\n",
    "dotted import": "import megatron.bridge\nmegatron.bridge.training.config.CheckpointConfig(save_ckpt_format='x')\n",
    "local class": "class CheckpointConfig:\n    pass\nCheckpointConfig(nonsense=1)\n",
    "shadowed in a function": IMPORT + "def f(CheckpointConfig):\n    return CheckpointConfig(nonsense=1)\n",
    "import below the call": "CheckpointConfig(nonsense=1)\n" + IMPORT,
    "recipe assignments": "from megatron.bridge.recipes.llama import llama3_8b_pretrain_config as recipe\n"
                          "cfg = recipe()\ncfg.checkpoint.ckpt_parallel_load = True\n"
                          "cfg.checkpoint.ckpt_format = ('zar')\ncfg.checkpoint.save_interval: int = 'x'\n"
                          "a.checkpoint.most_recent_k = b.checkpoint.async_save = 'yes'\n"
                          "cfg.checkpoint.ckpt_format += 'x'\n(cfg.checkpoint).fully_parallel_load = None\n",
    "spaced dotted import": "from megatron . bridge.recipes import x\ncfg.checkpoint.ckpt_parallel_load = True\n",
    "no Bridge import": "cfg.checkpoint.ckpt_parallel_load = True\nCheckpointConfig = None\n",
    "bound variable": IMPORT + "ckpt = CheckpointConfig(save='/x')\nckpt.ckpt_parallel_load = True\n"
                      "ckpt.async_save = True\nother = ckpt2 = CheckpointConfig()\nckpt2.nonsense = 1\n",
    "assigned field not judged in a call": IMPORT + "c = CheckpointConfig(async_save=True)\nc.save = '/ckpt'\n",
    "kwargs and args": IMPORT + "CheckpointConfig(async_save=True, **extra)\nCheckpointConfig(*a, async_save=True)\n",
    "literals": IMPORT + "CheckpointConfig(save_interval=-True, most_recent_k=+2.0, async_save=None, ckpt_format=b'x',\n"
                "    fully_parallel_load=..., fully_parallel_save=1j, ckpt_step=-(3), save=f'{x}', load='a' 'b',\n"
                "    ckpt_assume_constant_structure=r'zarr', dist_ckpt_strictness='log' 'all')\n",
    "nested calls": IMPORT + "CheckpointConfig(save=CheckpointConfig(async_save=True), async_save=True)"
                     "(CheckpointConfig(ckpt_step=1))\n",
    "unicode columns and BOM": "\ufeff" + IMPORT.rstrip("\n") + "; s = 'été'; c = CheckpointConfig(ckpt_format='zar',"
                               " fully_paralel_load=True)\n",
    "layouts": IMPORT + "c = CheckpointConfig(\r\n    ckpt_format = \\\n  ('zar'),  # why\r\n"
               "    async_save=(  # x\n  True\n))\n",
    "in classes, lambdas and comprehensions": IMPORT + "class A:\n    c = CheckpointConfig(ckpt_step=1)\n"
                                               "    def f(self):\n        return [CheckpointConfig(ckpt_step=i) for i in x]\n"
                                               "g = lambda c=CheckpointConfig(nonsense=1): c\n",
    "relative import in a package": "from .training.config import CheckpointConfig\nCheckpointConfig(nonsense=1)\n",
}


def lint_both(text: str, target: str | None = "megatron-bridge=0.3", filename: str = "train.py"):
    nemo, bridge = resolve_lint_targets(target)
    options = LintOptions(target=nemo, bridge_target=bridge)
    body = text.removeprefix("\ufeff")
    shift = len(text) - len(body)
    checker = bridge_lint.BridgeChecker(filename, TABLE, bridge, shift)
    code = find_bridge_code(ast.parse(body), body, checker.classes, filename)  # the ast path takes all of them
    fast = bridge_lint.check_text(text, filename, TABLE, options)
    reference = bridge_lint.BridgeChecker(filename, TABLE, bridge, shift).run(
        bridge_lint._with_libcst(body, filename, checker.classes, shift))
    return code, fast, reference


@pytest.mark.parametrize("name", sorted(SAME_AS_LIBCST))
def test_ast_detection_matches_libcst(name):
    _, fast, reference = lint_both(SAME_AS_LIBCST[name])
    assert fast == reference


def test_the_cases_hold_findings_of_every_bridge_rule():
    found = {d.code for name in SAME_AS_LIBCST for d in lint_both(SAME_AS_LIBCST[name])[1]}
    assert found == {"NM201", "NM202", "NM203", "NM204", "NM205"}  # zarr is removed in 0.3: NM203


def test_what_is_judged_and_what_is_not():
    _, found, _ = lint_both(SAME_AS_LIBCST["recipe assignments"])
    # a value is reported at the value (without its parentheses); `a.checkpoint.x = b.checkpoint.y = ...` is two
    # assignments; `+=` is none the lint reads
    assert [(d.code, d.location.row, d.location.column, d.message.split(":")[0].split(" ")[0]) for d in found] == [
        ("NM201", 3, 16, "ckpt_parallel_load"), ("NM202", 4, 31, 'ckpt_format="zar"'),
        ("NM202", 5, 37, 'save_interval="x"'), ("NM202", 6, 56, 'most_recent_k="yes"'),
        ("NM202", 6, 56, 'async_save="yes"'), ("NM202", 8, 40, "fully_parallel_load=None")]
    assert lint_both(SAME_AS_LIBCST["no Bridge import"])[1] == []  # no import from megatron.bridge: not Bridge code
    _, found, _ = lint_both(SAME_AS_LIBCST["relative import in a package"], filename="pkg/mod.py")
    assert found == []  # a relative import outside a package names nothing


def test_relative_imports_inside_the_bridge_package(tmp_path):
    package = tmp_path / "megatron" / "bridge" / "recipes"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    path = package / "mine.py"
    text = ("from ..training.config import CheckpointConfig\nfrom ..training import config as c\n"
            "CheckpointConfig(nonsense=1)\nc.CheckpointConfig(ckpt_format='zar')\n")
    path.write_text(text)
    _, fast, reference = lint_both(text, filename=str(path))
    assert fast == reference and [(d.code, d.location.row) for d in fast] == [("NM201", 3), ("NM202", 4)]


def test_files_the_ast_path_declines_go_to_libcst():
    # `global` rebinds names across scopes: LibCST's scope analysis decides
    text = IMPORT + "def f():\n    global CheckpointConfig\nCheckpointConfig(nonsense=1)\n"
    body = text
    with pytest.raises(Unsupported):
        find_bridge_code(ast.parse(body), body, {"megatron.bridge.training.config.CheckpointConfig"}, "t.py")
    nemo, bridge = resolve_lint_targets("megatron-bridge=0.3")
    (finding,) = bridge_lint.check_text(text, "t.py", TABLE, LintOptions(target=nemo, bridge_target=bridge))
    assert (finding.code, finding.location.row, finding.location.column) == ("NM201", 4, 18)
    # a lone CR ends a line for Python and LibCST, not for `ast_calls`' row arithmetic
    text = IMPORT + "x = 1\rCheckpointConfig(nonsense=1)\n"
    (finding,) = bridge_lint.check_text(text, "t.py", TABLE, LintOptions(target=nemo, bridge_target=bridge))
    assert (finding.code, finding.location.row) == ("NM201", 3)


def test_a_syntax_error_in_bridge_code_is_one_line():
    proc = run_cli("lint", "-", "--stdin-filename", "t.py", input=IMPORT + "CheckpointConfig(\n")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "t.py:2:" in proc.stderr, proc.stderr
    assert "Python syntax error" in proc.stderr


# ================================================================================================ --target megatron-bridge=X
@pytest.mark.parametrize("command", [("nemo-migrate", "lint"), ("migrate-config",), ("nemo-migrate", "patch")])
def test_help_says_what_megatron_bridge_x_means_and_how_convert_differs(command):
    entry, *sub = command
    proc = run_cli(*sub, "--help", entry=entry)
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0
    assert "the one Megatron-Bridge release to judge against: X=0.3 means the newest known 0.3.x, X=0.3.0 " \
           "exactly that tag; default: the newest known release" in text, text
    assert "every 0.3.x tag must load the checkpoint" in text


@pytest.mark.parametrize("value, why", [
    ("0.3..0.6", "a range of release lines is for `nemo-migrate convert`"),
    ("0.9", "is not a release the rule table knows"),
    ("abc", "is not a version number"),
])
def test_a_bad_bridge_release_names_what_the_value_means(tmp_path, value, why):
    from tests.conftest import PROJECT_FIXTURES

    script = tmp_path / "train.py"
    script.write_text(RECIPE)
    for entry, args in (("nemo-migrate", ("lint", str(script))),
                        ("migrate-config", (str(PROJECT_FIXTURES / "examples" / "gpt_to_bridge.yaml"), "--to",
                                            "bridge"))):
        proc = run_cli(*args, "--target", f"megatron-bridge={value}", entry=entry)
        assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
        assert why in proc.stderr
        assert "here megatron-bridge=X is the one release configs and code are judged against: 0.3 means the " \
               "newest known 0.3.x, 0.3.0 exactly that tag (known: 0.2.0, " in proc.stderr, proc.stderr


def test_megatron_bridge_0_3_is_the_newest_0_3_release_for_lint_and_migrate_config():
    from migrator.cli.options import resolve_bridge_target
    from migrator.engine.bridge_table import load_bridge_table

    assert str(resolve_bridge_target("megatron-bridge=0.3").bridge) == "0.3.1"
    assert str(resolve_bridge_target("megatron-bridge=0.3.0").bridge) == "0.3.0"
    assert str(resolve_bridge_target(None).bridge) == load_bridge_table().newest.version
    assert str(resolve_lint_targets("megatron-bridge=0.3")[1].bridge) == "0.3.1"
