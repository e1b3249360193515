#!/usr/bin/env python
"""Converter benchmarks: `nemo-migrate convert` wall time as a ratio to `cp` of the same bytes in the same run,
peak RSS at several model sizes, and the tiny NeMo-made fixture end to end as a whole process.

    python benchmarks/bench_convert.py [--sizes 2 8] [--repeat 2] [--work DIR] [--skip-tiny] [--to nemo2|bridge|both]
    python benchmarks/bench_convert.py --nondist --sizes 2   # non-distributed TP=4 x PP=2 rank files (merge route)

For each size, a synthetic Llama-shaped NeMo 1.0 checkpoint is made (make_synthetic_nemo.py) as torch_dist
(`.nemo` and extracted folder) and zarr (`.nemo`); then, alternating, each case is timed against its baseline:
  .nemo torch_dist, same dtype   vs  cp IN.nemo + sync        (target <= 1.2x)
  extracted folder with --link   vs  cp -r IN/ + sync         (target <= 0.05x)
  .nemo zarr                     vs  cp IN.nemo + sync        (target <= 1.5x)
  .nemo torch_dist --dtype fp16  vs  cp IN.nemo + sync        (no time target; peak RSS <= largest chunk + 0.5 GB;
                                                               the largest chunk here is the 262 MB embedding)
`--to bridge` times the same cases writing a Megatron-Bridge checkpoint (`convert --to bridge`), `--to both` both
destinations, interleaved in the same run.
With --nondist: a non-distributed TP=4 x PP=2 `.nemo` (rank files, make_synthetic_nemo.py --format nondist) vs
cp IN.nemo + sync (NeMo 2.0 destination); peak RSS should not grow with tensor or model size.
`convert` flushes what it writes (fsync) before it renames OUT.partial to OUT, hence `cp` + `sync` as the baseline.
Every timed step starts after a `sync`; the best of `--repeat` runs is reported for both sides. Peak RSS is the
child's ru_maxrss (os.wait4). Generated data is deleted when a size is done. Prints a Markdown table; no asserts.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MODEL_ID = "meta-llama/Llama-2-7b-hf"
TINY = REPO.parent / "shared" / "fixtures" / "nemo1" / "tiny_llama_torch_dist.nemo"
TINY_ID = "meta-llama/Meta-Llama-3-8B"


def run(command: list[str]) -> tuple[float, int]:
    """Run a command; (wall seconds, peak RSS in bytes of that process)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed ({process.returncode}):\n{stderr[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def sync() -> None:
    os.sync()


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    sync()


def timed_cp(source: Path, dest: Path) -> float:
    sync()
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(source), str(dest)], check=True)
    sync()
    wall = time.perf_counter() - start
    remove(dest)
    return wall


def timed_convert(source: Path, out: Path, *extra: str, to: str = "nemo2") -> tuple[float, int]:
    sync()
    destination = ["--model_id", MODEL_ID] if to == "nemo2" else ["--to", "bridge"]
    command = [PYTHON, "-m", "migrator", "convert", "--input_path", str(source), "--output_path", str(out),
               *destination, *extra]
    wall, rss = run(command)
    remove(out)
    return wall, rss


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_size(size_gb: float, work: Path, repeat: int, destinations: tuple[str, ...] = ("nemo2",)) -> list[dict]:
    subprocess.run([PYTHON, str(REPO / "benchmarks" / "make_synthetic_nemo.py"), str(work), "--size-gb",
                    str(size_gb), "--format", "both", "--keep-folder"], check=True, stderr=subprocess.DEVNULL)
    name = f"synthetic_{size_gb:g}gb"
    dist_nemo, dist_folder = work / f"{name}_torch_dist.nemo", work / f"{name}_torch_dist"
    zarr_nemo = work / f"{name}_zarr.nemo"
    shutil.rmtree(work / f"{name}_zarr", ignore_errors=True)
    cases = [(label if to == "nemo2" else f"--to bridge: {label}", source, baseline, extra, to)
             for to in destinations
             for label, source, baseline, extra in (
                 (".nemo torch_dist, same dtype", dist_nemo, dist_nemo, ()),
                 ("extracted folder, --link", dist_folder, dist_folder, ("--link",)),
                 (".nemo zarr", zarr_nemo, zarr_nemo, ()),
                 (".nemo torch_dist, --dtype fp16", dist_nemo, dist_nemo, ("--dtype", "fp16")))]
    results = {label: {"cp": [], "convert": [], "rss": []} for label, *_ in cases}
    timed_cp(dist_nemo, work / "warm")  # read every input once, so that each case starts from a warm cache
    timed_cp(zarr_nemo, work / "warm")
    for _ in range(repeat):
        for label, source, baseline, extra, to in cases:
            results[label]["cp"].append(timed_cp(baseline, work / "cp-copy"))
            wall, rss = timed_convert(source, work / "out", *extra, to=to)
            results[label]["convert"].append(wall)
            results[label]["rss"].append(rss)
    rows = []
    for label, source, baseline, _, _ in cases:
        r = results[label]
        cp, conv = min(r["cp"]), min(r["convert"])
        rows.append({"case": label, "size": size_of(baseline), "cp": cp, "convert": conv, "ratio": conv / cp,
                     "rss": max(r["rss"])})
    for path in (dist_nemo, dist_folder, zarr_nemo):
        remove(path)
    return rows


