"""need_megatron_core: without megatron-core a test skips, and fails where NEMO_MIGRATE_REQUIRE_SHARED=1 (CI)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("require,outcome", [("1", "1 failed"), ("", "1 skipped")])
def test_a_missing_megatron_core_fails_under_require_shared(tmp_path: Path, require: str, outcome: str) -> None:
    blocked = tmp_path / "blocked" / "megatron"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('megatron-core blocked by the test')\n")
    (tmp_path / "test_probe.py").write_text("from tests.conftest import need_megatron_core\n\n\n"
                                            "def test_probe():\n    need_megatron_core()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked.parent), str(ROOT)]),
           "NEMO_MIGRATE_REQUIRE_SHARED": require}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                             str(tmp_path / "test_probe.py")], capture_output=True, text=True, env=env, timeout=120)
    assert outcome in result.stdout, result.stdout + result.stderr
    assert "megatron-core is not installed" in result.stdout
