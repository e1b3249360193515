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
