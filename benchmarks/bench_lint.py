#!/usr/bin/env python
"""Cold-start wall time of a single-file `nemo-migrate lint` (target: <= 0.3 s), as whole processes.

Prints, for N runs each: a bare `python -c pass` (the floor), the lint of a typical config with the rule-table cache
warm (the normal case), and with an empty cache (the first run after an install or a rule change, which also
validates the table with pydantic).

    python benchmarks/bench_lint.py [CONFIG.yaml] [-n 15]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT.parent / "shared" / "fixtures" / "nemo-configs" / "megatron_gpt_config.yaml"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG if DEFAULT_CONFIG.exists()
                                                         else ROOT / "fixtures" / "examples" / "gpt_pretrain.yaml"))
    parser.add_argument("-n", type=int, default=15)
    args = parser.parse_args()
    exe = Path(sys.executable).parent / "nemo-migrate"
    lint = [str(exe), "lint", args.config] if exe.exists() else [sys.executable, "-m", "migrator", "lint", args.config]
    with tempfile.TemporaryDirectory() as cache:
        # bytecode caches as a user has them (a PYTHONDONTWRITEBYTECODE=1 shell would recompile every module per run)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["NEMO_MIGRATE_CACHE_DIR"] = cache
        subprocess.run(lint, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)  # warm .pyc
        rows = []
        floor = [timed([sys.executable, "-c", "pass"], env) for _ in range(args.n)]
        cold_cache = []
        for _ in range(args.n):
            for f in Path(cache).glob("*"):
                f.unlink()
            cold_cache.append(timed(lint, env))
        warm = [timed(lint, env) for _ in range(args.n)]
        rows = [("python -c pass (floor)", floor), ("lint, rule cache warm", warm), ("lint, empty rule cache", cold_cache)]
    print(f"config: {args.config}  runs: {args.n}")
    print(f"{'case':<26}{'median s':>10}{'min s':>8}{'max s':>8}")
    for name, values in rows:
        print(f"{name:<26}{statistics.median(values):>10.3f}{min(values):>8.3f}{max(values):>8.3f}")
    print(f"target: median of 'lint, rule cache warm' <= 0.300 s -> "
          f"{'OK' if statistics.median(warm) <= 0.3 else 'MISSED'}")


if __name__ == "__main__":
    main()
