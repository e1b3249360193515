"""Emit and patch in-process: round-trip identity of every Python fixture, the patched fixtures against their
expected output, AST outside the strategy calls unchanged, idempotence, and the layouts where LibCST has traps."""
from __future__ import annotations

import ast

import libcst as cst
import pytest

from migrator.cli.options import resolve_source, resolve_target
from migrator.engine.table import load_table
from migrator.errors import MigratorError
from migrator.migrate.mapping import load_mapping, map_text
from migrator.python.emit import emit
from migrator.python.patch import patch_bytes
from tests.conftest import PROJECT_FIXTURES

TABLE = load_table()
PY = PROJECT_FIXTURES / "python"
EXPECTED = PY / "expected"
CONFIG = PY / "old_config.yaml"
FIXTURES = sorted(PY.rglob("*.py"))


def old_mapping(**kwargs):
    return load_mapping(CONFIG, TABLE, resolve_target(kwargs.get("target")), resolve_source(None),
                        force=kwargs.get("force", False))


def mapping_of(text: str, target: str | None = None):
    return map_text(text, "old.yaml", TABLE, resolve_target(target), resolve_source(None))


def patch(source: str | bytes, mapping=None, name: str = "train.py"):
    data = source.encode() if isinstance(source, str) else source
    return patch_bytes(data, name, mapping or old_mapping(), TABLE)


ALIASES = ("MegatronStrategy", "MS", "DeepMS")  # the names the fixtures import it under


