"""The I/O fault campaign of `nemo-migrate convert` (issue 14): no exit 0 with a corrupt or partial output.

For every I/O function the converter uses (fault_shim.FUNCTIONS), for the N-th call of it, for each errno that a
full, read-only or broken disk gives (ENOSPC, EDQUOT, EIO, EROFS, EACCES; EXDEV for renames and links) and for
short or empty results (a read or write that moves fewer bytes than asked, once or never again) and for writes
that report success but write nothing (lost data, which only the size and content checks catch), on each route of
the converter (ROUTES), a real `nemo-migrate convert` process runs with the fault injected (fault_shim installed as
its sitecustomize). Each outcome must be one of:
- exit 0, with an output that `verify_checkpoint(OUT, against=IN)` finds OK (the fault was absorbed: a fallback,
  a retried short count, or a call the run did not make), or
- exit 2, with exactly one `error:` line that names a file (a path) and, for an errno, the OS error's text; no
  traceback; neither OUT nor OUT.partial nor anything else left beside them.
In every case the input is unchanged (its bytes hashed before and after) and the run ends within the time limit (a
call that never progresses must end in an error, not a loop). Anything else is a defect.

`run_campaign` first counts the calls of a clean run per route (a census), then draws the cases with a fixed seed
(every (route, function) pair the run uses gets at least one case); tests/convert/test_reliability_faults.py runs a
bounded sample in CI, scripts/fuzz_faults.py a longer one. Real faults (a full tmpfs, exhausted inodes) are in the
test file.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tests.campaign.fault_shim import COUNTED, FUNCTIONS, KINDS, LYING

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "fixtures"
LLAMA_ID = "meta-llama/Meta-Llama-3-8B"
ERRNOS = ("ENOSPC", "EDQUOT", "EIO", "EROFS", "EACCES")
EXTRA_ERRNOS = {"rename": ("EXDEV",), "replace": ("EXDEV",), "link": ("EXDEV",), "copy_file_range": ("EXDEV",)}
TIMEOUT_S = 60


@dataclass
class Route:
    name: str
    args: Callable[[Path], list[str]]  # work dir -> convert arguments besides --output_path
    against: Callable[[Path], Path]  # work dir -> what verify compares the output with
    inputs: Callable[[Path], list[Path]]  # work dir -> the paths that must stay unchanged
    needs: tuple[Path, ...] = ()


def _nemo(name: str) -> Path:
    return SHARED / "nemo1" / f"{name}.nemo"


TORCH_DIST = _nemo("tiny_llama_torch_dist")
ZARR = _nemo("tiny_llama_zarr")
LEGACY_TP2 = SHARED / "legacy" / "b_tp2pp1" / "tiny_llama_mcore_tp2pp1.nemo"


def _extracted(work: Path) -> Path:
    folder = work / "inputs" / "extracted"
    if not folder.exists():
        with tarfile.open(TORCH_DIST) as archive:
            archive.extractall(folder, filter="data")
    return folder


def _gzipped(work: Path) -> Path:
    path = work / "inputs" / "gzipped.nemo"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(TORCH_DIST.read_bytes(), compresslevel=1))
    return path


ROUTES: dict[str, Route] = {r.name: r for r in [
    Route("copy", lambda w: ["--input_path", str(TORCH_DIST), "--model_id", LLAMA_ID],
          lambda w: TORCH_DIST, lambda w: [TORCH_DIST], (TORCH_DIST,)),
    Route("copy-workers", lambda w: ["--input_path", str(TORCH_DIST), "--model_id", LLAMA_ID, "--workers", "3"],
          lambda w: TORCH_DIST, lambda w: [TORCH_DIST], (TORCH_DIST,)),
    Route("link", lambda w: ["--input_path", str(_extracted(w)), "--model_id", LLAMA_ID, "--link"],
          _extracted, lambda w: [_extracted(w)], (TORCH_DIST,)),
    Route("gzip", lambda w: ["--input_path", str(_gzipped(w)), "--model_id", LLAMA_ID],
          _gzipped, lambda w: [_gzipped(w)], (TORCH_DIST,)),
    Route("stream-zarr", lambda w: ["--input_path", str(ZARR), "--model_id", LLAMA_ID],
          lambda w: ZARR, lambda w: [ZARR], (ZARR,)),
    Route("cast", lambda w: ["--input_path", str(TORCH_DIST), "--model_id", LLAMA_ID, "--dtype", "fp16"],
          lambda w: TORCH_DIST, lambda w: [TORCH_DIST], (TORCH_DIST,)),
    Route("merge", lambda w: ["--input_path", str(LEGACY_TP2), "--model_id", LLAMA_ID],
          lambda w: LEGACY_TP2, lambda w: [LEGACY_TP2], (LEGACY_TP2,)),
    Route("bridge", lambda w: ["--input_path", str(TORCH_DIST), "--to", "bridge"],
          lambda w: TORCH_DIST, lambda w: [TORCH_DIST], (TORCH_DIST,)),
]}
SLOW_ROUTES = {"cast"}  # imports torch in the converter: about 2 s a run instead of 0.3 s


@dataclass(frozen=True)
class Case:
    route: str
    fn: str
    at: int
    kind: str
    errno: str = ""

    def label(self) -> str:
        what = self.errno if self.kind == "errno" else self.kind
        return f"{self.route}: {self.fn} #{self.at} {what}"


@dataclass
class Outcome:
    case: Case
    verdict: str  # "ok-exit0" | "ok-exit2" | "defect"
    fired: bool
    detail: str = ""


@dataclass
class Group:
    tried: int = 0
    clean: int = 0
    fired: int = 0
    defects: list[Outcome] = field(default_factory=list)


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
    for p in files:
        digest.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        digest.update(p.read_bytes())
        digest.update(oct(p.stat().st_mode).encode())
    return digest.hexdigest()


def install_shim(work: Path) -> Path:
    """A folder holding fault_shim.py as `sitecustomize.py` (put it on PYTHONPATH)."""
    folder = work / "shim"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text((Path(__file__).parent / "fault_shim.py").read_text())
    return folder


def run_convert(args: list[str], out: Path, fault: dict | None, shim: Path,
                timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess | None:
    """One `nemo-migrate convert` process (None: it did not end within `timeout`, and was killed)."""
    env = {**os.environ, "PYTHONPATH": str(shim), "NEMO_MIGRATE_FAULT": json.dumps(fault) if fault else ""}
    try:
        return subprocess.run([sys.executable, "-m", "migrator", "convert", *args, "--output_path", str(out)],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return None


def census(route: Route, work: Path, shim: Path) -> dict[str, int]:
    """How many times a clean run of `route` calls each function (and that the clean run succeeds)."""
    folder = work / f"census-{route.name}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "log.json"
    result = run_convert(route.args(work), folder / "out", {"fn": "", "kind": "count", "log": str(log)}, shim)
    if result is None or result.returncode != 0:
        raise AssertionError(f"{route.name}: the clean run failed: {result and result.stderr[-2000:]}")
    calls = json.loads(log.read_text())["calls"]
    shutil.rmtree(folder)
    return calls


def kinds_for(fn: str) -> list[tuple[str, str]]:
    """(kind, errno) pairs that apply to a function."""
    pairs = [("errno", e) for e in ERRNOS + EXTRA_ERRNOS.get(fn, ())]
    if fn in COUNTED:
        pairs += [(k, "") for k in KINDS if k not in ("errno", "lie") or (k == "lie" and fn in LYING)]
    return pairs


def draw_cases(counts: dict[str, dict[str, int]], n: int, seed: int, max_at: int = 40) -> list[Case]:
    """`n` cases with a fixed seed: first one per (route, function) the route calls, then uniform draws."""
    rng = random.Random(seed)
    universe: list[Case] = []
    firsts: list[Case] = []
    for route, calls in counts.items():
        for fn in FUNCTIONS:
            total = calls.get(fn, 0)
            if total == 0:
                continue
            ats = list(range(1, min(total, max_at) + 1))
            options = [Case(route, fn, at, kind, code) for at in ats for kind, code in kinds_for(fn)]
            firsts.append(rng.choice(options))
            universe += options
    rng.shuffle(firsts)
    chosen = list(dict.fromkeys(firsts))[:n]
    rest = [c for c in universe if c not in set(chosen)]
    rng.shuffle(rest)
    return chosen + rest[:max(0, n - len(chosen))]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def judge(case: Case, result: subprocess.CompletedProcess | None, out: Path, against: Path, fired: bool,
          verify: Callable[[Path, Path], tuple[bool, str]]) -> tuple[str, str]:
    """(verdict, detail) of one run (see the module docstring)."""
    if result is None:
        return "defect", f"did not end within {TIMEOUT_S} s"
    stderr = result.stderr
    leftovers = sorted(p.name for p in out.parent.iterdir() if p.name not in ("out", "log.json"))
    if "Traceback" in stderr:
        return "defect", f"exit {result.returncode} with a traceback: {stderr.strip().splitlines()[-1]}"
    if result.returncode == 0:
        if leftovers:
            return "defect", f"exit 0 but left {leftovers}"
        ok, why = verify(out, against)
        return ("ok-exit0", "") if ok else ("defect", f"exit 0 with an output that verify rejects: {why}")
    lines = _error_lines(stderr)
    if result.returncode != 2:
        return "defect", f"exit {result.returncode}: {' | '.join(lines) or stderr.strip()[-300:]}"
    if len(lines) != 1:
        return "defect", f"exit 2 with {len(lines)} error lines: {stderr.strip()[-400:]}"
    line = lines[0]
    if out.exists() or out.is_symlink() or leftovers:
        return "defect", f"exit 2 but left {['out'] * out.exists() + leftovers}: {line}"
    if "/" not in line.split("error:", 1)[1]:
        return "defect", f"the error names no file: {line}"
    if case.kind == "errno" and fired and os.strerror(getattr(errno, case.errno)) not in line:
        return "defect", f"the error does not give the OS error ({os.strerror(getattr(errno, case.errno))}): {line}"
    return "ok-exit2", ""


def default_verify(out: Path, against: Path) -> tuple[bool, str]:
    from migrator.convert.verify import verify_checkpoint

    try:
        report = verify_checkpoint(out, against)
    except Exception as error:  # noqa: BLE001 - an output verify cannot even read is a corrupt one
        return False, f"verify failed: {type(error).__name__}: {error}"
    return report.ok, "; ".join(report.problems[:2])


def run_campaign(work: Path, *, seed: int, cases_per_route: dict[str, int], budget_s: float | None = None,
                 jobs: int | None = None, verify: Callable[[Path, Path], tuple[bool, str]] = default_verify,
                 log: Callable[[str], None] | None = None) -> dict[str, Group]:
    """Run the campaign; returns {route: Group}. `cases_per_route`: how many cases to draw per route."""
    work.mkdir(parents=True, exist_ok=True)
    shim = install_shim(work)
    routes = {name: ROUTES[name] for name in cases_per_route if all(p.exists() for p in ROUTES[name].needs)}
    counts = {name: census(route, work, shim) for name, route in routes.items()}
    per_route = [draw_cases({name: counts[name]}, cases_per_route[name], seed) for name in routes]
    # round robin over the routes, so that a time budget cuts every route's sample, not the last routes'
    cases = [c for row in zip(*[r + [None] * (max(map(len, per_route)) - len(r)) for r in per_route])
             for c in row if c is not None]
    digests = {name: [tree_digest(p) for p in route.inputs(work)] for name, route in routes.items()}
    groups = {name: Group() for name in routes}
    start = time.monotonic()
    verify_lock = threading.Lock()

    def one(index: int, case: Case) -> Outcome | None:
        if budget_s is not None and time.monotonic() - start > budget_s:
            return None
        route = routes[case.route]
        folder = work / f"case-{index}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        out = folder / "out"
        log_file = folder / "log.json"
        fault = {"fn": case.fn, "at": case.at, "kind": case.kind, "errno": case.errno or "EIO",
                 "log": str(log_file)}
        result = run_convert(route.args(work), out, fault, shim)
        fired = log_file.exists() and json.loads(log_file.read_text() or "{}").get("fired", False)
        with verify_lock:
            verdict, detail = judge(case, result, out, route.against(work), fired, verify)
            if [tree_digest(p) for p in route.inputs(work)] != digests[case.route]:
                verdict, detail = "defect", f"the input changed ({detail or verdict})"
        shutil.rmtree(folder, ignore_errors=True)
        return Outcome(case, verdict, fired, detail)

    with ThreadPoolExecutor(max_workers=jobs or max(2, os.cpu_count() or 2)) as pool:
        for outcome in pool.map(lambda item: one(*item), enumerate(cases)):
            if outcome is None:
                continue
            group = groups[outcome.case.route]
            group.tried += 1
            group.fired += outcome.fired
            if outcome.verdict == "defect":
                group.defects.append(outcome)
                if log:
                    log(f"DEFECT {outcome.case.label()}: {outcome.detail}")
            else:
                group.clean += 1
    return groups


def report(groups: dict[str, Group]) -> str:
    lines = [f"{'route':<14} {'tried':>6} {'fired':>6} {'clean':>6} {'defects':>8}"]
    for name, g in groups.items():
        lines.append(f"{name:<14} {g.tried:>6} {g.fired:>6} {g.clean:>6} {len(g.defects):>8}")
    total = Group(sum(g.tried for g in groups.values()), sum(g.clean for g in groups.values()),
                  sum(g.fired for g in groups.values()), [d for g in groups.values() for d in g.defects])
    lines.append(f"{'all':<14} {total.tried:>6} {total.fired:>6} {total.clean:>6} {len(total.defects):>8}")
    for d in total.defects[:40]:
        lines.append(f"  {d.case.label()}: {d.detail}")
    return "\n".join(lines)
