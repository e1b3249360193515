"""The pre-commit hooks, for real: `pre-commit validate-manifest`, then `pre-commit try-repo <this checkout>` in a
temporary git repository, which builds the hook environment from the checkout (`language: python`).

Offline by construction: pip gets no index (PIP_NO_INDEX) and finds the dependencies in a wheelhouse repacked from
this test environment (tests/wheelhouse.py); the package itself is built from the checkout. try-repo takes the
checkout's committed files plus changes to tracked files (a new, never-added file is not seen until it is added).
Each try-repo builds a fresh environment (about 20 s on an idle machine), so the scenarios share two runs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import wheelhouse
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

ZARR = "model:\n  dist_ckpt_format: zarr\n"  # NM106 error, no safe fix
FIXABLE = "model:\n  dist_ckpt_parallel_load: off\n  dist_ckpt_parallel_save: yes\n"  # NM113 x2, safe fixes
FIXED = "model:\n  dist_ckpt_parallel_load: False\n  dist_ckpt_parallel_save: True\n"
CLEAN = "model:\n  dist_ckpt_format: torch_dist\n  dist_ckpt_parallel_load: True\n"
PAIRED = "model:\n  dist_ckpt_format: torch_dist\n  dist_ckpt_parallel_dist_opt: True\n"
# NeMo's migration page: dist_ckpt_parallel_dist_opt: True shown as ckpt_parallel_save_optim=False (NM120)
INVERTED = "from nemo import lightning as nl\n\nstrategy = nl.MegatronStrategy(ckpt_parallel_save_optim=False)\n"


def _section(output: str, hook_id: str) -> str:
    """The part of pre-commit's output that belongs to one hook (from its status line to the next one)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"- hook id: {hook_id}")) - 1
    end = next((i for i in range(start + 2, len(lines)) if lines[i].rstrip().endswith(("Passed", "Failed"))
                and "...." in lines[i]), len(lines))
    return "\n".join(lines[start:end])


def _status(output: str, name: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith(name + "....") or
                line.startswith(name + " ...."))
    return line.rsplit(".", 1)[-1].strip()


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--git-dir"], capture_output=True).returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: pre-commit try-repo needs one")
    wheels = wheelhouse.build(tmp_path_factory.mktemp("wheelhouse"), ["nemo-migrator", "hatchling"],
                              skip={"nemo-migrator"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PRE_COMMIT", "VIRTUAL_ENV"))}
    env.update({
        "PIP_CONFIG_FILE": os.devnull,  # no user/global pip configuration, no index: only the wheelhouse
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels[0].parent),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_COMPILE": "1",  # a throwaway environment: no .pyc compiling of every dependency
        "PRE_COMMIT_HOME": str(tmp_path_factory.mktemp("pre-commit-home")),
        "PRE_COMMIT_COLOR": "never",
    })
    return env


def pre_commit(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_manifest_is_valid():
    proc = subprocess.run([sys.executable, "-m", "pre_commit", "validate-manifest",
                           str(ROOT / ".pre-commit-hooks.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_manifest_fields():
    import yaml

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"nemo-migrate-lint", "nemo-migrate-fix"}
    for hook in hooks.values():
        assert hook["language"] == "python" and hook["types_or"] == ["yaml", "python"]
        assert hook["require_serial"] is True and "--force-exclude" in hook["entry"]
    assert "--fix" not in hooks["nemo-migrate-lint"]["entry"]
    assert {"--fix", "--exit-non-zero-on-fix"} <= set(hooks["nemo-migrate-fix"]["entry"].split())


@pytest.mark.slow
def test_try_repo_lint_and_fix_hooks_in_a_real_repository(tmp_path, offline_env):
    repo = tmp_path / "project"
    (repo / "conf" / "legacy").mkdir(parents=True)
    (repo / ".github" / "workflows").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)

    def write(name: str, text: str) -> None:
        (repo / name).write_text(text)
        subprocess.run(["git", "add", "--", name], cwd=repo, check=True)

    write("conf/gpt.yaml", ZARR)
    write("conf/fixable.yaml", FIXABLE)
    write("conf/legacy/old.yaml", ZARR)  # excluded by the project configuration
    write("conf/paired.yaml", PAIRED)
    write("train.py", INVERTED)
    write("nemo-migrator.toml", 'exclude = ["legacy"]\n[pairs]\n"conf/paired.yaml" = "train.py"\n')
    write(".github/workflows/ci.yml", "on: push\njobs: {}\n")  # YAML that is not a NeMo config: not judged

    # run 1: the lint hook fails with the finding; the fix hook rewrites fixable.yaml and fails
    first = pre_commit("try-repo", str(ROOT), "--all-files", cwd=repo, env=offline_env)
    output = first.stdout + first.stderr
    assert first.returncode == 1, output
    lint = _section(output, "nemo-migrate-lint")
    assert _status(output, "nemo-migrate lint") == "Failed"
    assert "conf/gpt.yaml:2:21: NM106 error: dist_ckpt_format: zarr" in lint
    assert "legacy" not in lint and "ci.yml" not in lint
    # the script is judged against the config it is paired with (the YAML-against-Python consistency rule)
    assert "train.py:3:57: NM120 error: ckpt_parallel_save_optim=False disagrees with model.dist_ckpt_parallel_dist_opt" in lint
    fix = _section(output, "nemo-migrate-fix")
    assert _status(output, "nemo-migrate lint --fix") == "Failed" and "files were modified by this hook" in fix
    assert (repo / "conf" / "fixable.yaml").read_text() == FIXED
    assert (repo / "conf" / "gpt.yaml").read_text() == ZARR  # only safe fixes: zarr -> torch_dist is unsafe

    # run 2: the fixer's own output is left alone (second run passes); a clean config passes the lint hook
    subprocess.run(["git", "add", "--", "conf/fixable.yaml"], cwd=repo, check=True)
    write("conf/gpt.yaml", CLEAN)
    emitted = subprocess.run([str(Path(sys.executable).parent / "migrate-config"), "conf/paired.yaml", "--emit-python"],
                             cwd=repo, capture_output=True, text=True, check=True).stdout
    write("train.py", emitted)  # what migrate-config writes for the paired config agrees with it
    second = pre_commit("try-repo", str(ROOT), "--all-files", cwd=repo, env=offline_env)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert _status(output, "nemo-migrate lint") == "Passed"
    assert _status(output, "nemo-migrate lint --fix") == "Passed"
    assert (repo / "conf" / "fixable.yaml").read_text() == FIXED
