"""Opt-in: the patcher and the Python lint over NVIDIA NeMo's own code (set NEMO_SOURCE to a NeMo checkout; it takes
minutes). The figures are in docs/rewriter.md; benchmarks/nemo_real_code.py prints them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NEMO_CONFIGS, ROOT, need_shared

SOURCE = os.environ.get("NEMO_SOURCE")


@pytest.mark.slow
@pytest.mark.skipif(not SOURCE, reason="set NEMO_SOURCE to a checkout of NVIDIA/NeMo to run this")
def test_nemo_source_patches_cleanly_and_the_lint_finds_the_removed_arguments():
    config = need_shared(NEMO_CONFIGS / "megatron_gpt_config.yaml")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nemo_real_code.py"), str(Path(SOURCE)),
                           "--config", str(config)], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # no problem: parse, compile, AST, idempotent
    assert "problems: 0" in proc.stdout
    assert "'NM108': 21" in proc.stdout  # 17 ckpt_include_optimizer + 4 enable_nemo_ckpt_io
