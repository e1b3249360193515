#!/usr/bin/env python
"""The cost of the copy check (storage/fileops.compare_copy), as a ratio to `cp` of the same bytes in the same run.

    python benchmarks/bench_integrity.py [--size-gb 2] [--repeat 3] [--work DIR]

After each data file is copied (the same-dtype torch_dist route), `convert` compares the copy with the source:
by default the windows of compare_windows (64 KiB either side of every 8 MiB boundary, the first and the last
bytes: about 1.6% of the bytes), with NEMO_MIGRATE_COMPARE=full every byte. This measures, on a synthetic
Llama-shaped checkpoint (make_synthetic_nemo.py, torch_dist):
  cp + sync          `cp -r` of the extracted model_weights/ folder, then sync (the baseline)
  check: windows     compare_copy over every data file against its source, default windows (in this process)
  check: every byte  the same with full=True
  convert            `nemo-migrate convert` of the .nemo (same dtype: copy route), default check, and with
                     NEMO_MIGRATE_COMPARE=full
Both sides of the check are read right after the copy, as in a conversion (the page cache holds them unless the
model is larger than memory; then the full check reads both from disk again). Best of --repeat. No asserts.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PYTHON = sys.executable
MODEL_ID = "meta-llama/Llama-2-7b-hf"


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def cp_sync(source: Path, dest: Path) -> None:
    subprocess.run(["cp", "-r", str(source), str(dest)], check=True)
    os.sync()


def convert(source: Path, out: Path, full: bool) -> None:
    env = {**os.environ, "NEMO_MIGRATE_COMPARE": "full" if full else ""}
    subprocess.run([PYTHON, "-m", "migrator", "convert", "--input_path", str(source), "--output_path", str(out),
                    "--model_id", MODEL_ID], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def check(pairs: list[tuple[Path, Path]], full: bool) -> None:
    from migrator.convert.storage.fileops import compare_copy

    for source, copy in pairs:
        with open(source, "rb") as a, open(copy, "rb") as b:
            size = os.fstat(a.fileno()).st_size
            compare_copy(a.fileno(), 0, b.fileno(), 0, size, source=source, dest=copy, full=full)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="nemo-migrate-bench-integrity-"))
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([PYTHON, str(REPO / "benchmarks" / "make_synthetic_nemo.py"), str(work), "--size-gb",
                    str(args.size_gb), "--format", "torch_dist", "--keep-folder"], check=True,
                   stderr=subprocess.DEVNULL)
    name = f"synthetic_{args.size_gb:g}gb_torch_dist"
    nemo, folder = work / f"{name}.nemo", work / name / "model_weights"
    sources = sorted(folder.glob("*.distcp"))
    size = sum(p.stat().st_size for p in sources)
    times: dict[str, list[float]] = {k: [] for k in ("cp", "windows", "full", "convert", "convert-full")}
    try:
        for _ in range(args.repeat):
            os.sync()
            times["cp"].append(timed(lambda: cp_sync(folder, work / "cp")))
            pairs = [(p, work / "cp" / p.name) for p in sources]
            times["windows"].append(timed(lambda: check(pairs, False)))
            times["full"].append(timed(lambda: check(pairs, True)))
            shutil.rmtree(work / "cp")
            for label, full in (("convert", False), ("convert-full", True)):
                os.sync()
                times[label].append(timed(lambda: convert(nemo, work / "out", full)))
                shutil.rmtree(work / "out")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    cp = min(times["cp"])
    print(f"data files: {len(sources)}, {size / 1e9:.2f} GB; best of {args.repeat}")
    print("| step | seconds | ratio to cp + sync |")
    print("|---|---|---|")
    for label, what in (("cp", "cp + sync (baseline)"), ("windows", "check: windows (default)"),
                        ("full", "check: every byte"), ("convert", "convert, default check"),
                        ("convert-full", "convert, NEMO_MIGRATE_COMPARE=full")):
        best = min(times[label])
        print(f"| {what} | {best:.2f} | {best / cp:.3f}x |")


if __name__ == "__main__":
    main()
