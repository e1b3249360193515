"""`migrate-config` / `nemo-migrate config` / `nemo-migrate patch` as real subprocesses: emit, -o, json, --strip,
--patch, --diff, --check, exit codes, idempotence, line endings, files left untouched."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import NEMO_CONFIGS, PROJECT_FIXTURES, need_shared, run_cli

PY = PROJECT_FIXTURES / "python"
HEAD = "from nemo import lightning as nl\n"
ZARR = "model:\n  dist_ckpt_format: zarr\n  dist_ckpt_parallel_save: false\n"


def migrate(*args: str, **kwargs):
    return run_cli(*args, entry="migrate-config", **kwargs)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    shutil.copytree(PY, tmp_path / "proj")
    return tmp_path / "proj"


# ================================================================================================ emit
def test_emit_prints_the_snippet_and_both_spellings_agree(work):
    proc = migrate(str(work / "old_config.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (PY / "expected" / "old_config_emitted.py").read_text()
    assert proc.stderr == ""  # notes only: no warnings
    same = run_cli("config", str(work / "old_config.yaml"), "--emit-python")
    assert same.stdout == proc.stdout and same.returncode == 0
    compile(proc.stdout, "snippet.py", "exec")


def test_emit_to_a_file(work):
    out = work / "strategy_snippet.py"
    proc = migrate(str(work / "old_config.yaml"), "--emit-python", "-o", str(out))
    assert proc.returncode == 0 and proc.stdout == "" and f"wrote {out}" in proc.stderr
    assert out.read_text() == (PY / "expected" / "old_config_emitted.py").read_text()


def test_warnings_go_to_stderr_and_into_the_code(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text("model:\n  dist_ckpt_load_strictness: log_all\n")
    proc = migrate(str(config), "--target", "nemo=2.0")
    assert proc.returncode == 0
    assert f"migrate-config: warning: {config}:2:3: NM109 dist_ckpt_load_strictness" in proc.stderr
    assert "# warning (NM109, line 2): dist_ckpt_load_strictness" in proc.stdout
    assert "ckpt_load_strictness=" not in proc.stdout


def test_json_output(work):
    proc = migrate(str(work / "old_config.yaml"), "--output-format", "json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["refused"] is False
    assert {a["name"]: a["value"] for a in data["arguments"]}["ckpt_parallel_save_optim"] is True


def test_zarr_is_refused_with_exit_1_and_the_conversion_command_unless_forced(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text(ZARR)
    proc = migrate(str(config))
    assert proc.returncode == 1 and proc.stdout == ""
    assert "NM106" in proc.stderr and "nemo-migrate convert" in proc.stderr and "--force" in proc.stderr
    proc = migrate(str(config), "--output-format", "json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["refused"] is True
    proc = migrate(str(config), "--force")
    assert proc.returncode == 0 and 'save_ckpt_format="zarr",  # removed in megatron-core 0.16 (--force)' in proc.stdout
    assert "warning" in proc.stderr
    assert migrate(str(config), "--target", "megatron-core=0.15").returncode == 0  # only deprecated there


@pytest.mark.parametrize("content, args, message", [
    (None, (), "No such file"),
    ("jobs:\n  build: {}\n", (), "not a NeMo 1.0 config"),
    ("model:\n  a: [1\n", (), "YAML syntax error"),
    ("model:\n  dist_ckpt_format: torch_dist\n", ("--target", "nemo=two"), "not a version number"),
    ("model:\n  dist_ckpt_format: torch_dist\n", ("extra.py",), "need --patch"),
    ("model:\n  dist_ckpt_format: torch_dist\n", ("--patch",), "--patch needs"),
    ("model:\n  dist_ckpt_format: torch_dist\n", ("--check",), "apply to --patch and --strip"),
])
def test_bad_input_exits_2(tmp_path, content, args, message):
    config = tmp_path / "old.yaml"
    if content is not None:
        config.write_text(content)
    proc = migrate(str(config), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_the_real_gpt_config_emits(tmp_path):
    proc = migrate(str(need_shared(NEMO_CONFIGS / "megatron_gpt_config.yaml")))
    assert proc.returncode == 0
    assert "    ckpt_parallel_save_optim=True,  # same value as dist_ckpt_parallel_dist_opt" in proc.stdout
    assert "    ckpt_load_directly_on_device=True," in proc.stdout and "    ckpt_load_on_device" not in proc.stdout
    proc = migrate(str(NEMO_CONFIGS / "megatron_mamba_config.yaml"))
    assert proc.returncode == 1 and "nemo-migrate convert" in proc.stderr


# ================================================================================================ strip
def test_strip_removes_whole_lines_keeps_every_other_byte_and_a_backup(tmp_path):
    original = ("# top\nexp_manager:\n  checkpoint_callback_params:\n    save_top_k: 3\n"
                "    async_save: False   # sync\nmodel:\n  mcore_gpt: True\n  num_layers: 2   # keep\n"
                "  dist_ckpt_format: 'torch_dist'\n  dist_ckpt_parallel_load: False # old default\n"
                "  dist_ckpt_load_strictness: null\n  other: ~\n")
    config = tmp_path / "old.yaml"
    config.write_bytes(original.replace("\n", "\r\n").encode())
    proc = migrate(str(config), "--strip", "--diff", "-o", str(tmp_path / "s.py"))
    assert proc.returncode == 1 and "-  dist_ckpt_format: 'torch_dist'" in proc.stdout
    assert config.read_bytes() == original.replace("\n", "\r\n").encode()  # --diff writes nothing
    proc = migrate(str(config), "--strip", "-o", str(tmp_path / "s.py"))
    assert proc.returncode == 0, proc.stderr
    expected = ("# top\nexp_manager:\n  checkpoint_callback_params:\n    save_top_k: 3\nmodel:\n"
                "  mcore_gpt: True\n  num_layers: 2   # keep\n  other: ~\n")
    assert config.read_bytes() == expected.replace("\n", "\r\n").encode()
    assert (tmp_path / "old.yaml.bak").read_bytes() == original.replace("\n", "\r\n").encode()
    assert "stripped 4 keys" in proc.stderr
    # the snippet carries what was removed
    assert "ckpt_parallel_load=False" in (tmp_path / "s.py").read_text()
    proc = migrate(str(config), "--strip", "--check", "-o", str(tmp_path / "s2.py"))
    assert proc.returncode == 0 and "nothing to strip" in proc.stderr


def test_strip_keeps_keys_it_cannot_remove_alone_and_no_backup(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text("exp_manager:\n  checkpoint_callback_params:\n    async_save: False\n"
                      "model: {dist_ckpt_parallel_load: false, num_layers: 2}\n")
    proc = migrate(str(config), "--strip", "--no-backup", "-o", str(tmp_path / "s.py"))
    assert proc.returncode == 0
    assert "keeps model.dist_ckpt_parallel_load: other content shares its line" in proc.stderr
    assert "keeps exp_manager.checkpoint_callback_params.async_save: removing it would leave its mapping empty" \
        in proc.stderr
    assert not (tmp_path / "old.yaml.bak").exists()


def test_strip_is_not_done_when_the_migration_is_refused(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text(ZARR)
    assert migrate(str(config), "--strip").returncode == 1
    assert config.read_text() == ZARR and not (tmp_path / "old.yaml.bak").exists()


# ================================================================================================ patch
def test_patch_check_diff_write_and_idempotence(work):
    config = str(work / "old_config.yaml")
    before = {p: p.read_bytes() for p in work.rglob("*.py")}
    proc = migrate(config, "--patch", str(work), "--check")
    assert proc.returncode == 1 and f"would patch {work / 'train_direct.py'}" in proc.stderr
    proc = run_cli("patch", "--config", config, str(work / "recipe.py"), "--diff")
    assert proc.returncode == 1 and "+        ckpt_parallel_save_optim=True," in proc.stdout
    assert {p: p.read_bytes() for p in work.rglob("*.py")} == before  # --check and --diff write nothing
    proc = migrate(config, "--patch", str(work / "train_direct.py"), str(work / "recipe.py"),
                   str(work / "aliases.py"), str(work / "docs_migration_page.py"), str(work / "not_nemo.py"))
    assert proc.returncode == 0, proc.stderr
    for name in ("train_direct.py", "recipe.py", "aliases.py", "docs_migration_page.py"):
        assert (work / name).read_text() == (PY / "expected" / name).read_text()
    assert (work / "not_nemo.py").read_bytes() == before[work / "not_nemo.py"]
    assert "4 files patched, 1 unchanged" in proc.stderr
    again = migrate(config, "--patch", str(work), "--check")
    assert again.returncode == 0, again.stderr  # idempotent; the two uneditable calls do not fail --check
    assert "2 calls not edited" in again.stderr and "passes **strategy_kwargs" in again.stderr


def test_patch_keeps_crlf(tmp_path, work):
    path = tmp_path / "crlf.py"
    path.write_bytes((HEAD + "s = nl.MegatronStrategy(\n    a=1,\n)\n").replace("\n", "\r\n").encode())
    assert run_cli("patch", "--config", str(work / "old_config.yaml"), str(path)).returncode == 0
    data = path.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n") > 5 and b"ckpt_async_save=False," in data


def test_a_file_that_does_not_parse_is_left_untouched_and_reported(tmp_path, work):
    broken = tmp_path / "broken.py"
    broken.write_text(HEAD + "s = nl.MegatronStrategy(\n    ckpt_async_save=True,\n")
    good = tmp_path / "good.py"
    good.write_text(HEAD + "s = nl.MegatronStrategy()\n")
    proc = run_cli("patch", "--config", str(work / "old_config.yaml"), str(broken), str(good))
    assert proc.returncode == 2
    assert "broken.py" in proc.stderr and "Python syntax error" in proc.stderr and "left untouched" in proc.stderr
    assert broken.read_text().endswith("ckpt_async_save=True,\n")
    assert "ckpt_async_save=False" in good.read_text()  # the other file is still patched


def test_patch_refuses_a_zarr_config_and_writes_nothing(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text(ZARR)
    path = tmp_path / "train.py"
    path.write_text(HEAD + "s = nl.MegatronStrategy()\n")
    proc = migrate(str(config), "--patch", str(path))
    assert proc.returncode == 1 and "refusing" in proc.stderr
    assert path.read_text() == HEAD + "s = nl.MegatronStrategy()\n"


def test_patch_missing_path_is_exit_2(work):
    proc = run_cli("patch", "--config", str(work / "old_config.yaml"), str(work / "nope.py"))
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_patch_then_strip(work):
    config = work / "old_config.yaml"
    proc = migrate(str(config), "--patch", str(work / "docs_migration_page.py"), "--strip")
    assert proc.returncode == 0, proc.stderr
    assert "dist_ckpt_" not in config.read_text() and (work / "old_config.yaml.bak").exists()
    # with an uneditable call, the YAML is not stripped: its values are still needed by hand
    (work / "old_config.yaml.bak").rename(config)
    proc = migrate(str(config), "--patch", str(work / "uneditable.py"), "--strip")
    assert "not stripping" in proc.stderr and "dist_ckpt_format" in config.read_text()


def test_the_docs_show_the_real_snippet():
    """docs/rewriter.md quotes `migrate-config conf/megatron_gpt_config.yaml` verbatim: keep it current."""
    proc = migrate(str(need_shared(NEMO_CONFIGS / "megatron_gpt_config.yaml")))
    doc = (PROJECT_FIXTURES.parent / "docs" / "rewriter.md").read_text(encoding="utf-8")
    assert proc.stdout in doc
