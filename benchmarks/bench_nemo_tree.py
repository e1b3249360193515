#!/usr/bin/env python
"""Whole-tree lint of a NeMo checkout against ruff and yamllint, measured in the same run (issue 13's targets).

    python benchmarks/bench_nemo_tree.py /path/to/NeMo [-n 5] [--dirs nemo examples scripts tests]

Fetches nothing: point it at a NeMo checkout (any tag; `git archive` of `nemo/ examples/ scripts/ tests/` is
enough). Each round runs, as whole processes and in rotation (so machine load hits all alike):

- `nemo-migrate lint DIRS` (default rules, every *.py/*.yaml/*.yml the walk finds, JSON to /dev/null);
- `ruff check --no-cache --exit-zero DIRS` with ruff's default rules (`--isolated`: no project configuration);
- `nemo-migrate lint YAMLS` and `yamllint -d relaxed YAMLS` on the same YAML files (those the walk finds).

It prints the median, min and max wall time of each (and the median CPU time, steadier on a shared machine), the
file counts and the ratios of the medians; targets:
whole tree <= 1.5x ruff, YAML >= 10x faster than yamllint. ruff and yamllint must be installed next to this Python
(`pip install ruff yamllint`) or on PATH.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        sys.exit(f"bench_nemo_tree: {name} not found (pip install {name})")
    return found


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the process and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        sys.exit(f"bench_nemo_tree: {cmd[0]} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout", type=Path)
    parser.add_argument("-n", type=int, default=5, help="rounds (default 5); the medians are compared")
    parser.add_argument("--dirs", nargs="+", default=["nemo", "examples", "scripts", "tests"])
    args = parser.parse_args()
    root = args.checkout.resolve()
    dirs = [d for d in args.dirs if (root / d).is_dir()]
    if not dirs:
        sys.exit(f"bench_nemo_tree: none of {args.dirs} under {root}")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from migrator.engine.walk import walk

    found = [p for d in dirs for p in walk(str(root / d), (".py", ".yaml", ".yml"))]
    yamls = [os.path.relpath(p, root) for p in found if p.endswith((".yaml", ".yml"))]
    pys = len(found) - len(yamls)
    ours = tool("nemo-migrate")
    cases = {
        "nemo-migrate lint (tree)": [ours, "lint", "--output-format", "json", "--exit-zero", *dirs],
        "ruff check (tree)": [tool("ruff"), "check", "--isolated", "--no-cache", "--exit-zero", "-q", *dirs],
        "nemo-migrate lint (YAML)": [ours, "lint", "--output-format", "json", "--exit-zero", *yamls],
        "yamllint -d relaxed (YAML)": [tool("yamllint"), "-d", "relaxed", "-f", "parsable", *yamls],
    }
    for cmd in cases.values():  # warm the page cache and .pyc files
        timed(cmd, root)
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.n):
        for name, cmd in cases.items():
            wall, used = timed(cmd, root)
            times[name].append(wall)
            cpu[name].append(used)
    print(f"checkout: {root}  dirs: {' '.join(dirs)}  files: {pys} .py + {len(yamls)} YAML  rounds: {args.n}  "
          f"cpus: {os.cpu_count()}")
    print(f"{'case':<30}{'median s':>10}{'min s':>8}{'max s':>8}{'CPU median s':>14}")
    for name, values in times.items():
        print(f"{name:<30}{statistics.median(values):>10.3f}{min(values):>8.3f}{max(values):>8.3f}"
              f"{statistics.median(cpu[name]):>14.3f}")
    for label, table in (("wall", times), ("CPU", cpu)):
        med = {name: statistics.median(values) for name, values in table.items()}
        tree = med["nemo-migrate lint (tree)"] / med["ruff check (tree)"]
        yaml = med["yamllint -d relaxed (YAML)"] / med["nemo-migrate lint (YAML)"]
        print(f"{label:>4}: tree nemo-migrate / ruff = {tree:.2f}x (target <= 1.5x) -> "
              f"{'OK' if tree <= 1.5 else 'MISSED'};  YAML yamllint / nemo-migrate = {yaml:.1f}x faster "
              f"(target >= 10x) -> {'OK' if yaml >= 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
