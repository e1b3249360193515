"""The wheel ships the rule table (rules/ -> migrator/_rules) and an installed package finds it there."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_wheel_contains_the_rule_table_and_uses_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("nemo_migrator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert {"migrator/_rules/settings.yaml", "migrator/_rules/strategy.yaml", "migrator/_rules/releases.yaml"} <= names
    assert any(n.startswith("migrator/_rules/lint/NM101") for n in names)
    code = ("from migrator.engine.table import rules_dir, load_table; import migrator; "
            "print(rules_dir().relative_to(migrator.__path__[0]).as_posix(), len(load_table().lint_rules))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "NEMO_MIGRATE_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    directory, count = out.stdout.split()
    assert directory == "_rules" and int(count) >= 10


def test_release_hygiene_license_changelog_and_metadata():
    """What a new user checks before adopting the package (issue 13): the declared licence has its text, there is a
    changelog, and the metadata carries classifiers and project URLs."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) == 202  # the full text, appendix too
    assert "License :: OSI Approved :: Apache Software License" in project["classifiers"]
    assert {f"Programming Language :: Python :: 3.{v}" for v in (10, 11, 12)} <= set(project["classifiers"])
    assert {"Homepage", "Documentation", "Repository", "Issues", "Changelog"} <= set(project["urls"])
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{project['version']}]" in changelog and "## [Unreleased]" in changelog
