"""SIGKILL campaign for `nemo-migrate convert` (issue 14): real conversions killed at random points, then checked.

Each case runs `python -m migrator convert` on a NeMo-made fixture (to NeMo 2.0 or Megatron-Bridge; fresh, or
`--force` over an existing complete OUT), kills it with SIGKILL after a random delay (counted from the start, or from the moment `OUT.lock` appears,
where the writing happens), one time in three kills the run that recovers from it too, and checks:
- no complete-looking OUT that is not complete: if OUT exists, `verify_checkpoint(OUT, against=input).ok`;
- with `--force`: the old or the new OUT is present (at OUT, or as `OUT.replaced-old` while OUT is absent), and
  an `OUT.replaced-old` (which the next run restores or reports as the previous checkpoint) is complete;
- nothing else beside OUT than the names the next run recognises (`OUT.partial`, `OUT.lock`, `OUT.replaced-old`);
- a following normal run (with `--force` where OUT exists) exits 0, leaves a verified OUT and nothing beside it.

`kill_at_steps` stops a `--force` run just before each file-system step of the replacement (and of the lock's
release), and once halfway through each tree removal, on both routes (atomic exchange, two renames).

Used by tests/convert/test_reliability_outlock.py (fixed seed, bounded) and scripts/fuzz_kill.py (longer).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LLAMA_ID = "meta-llama/Meta-Llama-3-8B"
FIXTURES = ("tiny_llama_torch_dist", "tiny_llama_zarr")
KINDS = (("tiny_llama_torch_dist", "nemo2"), ("tiny_llama_zarr", "nemo2"), ("tiny_llama_torch_dist", "bridge"))
RECOGNISED = (".partial", ".lock", ".replaced-old")

# `python -c DRIVER convert ...`: the real CLI, with SIGKILL just before the NM_KILL_AT-th file-system step of
# storage.outlock (renames, exchange, tree removals, the lock's release); NM_KILL_MID=1 kills halfway through that
# step when it removes a tree; NM_NO_EXCHANGE=1 takes the two-rename route. Prints nothing of its own.
DRIVER = r"""
import os, signal, sys
from migrator.convert.storage import outlock

target = int(os.environ["NM_KILL_AT"])
mid = os.environ.get("NM_KILL_MID") == "1"
if os.environ.get("NM_NO_EXCHANGE") == "1":
    outlock._exchange = lambda partial, output: False
calls = [0]

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

