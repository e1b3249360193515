#!/usr/bin/env python
"""Build a real-world YAML corpus from NeMo git mirrors and measure the YAML lint on it.

Nothing is fetched: give the git directories of NVIDIA/NeMo (and optionally NVIDIA/NeMo-Framework-Launcher) that you
already have (a clone's .git, or a bare mirror). Every `*.yaml`/`*.yml` of each named tag is written once per distinct
content (the first tag that has it names it) under OUT/corpus/<repo>@<tag>/<path>; the lint runs over OUT/corpus
with JSON output; counts per code go to stdout and OUT/findings.json, and a stratified random sample of findings to
judge by hand goes to OUT/sample.jsonl (each with the file, its tag and the line it points at).

    python benchmarks/yaml_corpus.py --nemo ~/src/NeMo/.git --launcher ~/src/NeMo-Framework-Launcher/.git OUT
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import time
from pathlib import Path

NEMO_TAGS = ["v1.20.0", "v1.22.0", "v1.23.0", "v2.0.0", "v2.2.0", "v2.4.0"]
LAUNCHER_TAGS = ["23.08.03", "24.01", "24.05", "24.12"]


def git(gitdir: str, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={gitdir}", *args], check=True, capture_output=True).stdout


def build(out: Path, sources: list[tuple[str, str, list[str]]]) -> int:
    seen: set[str] = set()
    count = 0
    for name, gitdir, tags in sources:
        for tag in tags:
            listing = git(gitdir, "ls-tree", "-r", tag).decode("utf-8", "replace").splitlines()
            for line in listing:
                meta, _, path = line.partition("\t")
                _mode, kind, blob = meta.split()
                if kind != "blob" or not path.endswith((".yaml", ".yml")) or blob in seen:
                    continue
                seen.add(blob)
                target = out / f"{name}@{tag}" / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(git(gitdir, "cat-file", "blob", blob))
                count += 1
    return count


def lint(corpus: Path, exe: list[str], extra: list[str]) -> tuple[list[dict], float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run([*exe, "lint", "--output-format", "json", "--exit-zero", *extra, str(corpus)],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    findings = json.loads(proc.stdout or "[]")
    return findings, elapsed, proc.returncode, proc.stderr


def sample(findings: list[dict], size: int, seed: int) -> list[dict]:
    """At least `size` findings: per code proportional to its volume, at least 3 per code (all if fewer)."""
    rng = random.Random(seed)
    by_code = collections.defaultdict(list)
    for f in findings:
        by_code[f["code"]].append(f)
    total = len(findings)
    picked = []
    for code, items in sorted(by_code.items()):
        k = min(len(items), max(3, round(size * len(items) / total)))
        picked += rng.sample(items, k)
    return picked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--nemo", required=True, help="git dir of NVIDIA/NeMo")
    parser.add_argument("--launcher", help="git dir of NVIDIA/NeMo-Framework-Launcher")
    parser.add_argument("--nemo-tags", nargs="*", default=NEMO_TAGS)
    parser.add_argument("--launcher-tags", nargs="*", default=LAUNCHER_TAGS)
    parser.add_argument("--sample", type=int, default=120)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--lint-args", default="", help="extra lint options, e.g. '--target nemo=2.0'")
    args = parser.parse_args()
    corpus = args.out / "corpus"
    if not corpus.exists():
        sources = [("NeMo", args.nemo, args.nemo_tags)]
        if args.launcher:
            sources.append(("NeMo-Framework-Launcher", args.launcher, args.launcher_tags))
        print(f"corpus: {build(corpus, sources)} distinct YAML files written to {corpus}")
    exe = Path(sys.executable).parent / "nemo-migrate"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "migrator"]
    findings, elapsed, rc, stderr = lint(corpus, cmd, args.lint_args.split())
    files = sum(1 for p in corpus.rglob("*") if p.suffix in (".yaml", ".yml"))
    unreadable = [line for line in stderr.splitlines() if line.strip()]
    counts = collections.Counter(f["code"] for f in findings)
    print(f"{files} files, {len(findings)} findings, {len(unreadable)} stderr lines, exit {rc}, {elapsed:.2f} s")
    for code, n in sorted(counts.items()):
        print(f"  {code} {n}")
    (args.out / "findings.json").write_text(json.dumps(findings, indent=1))
    (args.out / "stderr.txt").write_text(stderr)
    with (args.out / "sample.jsonl").open("w") as fh:
        for f in sample(findings, args.sample, args.seed):
            path = Path(f["filename"])
            line = path.read_text(encoding="utf-8", errors="replace").splitlines()[f["location"]["row"] - 1]
            fh.write(json.dumps({"code": f["code"], "file": str(path.relative_to(corpus)), "row": f["location"]["row"],
                                 "line": line, "message": f["message"]}) + "\n")


if __name__ == "__main__":
    main()
