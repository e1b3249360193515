"""Project configuration: nemo-migrator.toml / [tool.nemo-migrator], discovery, precedence, CLI overrides, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.engine import project as proj
from migrator.engine.runner import LintOptions
from migrator.engine.selection import Selection
from migrator.errors import MigratorError
from migrator.versions import Target, Version
from tests.conftest import run_cli

BAD = "model:\n  dist_ckpt_format: zarr\n  dist_ckpt_parallel_load: \"False\"\n"  # NM106, NM101 (+ NM111 on row 1)


@pytest.fixture
def repo(tmp_path: Path):
    """A project folder with conf/bad.yaml and conf/legacy/old.yaml (both BAD)."""
    (tmp_path / "conf" / "legacy").mkdir(parents=True)
    (tmp_path / "conf" / "bad.yaml").write_text(BAD)
    (tmp_path / "conf" / "legacy" / "old.yaml").write_text(BAD)
    return tmp_path


def lint(cwd: Path, *args: str):
    proc = run_cli("lint", "--output-format", "json", *args, cwd=cwd)
    findings = json.loads(proc.stdout) if proc.stdout.strip().startswith("[") else None
    return proc, findings


def codes(findings) -> set[tuple[str, str]]:
    return {(Path(f["filename"]).name, f["code"]) for f in findings}


def test_select_ignore_and_per_file_ignores_from_nemo_migrator_toml(repo):
    (repo / "nemo-migrator.toml").write_text(
        'ignore = ["NM111"]\n[per-file-ignores]\n"conf/legacy/*.yaml" = ["NM106", "invalid-type"]\n')
    proc, findings = lint(repo, "conf")
    assert codes(findings) == {("bad.yaml", "NM106"), ("bad.yaml", "NM101")}
    assert proc.returncode == 1


def test_pyproject_tool_table_from_a_subfolder(repo):
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.nemo-migrator]\nselect = ["NM106"]\n')
    proc, findings = lint(repo / "conf", "bad.yaml")  # found by walking up from the current directory
    assert codes(findings) == {("bad.yaml", "NM106")}


def test_pyproject_without_the_table_is_skipped_and_the_standalone_file_wins(repo, tmp_path):
    (repo / "nemo-migrator.toml").write_text('select = ["NM101"]\n')
    (repo / "conf" / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no [tool.nemo-migrator]: skipped
    _, findings = lint(repo / "conf", "bad.yaml")
    assert codes(findings) == {("bad.yaml", "NM101")}
    (repo / "pyproject.toml").write_text('[tool.nemo-migrator]\nselect = ["NM106"]\n')
    proc, findings = lint(repo, "conf/bad.yaml")
    assert codes(findings) == {("bad.yaml", "NM101")}  # same folder: nemo-migrator.toml wins ...
    assert "[tool.nemo-migrator] is ignored because" in proc.stderr  # ... and says so


def test_command_line_overrides_the_file(repo):
    (repo / "nemo-migrator.toml").write_text(
        'select = ["NM106", "NM107", "NM101"]\nignore = ["NM101"]\nfail-on = "error"\ntarget = "megatron-core=0.15"\n')
    proc, findings = lint(repo, "conf/bad.yaml")
    assert codes(findings) == {("bad.yaml", "NM107")} and proc.returncode == 0  # deprecated (0.15) is a warning
    proc, findings = lint(repo, "conf/bad.yaml", "--fail-on", "warning")
    assert proc.returncode == 1
    _, findings = lint(repo, "conf/bad.yaml", "--target", "megatron-core=0.16")
    assert codes(findings) == {("bad.yaml", "NM106")}
    _, findings = lint(repo, "conf/bad.yaml", "--select", "NM101")  # a --select replaces select and ignore
    assert codes(findings) == {("bad.yaml", "NM101")}
    _, findings = lint(repo, "conf/bad.yaml", "--ignore", "NM107")  # an --ignore adds to the file's
    assert codes(findings) == set()
    _, findings = lint(repo, "conf/bad.yaml", "--isolated")
    assert codes(findings) == {("bad.yaml", "NM106"), ("bad.yaml", "NM101"), ("bad.yaml", "NM111")}


def test_target_and_source_as_tables(repo):
    (repo / "nemo-migrator.toml").write_text('select = ["NM107", "NM106"]\n[target]\nmegatron-core = "0.15"\n'
                                             '[source]\nnemo = "1.23"\n')
    _, findings = lint(repo, "conf/bad.yaml")
    assert codes(findings) == {("bad.yaml", "NM107")}


def test_exclude_skips_walked_files_and_named_files_only_with_force_exclude(repo):
    (repo / "nemo-migrator.toml").write_text('exclude = ["legacy"]\nselect = ["NM106"]\n')
    _, findings = lint(repo, "conf")
    assert codes(findings) == {("bad.yaml", "NM106")}
    _, findings = lint(repo, "conf/legacy/old.yaml")
    assert codes(findings) == {("old.yaml", "NM106")}  # named explicitly: linted ...
    proc, findings = lint(repo, "--force-exclude", "conf/legacy/old.yaml")
    assert findings == [] and proc.returncode == 0  # ... unless --force-exclude (what the pre-commit hooks pass)


@pytest.mark.parametrize("content, message", [
    ('selct = ["NM1"]\n', "unknown setting 'selct'; did you mean 'select'?"),
    ('fail_on = "error"\n', "unknown setting 'fail_on'; did you mean 'fail-on'?"),
    ('output-format = "json"\n', "unknown setting 'output-format'"),
    ('select = ["NM999"]\n', "select: no rule matches NM999"),
    ('select = "NM1"\nignore = [1]\n', "ignore: expected a list of strings"),
    ('fail-on = "fatal"\n', "fail-on: expected one of error, warning, info, got 'fatal'"),
    ('target = "nemo=two"\n', "target: not a version number: 'two'"),
    ('target = "cuda=12"\n', "target: expected COMPONENT=VERSION"),
    ('source = "megatron-core=0.9"\n', "source: only nemo can be given"),
    ('[target]\nnemo = 2.1\n', "target: versions must be strings"),
    ('per-file-ignores = ["x"]\n', "per-file-ignores: expected a table"),
    ('[per-file-ignores]\n"conf/*.yaml" = ["NM999"]\n', "per-file-ignores.'conf/*.yaml': no rule matches NM999"),
    ('[pairs]\n"conf/bad.yaml" = "train.py"\n', "pairs.'conf/bad.yaml': "),
    ('[pairs]\n"conf/bad.yaml" = "train.sh"\n', "'train.sh' is not a Python script"),
    ('select = [\n', "invalid TOML"),
])
def test_bad_settings_exit_2_naming_the_file_and_key(repo, content, message):
    (repo / "nemo-migrator.toml").write_text(content)
    proc = run_cli("lint", "conf/bad.yaml", cwd=repo)
    assert proc.returncode == 2, proc.stdout
    assert f"nemo-migrate: error: {repo / 'nemo-migrator.toml'}: " in proc.stderr and message in proc.stderr, proc.stderr


def test_bad_setting_in_pyproject_names_the_table(repo):
    (repo / "pyproject.toml").write_text('[tool.nemo-migrator]\nfail-on = 3\n')
    proc = run_cli("lint", "conf/bad.yaml", cwd=repo)
    assert proc.returncode == 2
    assert f"{repo / 'pyproject.toml'}: [tool.nemo-migrator] fail-on: expected one of" in proc.stderr
    (repo / "pyproject.toml").write_text('[tool]\nnemo-migrator = "strict"\n')
    proc = run_cli("lint", "conf/bad.yaml", cwd=repo)
    assert proc.returncode == 2 and "tool.nemo-migrator must be a table" in proc.stderr


@pytest.mark.parametrize("pattern, path, expected", [
    ("legacy", "conf/legacy/old.yaml", True),
    ("legacy", "legacy.yaml", False),
    ("*.yml", "a/b/c.yml", True),
    ("conf/*.yaml", "conf/a.yaml", True),
    ("conf/*.yaml", "conf/sub/a.yaml", False),
    ("conf/**/*.yaml", "conf/a.yaml", True),
    ("conf/**/*.yaml", "conf/x/y/a.yaml", True),
    ("conf/", "conf/x/y/a.yaml", True),
    ("/conf/a.yaml", "conf/a.yaml", True),
    ("gpt_[0-9].yaml", "x/gpt_7.yaml", True),
    ("gpt_[!0-9].yaml", "x/gpt_7.yaml", False),
    ("a?.yaml", "ab.yaml", True),
    ("a?.yaml", "a/.yaml", False),
])
def test_glob_matching(pattern, path, expected):
    assert proj.matches_any((pattern,), path) is expected


def test_pairs_point_a_script_at_its_config_and_partners_are_added(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "gpt.yaml").write_text("model: {}\n")
    (tmp_path / "train.py").write_text("import nemo\n")
    (tmp_path / "nemo-migrator.toml").write_text('[pairs]\n"conf/gpt.yaml" = "train.py"\n')
    monkeypatch.chdir(tmp_path)
    config = proj.load_project_config()
    assert config.pairs == (("conf/gpt.yaml", "train.py"),)
    options = LintOptions(target=Target(Version.parse("2.5"), Version.parse("0.16")), pairs=config.pairs,
                          root=config.root)
    assert options.for_file("train.py").config_path == tmp_path / "conf" / "gpt.yaml"
    assert options.for_file("conf/gpt.yaml").config_path is None
    explicit = LintOptions(target=options.target, pairs=config.pairs, root=config.root, config_path=Path("x.yaml"))
    assert explicit.for_file("train.py").config_path == Path("x.yaml")  # `lint --config` wins over pairs
    assert proj.consistency_partners(["conf/gpt.yaml"], options) == ["train.py"]
    assert proj.consistency_partners(["conf/gpt.yaml", "train.py"], options) == []


def test_a_script_paired_twice_is_an_error(tmp_path):
    for name in ("a.yaml", "b.yaml", "train.py"):
        (tmp_path / name).write_text("x: 1\n")
    path = tmp_path / "nemo-migrator.toml"
    with pytest.raises(MigratorError, match="train.py is already paired with a.yaml"):
        proj.parse_config({"pairs": {"a.yaml": "train.py", "b.yaml": ["train.py"]}}, path)


def test_per_file_ignores_extend_the_selection():
    options = LintOptions(target=Target(Version.parse("2.5"), Version.parse("0.16")),
                          selection=Selection.parse(None, ["NM111"]),
                          per_file_ignores=(("legacy/", ("NM106",)),), root=Path.cwd())
    assert options.for_file("legacy/x.yaml").selection.ignore == ("NM111", "NM106")
    assert options.for_file("other/x.yaml").selection.ignore == ("NM111",)


def test_pairs_end_to_end_with_the_python_lint(tmp_path, monkeypatch):
    """`lint conf/gpt.yaml` (what the hook passes when only the config changed) also lints the paired script
    against that config (NM120), and `--fix` never touches the script it was not given."""
    from click.testing import CliRunner

    from migrator.cli.lint_cmd import lint as lint_command

    script = "from nemo import lightning as nl\n\ns = nl.MegatronStrategy(ckpt_parallel_load=True)\n"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "gpt.yaml").write_text("model:\n  dist_ckpt_parallel_load: off\n")
    (tmp_path / "train.py").write_text(script)
    (tmp_path / "nemo-migrator.toml").write_text('[pairs]\n"conf/gpt.yaml" = "train.py"\n')
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(lint_command, ["--output-format", "json", "conf/gpt.yaml"])
    findings = json.loads(result.output)
    mismatch = [f for f in findings if f["filename"] == "train.py" and f["code"] == "NM120"]
    assert any("ckpt_parallel_load=True disagrees with model.dist_ckpt_parallel_load: False" in f["message"]
               for f in mismatch), findings

    CliRunner().invoke(lint_command, ["--fix", "--unsafe-fixes", "conf/gpt.yaml"])
    assert (tmp_path / "train.py").read_text() == script  # a partner is reported, never fixed
    assert (tmp_path / "conf" / "gpt.yaml").read_text() == "model:\n  dist_ckpt_parallel_load: False\n"
    CliRunner().invoke(lint_command, ["--fix", "--unsafe-fixes", "train.py"])
    assert "ckpt_parallel_load=False" in (tmp_path / "train.py").read_text()  # given: fixed against its config