def hooked(name, real):
    def step(*args):
        calls[0] += 1
        if calls[0] == target:
            sys.stderr.write(f"NM_STEP={name}\n")
            sys.stderr.flush()
            if mid and name == "_remove_tree":
                files = sorted(p for p in args[0].rglob("*") if p.is_file())
                for p in files[: max(1, len(files) // 2)]:
                    p.unlink()
            kill()
        return real(*args)
    return step

for name in ("_rename", "_remove_tree", "_exchange", "_rename_new"):
    setattr(outlock, name, hooked(name, getattr(outlock, name)))
outlock.OutputLock.release = hooked("release", outlock.OutputLock.release)
from migrator.cli.main import cli
cli(args=sys.argv[1:], prog_name="nemo-migrate")
"""


@dataclass
class Group:
    tried: int = 0
    killed: int = 0  # the SIGKILL landed before the run ended
    clean: int = 0
    problems: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)  # what was tried, in order

    @property
    def defects(self) -> int:
        return self.tried - self.clean


def command(nemo: Path, out: Path, force: bool, to: str = "nemo2") -> list[str]:
    return ["convert", "--input_path", str(nemo), "--output_path", str(out),
            *(["--model_id", LLAMA_ID] if to == "nemo2" else ["--to", "bridge"]), *(["--force"] if force else [])]


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrator", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def _verified(path: Path, nemo: Path) -> str | None:
    """None if `path` is a complete conversion of `nemo`, else what is wrong."""
    from migrator.convert.verify import verify_checkpoint
    from migrator.errors import MigratorError

    try:
        report = verify_checkpoint(path, against=nemo)
    except MigratorError as error:
        return f"verify: {error}"
    return None if report.ok else "verify: " + "; ".join(report.lines()[1:4])


def check_after_kill(out: Path, nemo: Path, force: bool) -> list[str]:
    """What is wrong beside OUT right after a kill."""
    problems = []
    old = out.with_name(out.name + ".replaced-old")
    if os.path.lexists(out):
        if (why := _verified(out, nemo)) is not None:
            problems.append(f"OUT exists but is not complete: {why}")
    elif force and not os.path.lexists(old):
        problems.append("--force: neither the old nor the new OUT is anywhere")
    if os.path.lexists(old) and (why := _verified(old, nemo)) is not None:  # the next run restores or reports it
        problems.append(f"OUT.replaced-old is not a complete checkpoint: {why}")
    stray = sorted(n for n in os.listdir(out.parent)
                   if n != out.name and n not in {out.name + s for s in RECOGNISED})
    if stray:
        problems.append(f"unrecognised names beside OUT: {stray}")
    return problems


def check_next_run(out: Path, nemo: Path, force: bool, to: str = "nemo2") -> list[str]:
    """A following normal run (with --force where OUT exists or the killed run had it) recovers and succeeds."""
    again = force or os.path.lexists(out) or os.path.lexists(out.with_name(out.name + ".replaced-old"))
    result = run_cli(command(nemo, out, again, to))
    if result.returncode != 0:
        return [f"the next run exited {result.returncode}: {result.stderr.strip().splitlines()[-1:]}"]
    problems = []
    if "Traceback" in result.stderr:
        problems.append("the next run printed a traceback")
    if (why := _verified(out, nemo)) is not None:
        problems.append(f"after the next run: {why}")
    left = sorted(n for n in os.listdir(out.parent) if n != out.name)
    if left:
        problems.append(f"after the next run, left beside OUT: {left}")
    return problems


class Templates:
    """One complete conversion per fixture and destination (copied as the existing OUT of --force cases) and its
    duration."""

    def __init__(self, root: Path, fixtures: dict[str, Path]) -> None:
        self.root = root
        self.fixtures = fixtures
        self.outputs: dict[tuple[str, str], Path] = {}
        self.seconds: dict[tuple[str, str], float] = {}
        self.after_lock: dict[tuple[str, str], float] = {}

    def get(self, name: str, to: str = "nemo2") -> tuple[Path, float, float]:
        key = (name, to)
        if key not in self.outputs:
            folder = self.root / f"template-{name}-{to}"
            folder.mkdir(parents=True)
            out = folder / "out"
            started = time.monotonic()
            process = subprocess.Popen([sys.executable, "-m", "migrator",
                                        *command(self.fixtures[name], out, False, to)],
                                       cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            locked = None
            while process.poll() is None:
                if locked is None and os.path.lexists(out.with_name("out.lock")):
                    locked = time.monotonic()
                time.sleep(0.001)
            ended = time.monotonic()
            if process.returncode != 0:
                raise RuntimeError(f"the template conversion of {name} failed: {process.stderr.read()}")
            self.outputs[key] = out
            self.seconds[key] = ended - started
            self.after_lock[key] = ended - (locked or started)
        return self.outputs[key], self.seconds[key], self.after_lock[key]


def kill_run(rng: random.Random, args: list[str], out: Path, seconds: float, after_lock: float
             ) -> tuple[bool, int, str]:
    """Start `nemo-migrate ARGS` and SIGKILL it after a random delay; returns (killed, exit code, label)."""
    from_lock = rng.random() < 0.6
    delay = rng.uniform(0, (after_lock if from_lock else seconds) * 1.15)
    label = f"kill {delay * 1000:.0f} ms after {'OUT.lock appeared' if from_lock else 'the start'}"
    process = subprocess.Popen([sys.executable, "-m", "migrator", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        if from_lock:
            deadline = time.monotonic() + 60
            while (process.poll() is None and not os.path.lexists(out.with_name(out.name + ".lock"))
                   and time.monotonic() < deadline):
                time.sleep(0.0005)
        time.sleep(delay)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return killed, process.returncode, label


def one_case(rng: random.Random, folder: Path, nemo: Path, template: Path, seconds: float, after_lock: float,
             force: bool, to: str = "nemo2") -> tuple[bool, list[str], str]:
    """Kill one conversion at a random point (and, one time in three, the run that recovers from it too); returns
    (killed, problems, label)."""
    folder.mkdir(parents=True)
    out = folder / "out"
    if force:
        shutil.copytree(template, out)
    killed, code, label = kill_run(rng, command(nemo, out, force, to), out, seconds, after_lock)
    label = f"{nemo.stem} --to {to}{' --force' if force else ''}, {label}"
    problems = check_after_kill(out, nemo, force)
    if not killed and code != 0:
        problems.append(f"the run ended before the kill with exit {code}")
    if rng.random() < 1 / 3:  # kill the recovering run as well
        again = force or os.path.lexists(out) or os.path.lexists(out.with_name(out.name + ".replaced-old"))
        second, code, how = kill_run(rng, command(nemo, out, again, to), out, seconds, after_lock)
        label += f"; the next run: {how}"
        problems += [f"after the second kill: {p}" for p in check_after_kill(out, nemo, again)]
        if not second and code != 0:
            problems.append(f"the next run ended before the kill with exit {code}")
    problems += check_next_run(out, nemo, force, to)
    return killed, problems, label


def run(seed: int, cases: int, root: Path, fixtures: dict[str, Path], budget_s: float | None = None
        ) -> dict[str, Group]:
    """`cases` random kills (fresh and --force alternately, over KINDS); stops early after `budget_s`."""
    rng = random.Random(seed)
    templates = Templates(root, fixtures)
    groups = {"fresh": Group(), "--force": Group()}
    started = time.monotonic()
    for n in range(cases):
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        force = n % 2 == 1
        name, to = KINDS[(n // 2) % len(KINDS)]
        template, seconds, after_lock = templates.get(name, to)
        group = groups["--force" if force else "fresh"]
        killed, problems, label = one_case(rng, root / f"case{n}", fixtures[name], template, seconds, after_lock,
                                           force, to)
        group.tried += 1
        group.killed += killed
        if problems:
            group.problems.append(f"case {n} ({label}): {'; '.join(problems)}")
        else:
            group.clean += 1
            shutil.rmtree(root / f"case{n}", ignore_errors=True)
    return groups


def kill_at_steps(root: Path, nemo: Path, template: Path, exchange: bool) -> Group:
    """A --force run over a complete OUT, killed just before each file-system step of outlock in turn (and halfway
    through each tree removal), until a run completes. After each kill: the checks of `check_after_kill`; a run
    without --force restores the old OUT if it is absent (and is refused: OUT exists), never leaves OUT.partial;
    then a run with --force succeeds and leaves nothing beside OUT."""
    group = Group()
    route = "exchange" if exchange else "renames"

    def attempt(step: int, mid: bool) -> str | None:
        """Kill before (or halfway through) step `step`; returns the step's name, None when the run completed."""
        folder = root / f"{route}-{step}{'-mid' if mid else ''}"
        folder.mkdir(parents=True)
        out = folder / "out"
        shutil.copytree(template, out)
        old_inode = os.stat(out).st_ino
        env = {**os.environ, "NM_NO_EXCHANGE": "" if exchange else "1", "NM_KILL_AT": str(step),
               "NM_KILL_MID": "1" if mid else ""}
        result = subprocess.run([sys.executable, "-c", DRIVER, *command(nemo, out, True)], cwd=REPO,
                                capture_output=True, text=True, timeout=120, env=env)
        if result.returncode == 0:  # ran past the last step
            shutil.rmtree(folder, ignore_errors=True)
            return None
        name = next((line.split("=", 1)[1] for line in result.stderr.splitlines()
                     if line.startswith("NM_STEP=")), "?")
        label = f"{route}: killed {'halfway through' if mid else 'before'} step {step} ({name})"
        group.tried += 1
        group.killed += 1
        group.cases.append(label)
        problems = []
        if result.returncode != -signal.SIGKILL:
            problems.append(f"exit {result.returncode} instead of the kill: {result.stderr.strip()[-300:]}")
        problems += check_after_kill(out, nemo, True)
        absent = not os.path.lexists(out)
        kept = os.path.lexists(out.with_name("out.replaced-old"))
        if absent or kept:
            plain = run_cli(command(nemo, out, False))
            if plain.returncode != 2 or "already exists" not in plain.stderr:
                problems.append(f"the run without --force: exit {plain.returncode}: {plain.stderr.strip()[-300:]}")
            if absent and (not os.path.lexists(out) or os.stat(out).st_ino != old_inode):
                problems.append("the run without --force did not restore the old OUT")
            if absent and "restored from out.replaced-old" not in plain.stdout:
                problems.append("no line says OUT was restored")
            if kept and not absent and "out.replaced-old holds the checkpoint it replaced" not in plain.stderr:
                problems.append("the kept copy is not reported")
            if os.path.lexists(out.with_name("out.partial")):
                problems.append("OUT.partial left by the run without --force")
        problems += check_next_run(out, nemo, True)
        if problems:
            group.problems.append(f"{label}: {'; '.join(problems)}")
        else:
            group.clean += 1
            shutil.rmtree(folder, ignore_errors=True)
        return name

    for step in range(1, 50):
        name = attempt(step, mid=False)
        if name is None:
            return group
        if name == "_remove_tree":
            attempt(step, mid=True)
    raise AssertionError("the replacement never completed in 50 steps")


def report(groups: dict[str, Group]) -> str:
    lines = [f"{'group':<22} {'tried':>6} {'killed':>7} {'clean':>6} {'defects':>8}"]
    for name, g in groups.items():
        lines.append(f"{name:<22} {g.tried:>6} {g.killed:>7} {g.clean:>6} {g.defects:>8}")
    for name, g in groups.items():
        lines += [f"  {name}: {p}" for p in g.problems[:10]]
    return "\n".join(lines)
