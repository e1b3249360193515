"""Shared test helpers: the project root, the shared fixtures folder, a CLI runner (real subprocesses)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
NEMO_CONFIGS = SHARED / "fixtures" / "nemo-configs"
PROJECT_FIXTURES = ROOT / "fixtures"


def need_shared(path: Path) -> Path:
    """A file of the shared fixtures (../shared next to the checkout): the test skips without it, and fails
    where NEMO_MIGRATE_REQUIRE_SHARED=1 (CI sets it, so a missing fixture cannot turn tests into skips)."""
    if not path.exists():
        why = f"{path} is not here: the shared fixtures folder (../shared next to the checkout) is missing"
        if os.environ.get("NEMO_MIGRATE_REQUIRE_SHARED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return path


def need_megatron_core():
    """megatron-core (the `[verify]` extra; `make test` installs it), imported: the test skips without it, and
    fails where NEMO_MIGRATE_REQUIRE_SHARED=1 (CI sets it, so a missing install cannot turn tests into skips)."""
    try:
        import megatron.core
    except ImportError as error:
        why = f"megatron-core is not installed ({error}): pip install -e '.[convert,verify]' (or `make test`)"
        if os.environ.get("NEMO_MIGRATE_REQUIRE_SHARED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return megatron.core


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test process uses a fresh rule-table cache (the first load also runs the pydantic validation)."""
    os.environ["NEMO_MIGRATE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def files(tmp_path: Path):
    """write(name, text or bytes) -> the path of a new file under tmp_path (folders made as needed)."""
    def write(name: str, text: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return path
    return write


def run_cli(*args: str, cwd: Path | None = None, input: str | None = None, entry: str = "nemo-migrate",
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script (falls back to `python -m migrator` for nemo-migrate)."""
    exe = Path(sys.executable).parent / entry
    cmd = [str(exe), *args] if exe.exists() else [sys.executable, "-m", "migrator", *args]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, text=True, env=full_env, timeout=300)