def bench_nondist(size_gb: float, work: Path, repeat: int, tp: int = 4, pp: int = 2) -> list[dict]:
    """A non-distributed TP x PP checkpoint (rank files) merged into torch_dist, against cp of the same .nemo."""
    subprocess.run([PYTHON, str(REPO / "benchmarks" / "make_synthetic_nemo.py"), str(work), "--size-gb",
                    str(size_gb), "--format", "nondist", "--tp", str(tp), "--pp", str(pp)], check=True,
                   stderr=subprocess.DEVNULL)
    nemo = work / f"synthetic_{size_gb:g}gb_nondist_tp{tp}pp{pp}.nemo"
    label = f".nemo non-distributed TP={tp} x PP={pp} (merge)"
    cps, walls, rsss = [], [], []
    timed_cp(nemo, work / "warm")
    for _ in range(repeat):
        cps.append(timed_cp(nemo, work / "cp-copy"))
        wall, rss = timed_convert(nemo, work / "out")
        walls.append(wall)
        rsss.append(rss)
    row = {"case": label, "size": size_of(nemo), "cp": min(cps), "convert": min(walls),
           "ratio": min(walls) / min(cps), "rss": max(rsss)}
    remove(nemo)
    return [row]


def bench_tiny(runs: int = 5) -> dict:
    walls, rsss = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            out = Path(tmp) / f"out{i}"
            wall, rss = run([PYTHON, "-m", "migrator", "convert", "--input_path", str(TINY), "--output_path",
                             str(out), "--model_id", TINY_ID])
            walls.append(wall)
            rsss.append(rss)
    return {"wall": statistics.median(walls), "rss": max(rsss), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[2.0, 8.0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--to", choices=["nemo2", "bridge", "both"], default="nemo2",
                        help="destination(s) of the timed conversions")
    parser.add_argument("--nondist", action="store_true",
                        help="only the non-distributed TP=4 x PP=2 merge case, at each --sizes")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="nemo-migrate-bench."))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, scratch {work}", flush=True)
    lines = ["| size | case | input bytes | cp + sync (s) | convert (s) | ratio | target | peak RSS |",
             "|---|---|---|---|---|---|---|---|"]
    targets = {".nemo torch_dist, same dtype": "<= 1.2x", "extracted folder, --link": "<= 0.05x",
               ".nemo zarr": "<= 1.5x", ".nemo torch_dist, --dtype fp16": "RSS <= chunk + 0.5 GB",
               ".nemo non-distributed TP=4 x PP=2 (merge)": "RSS flat (pieces of 8 MB)"}
    try:
        for size in args.sizes:
            destinations = ("nemo2", "bridge") if args.to == "both" else (args.to,)
            rows = bench_nondist(size, work, args.repeat) if args.nondist else \
                bench_size(size, work, args.repeat, destinations)
            for row in rows:
                target = targets[row["case"].removeprefix("--to bridge: ")]
                lines.append(f"| {size:g} GB | {row['case']} | {row['size'] / 1e9:.2f} GB | {row['cp']:.2f} | "
                             f"{row['convert']:.2f} | {row['ratio']:.3f}x | {target} | "
                             f"{row['rss'] / 1e6:.0f} MB |")
                print(lines[-1], flush=True)
        if not args.skip_tiny and not args.nondist and TINY.exists():
            tiny = bench_tiny()
            lines.append(f"| tiny fixture | tiny_llama_torch_dist.nemo end to end (median of {tiny['runs']}) | "
                         f"{TINY.stat().st_size / 1e3:.0f} KB | NeMo: 15-18 s | {tiny['wall']:.2f} | "
                         f"{16.5 / tiny['wall']:.0f}x faster | >= 10x, <= 0.3 GB | {tiny['rss'] / 1e6:.0f} MB |")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