def without_strategy_keywords(code: str) -> str:
    """The AST with the keyword arguments of every MegatronStrategy call / run.Config(MegatronStrategy, ...) removed
    (told apart by name with the standard library's ast, independently of the LibCST matching under test)."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            first = ast.unparse(node.args[0]) if node.args else ""
            if ast.unparse(node.func).endswith(ALIASES) or first.endswith("MegatronStrategy"):
                node.keywords = [k for k in node.keywords if k.arg is None]
    return ast.dump(tree)


# ================================================================================================ fixtures
def test_the_fixtures_are_there():
    names = {p.relative_to(PY).as_posix() for p in FIXTURES}
    assert {"train_direct.py", "recipe.py", "aliases.py", "uneditable.py", "not_nemo.py", "docs_migration_page.py",
            "expected/old_config_emitted.py"} <= names


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.relative_to(PY).as_posix())
def test_round_trip_identity(path):
    data = path.read_bytes()
    assert cst.parse_module(data).bytes == data


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.relative_to(PY).as_posix())
def test_patching_changes_only_the_strategy_calls_and_is_idempotent(path):
    original = path.read_text()
    result = patch(original, name=str(path))
    patched = result.patched.decode()
    compile(patched, str(path), "exec")
    assert without_strategy_keywords(patched) == without_strategy_keywords(original)
    assert patch(result.patched, name=str(path)).patched == result.patched  # a second run changes nothing


@pytest.mark.parametrize("name", ["train_direct.py", "recipe.py", "aliases.py", "docs_migration_page.py"])
def test_patched_fixture_matches_its_expected_output(name):
    result = patch((PY / name).read_text(), name=name)
    assert result.patched.decode() == (EXPECTED / name).read_text()


@pytest.mark.parametrize("name, calls", [("train_direct.py", 6), ("recipe.py", 2), ("aliases.py", 6),
                                         ("uneditable.py", 2), ("not_nemo.py", 0), ("docs_migration_page.py", 1)])
def test_calls_are_found_by_qualified_name(name, calls):
    assert len(patch((PY / name).read_text()).plans) == calls


def test_uneditable_calls_are_reported_not_edited():
    result = patch((PY / "uneditable.py").read_text())
    assert not result.changed
    reasons = sorted(p.blocked for p in result.blocked)
    assert reasons == ["passes **strategy_kwargs, which may already set these keywords",
                       "the value of ckpt_async_save is not a literal the tool can judge"]


# ================================================================================================ emit
def test_emit_matches_the_expected_snippet_and_compiles():
    code = emit(old_mapping())
    assert code == (EXPECTED / "old_config_emitted.py").read_text()
    compile(code, "snippet.py", "exec")


def test_emitted_keywords_are_the_mapping_and_patch_adds_exactly_them():
    m = old_mapping()
    tree = ast.parse(emit(m))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call))
    emitted = [(k.arg, ast.literal_eval(k.value)) for k in call.keywords]
    assert emitted == [(a.name, a.value) for a in m.arguments]
    patched = patch("from nemo import lightning as nl\ns = nl.MegatronStrategy()\n", m).patched.decode()
    call = next(n for n in ast.walk(ast.parse(patched)) if isinstance(n, ast.Call))
    assert [(k.arg, ast.literal_eval(k.value)) for k in call.keywords] == emitted


def test_emit_writes_warnings_and_omissions_as_comments():
    code = emit(mapping_of("model:\n  dist_ckpt_load_strictness: log_all\n  dist_ckpt_parallel_load: ${x}\n",
                           target="nemo=2.0"))
    assert "# warning (NM109, line 2): dist_ckpt_load_strictness" in code
    assert "# warning (NM112, line 3)" in code and "ckpt_load_strictness=" not in code
    assert code.rstrip().endswith("# trainer = nl.Trainer(strategy=strategy, ...)")


def test_emit_refuses_what_the_mapping_refuses():
    with pytest.raises(MigratorError, match="refusing to emit"):
        emit(mapping_of("model:\n  dist_ckpt_format: zarr\n"))


def test_emit_of_a_config_with_nothing_to_carry():
    code = emit(mapping_of("num_layers: 2\nmcore_gpt: false\n"))  # legacy: no NeMo 1.0 defaults to carry
    assert "strategy = nl.MegatronStrategy()\n" in code


# ================================================================================================ patch layouts
HEAD = "from nemo import lightning as nl\n"
ASYNC_ONLY = "exp_manager:\n  checkpoint_callback_params:\n    async_save: false\nmodel:\n  " \
             "dist_ckpt_parallel_load: true\n  dist_ckpt_parallel_save: true\n"


def one(source: str, config: str = ASYNC_ONLY) -> str:
    return patch(HEAD + source, mapping_of(config)).patched.decode().removeprefix(HEAD)


def test_trap_one_no_spaces_around_equals_and_trap_two_newline_before_paren():
    # lint-conventions section 2: the naive append gives `ckpt_async_save = True)` on the paren's line
    source = "s = nl.MegatronStrategy(\n    tensor_model_parallel_size=2,  # tp\n    pipeline_model_parallel_size=1,\n)\n"
    assert one(source) == (
        "s = nl.MegatronStrategy(\n    tensor_model_parallel_size=2,  # tp\n    pipeline_model_parallel_size=1,\n"
        "    ckpt_parallel_save=True,\n    ckpt_parallel_load=True,\n"
        "    ckpt_async_save=False,  # NeMo 2.0 defaults to True\n)\n")


def test_no_trailing_comma_stays_without_one():
    assert one("s = nl.MegatronStrategy(\n    ckpt_parallel_save=True,\n    ckpt_parallel_load=True\n)\n") == (
        "s = nl.MegatronStrategy(\n    ckpt_parallel_save=True,\n    ckpt_parallel_load=True,\n"
        "    ckpt_async_save=False  # NeMo 2.0 defaults to True\n)\n")


def test_one_line_stays_one_line_and_an_existing_value_is_updated_in_place_with_its_quotes():
    config = "model:\n  dist_ckpt_format: zarr\n"
    m = map_text(config, "old.yaml", TABLE, resolve_target("megatron-core=0.15"), resolve_source(None))
    out = patch(HEAD + "s = nl.MegatronStrategy(save_ckpt_format='torch_dist', tensor_model_parallel_size=1)\n",
                m).patched.decode().removeprefix(HEAD)
    assert out.startswith("s = nl.MegatronStrategy(save_ckpt_format='zarr', tensor_model_parallel_size=1, "
                          "ckpt_parallel_save=False, ckpt_parallel_load=False, ckpt_async_save=False)\n")


def test_comment_lines_before_the_paren_stay_after_the_last_old_argument():
    out = one("s = nl.MegatronStrategy(\n    a=1,\n    # b=2,\n)\n")
    assert out.startswith("s = nl.MegatronStrategy(\n    a=1,\n    # b=2,\n    ckpt_parallel_save=True,\n")


def test_an_empty_call_gets_one_argument_per_line_at_its_indentation():
    out = one("def f():\n    return nl.Trainer(\n        strategy=nl.MegatronStrategy(),\n    )\n")
    assert out == ("def f():\n    return nl.Trainer(\n        strategy=nl.MegatronStrategy(\n"
                   "            ckpt_parallel_save=True,\n            ckpt_parallel_load=True,\n"
                   "            ckpt_async_save=False,  # NeMo 2.0 defaults to True\n        ),\n    )\n")


def test_a_wrong_name_is_renamed_in_place():
    out = one("s = nl.MegatronStrategy(\n    ckpt_load_on_device=True,  # from the docs\n)\n",
              "num_layers: 2\nmcore_gpt: false\ndist_ckpt_load_on_device: false\n")
    assert out == "s = nl.MegatronStrategy(\n    ckpt_load_directly_on_device=False,  # from the docs\n)\n"


def test_equal_values_are_left_alone_and_strictness_enum_members_count_as_their_name():
    source = ("from megatron.core.dist_checkpointing.validation import StrictHandling\n"
              "s = nl.MegatronStrategy(ckpt_load_strictness=StrictHandling.LOG_ALL)\n")
    result = patch(HEAD + source, mapping_of("num_layers: 2\nmcore_gpt: false\ndist_ckpt_load_strictness: log_all\n"))
    assert not result.changed
    (plan,) = result.plans  # read as "log_all" and judged equal: not an unreadable value that blocks the call
    assert plan.call.values["ckpt_load_strictness"] == "log_all" and plan.changes == [] and plan.blocked is None


def test_a_form_feed_stays_in_its_row_for_indentation_and_fixes():
    source = "def make():\n    # section\x0c\n    if True:\n        return nl.MegatronStrategy()\n"
    out = patch(HEAD + source, mapping_of(CONFIG.read_text())).patched.decode()
    assert "\n            ckpt_parallel_load=False,  # NeMo 2.0 defaults to True\n" in out
    assert out.endswith("\n        )\n")  # indented from the call's own row, not the one above it


def test_bool_is_not_int_when_comparing():
    out = one("s = nl.MegatronStrategy(ckpt_parallel_save=1, ckpt_parallel_load=True, ckpt_async_save=False)\n")
    assert out == "s = nl.MegatronStrategy(ckpt_parallel_save=True, ckpt_parallel_load=True, ckpt_async_save=False)\n"


def test_crlf_latin1_and_bom_are_kept():
    crlf = (HEAD + "s = nl.MegatronStrategy(\n    a=1,\n)\n").replace("\n", "\r\n").encode()
    out = patch(crlf, mapping_of(ASYNC_ONLY)).patched
    assert b"\r\n    ckpt_async_save=False,  # NeMo 2.0 defaults to True\r\n)\r\n" in out
    assert out.count(b"\n") == out.count(b"\r\n")
    latin = ("# -*- coding: latin-1 -*-\n" + HEAD + "s = nl.MegatronStrategy(name='caf\xe9')\n").encode("latin-1")
    out = patch(latin, mapping_of(ASYNC_ONLY)).patched
    assert out.decode("latin-1").startswith("# -*- coding: latin-1 -*-") and "caf\xe9" in out.decode("latin-1")
    bom = b"\xef\xbb\xbf" + (HEAD + "s = nl.MegatronStrategy()\n").encode()
    assert patch(bom, mapping_of(ASYNC_ONLY)).patched.startswith(b"\xef\xbb\xbf" + HEAD.encode())


def test_relative_imports_inside_the_nemo_package_resolve(tmp_path):
    package = tmp_path / "nemo" / "collections" / "llm"
    package.mkdir(parents=True)
    for folder in (tmp_path / "nemo", tmp_path / "nemo" / "collections", package):
        (folder / "__init__.py").write_text("")
    source = "from ...lightning import MegatronStrategy\ns = MegatronStrategy()\n"
    result = patch_bytes(source.encode(), str(package / "api.py"), mapping_of(ASYNC_ONLY), TABLE)
    assert result.changed
    unrelated = patch_bytes(b"from .strategies import MegatronStrategy\ns = MegatronStrategy()\n",
                            str(tmp_path / "script.py"), mapping_of(ASYNC_ONLY), TABLE)
    assert not unrelated.plans  # not inside a package: the relative name cannot be NeMo's


def test_a_file_that_does_not_parse_is_an_error():
    with pytest.raises(MigratorError, match=r"train.py:2:\d+: Python syntax error"):
        patch(HEAD + "s = nl.MegatronStrategy(\n")
