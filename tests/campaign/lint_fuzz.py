"""A mutation fuzzer for the lint side: `lint`, `lint --fix` (safe and unsafe), `--strip` and `patch`.

Real NeMo 1.0 configs (the shared nemo-configs, the project's examples) and NeMo 2.0 scripts are mutated the way
real files go wrong (odd line breaks: CR CR LF, a lone CR, NEL, LS; tabs, a BOM, deleted, duplicated and re-indented
lines, anchors, aliases and merge keys, flow collections, odd values, deep expressions) and every mutant is run
in-process through the same functions the CLI calls. A case is *clean* when it ends as promised:

- nothing but a `MigratorError` (the CLI's one line, exit 2) escapes;
- a safe fix never changes what NeMo reads (PyYAML, which NeMo reads YAML with, gives equal values before and
  after); an unsafe fix changes only the settings it names; every fixed text still parses;
- `--strip` only deletes whole lines, the result parses and every value it did not remove reads the same;
- fixed and patched Python still compiles (when the original did).

Anything else is a *defect*: a crash (another exception) or a bad fix (an invariant broken). `run(seed, ...)`
returns the counts per group; the test runs a fixed seed, `scripts/fuzz_lint.py` runs longer ones.
"""
from __future__ import annotations

import difflib
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIRS = (ROOT.parent / "shared" / "fixtures" / "nemo-configs", ROOT / "fixtures" / "examples")

LINE_BREAKS = ["\r\n", "\r\r\n", "\r", "\x85", "\u2028", "\u2029", "\n\n", "\f\n", " \n", "\t\n", "\r\n\r\n"]
ODD_LINES = [
    "  dist_ckpt_load_on_device: yes", "  dist_ckpt_format: 'zarr'", '  dist_ckpt_parallel_save: "True"',
    "  dist_ckpt_paralel_load: on", "  dist_ckpt_torch_dist_multiproc: 2.0", "  dist_ckpt_load_strictness: log_al",
    "  dist_ckpt_parallel_dist_opt: True  # nemo-migrate: ignore[NM114]", "# nemo-migrate: ignore[NM113]",
    "  # nemo-migrate: ignore", "  async_save: no", "  x: &a {dist_ckpt_format: zarr}", "  <<: *a", "  y: *a",
    "---", "...", "%YAML 1.1", "  ? [a, b]\n  : 1", "  k: |\n    text # noqa: NM101\n    more",
    "  dist_ckpt_format: >-\n    torch_dist", "\ufeff", "\t", "  mcore_gpt: False", "  dist_ckpt_format: !!str zarr",
    "model: {dist_ckpt_format: zarr, dist_ckpt_load_on_device: on}", "  dist_ckpt_parallel_load: [1, 2]",
    "  dist_ckpt_parallel_load: ${oc.env:X}", "  - dist_ckpt_format: zarr", "exp_manager: ~",
]
ODD_VALUES = ["yes", "no", "on", "off", "True", '"True"', "'zarr'", "zarr", "torch_dist", "1e-5", "017", "null",
              "~", "${x}", "[1, 2]", "{a: 1}", "|\n  x", "''", '"yes"', "0x1F", "1_000", ".inf", "!!bool yes",
              "*undefined", "&anc yes", "2001-12-14"]
ODD_CHARS = [":", "-", "#", "'", '"', "{", "}", "[", "]", "&", "*", "!", "|", ">", "%", "@", "`", " ", "\t", "\r",
             "é", "\u00a0", "\ufeff", "\\", ",", "?"]

PY_HEAD = "from nemo import lightning as nl\n"
PY_SEEDS = [
    PY_HEAD + "strategy = nl.MegatronStrategy(\n    tensor_model_parallel_size=2,\n    ckpt_include_optimizer=True,\n"
    "    ckpt_async_save=True,\n)\n",
    PY_HEAD + "s = nl.MegatronStrategy(ckpt_load_on_device=True, save_ckpt_format=\"zarr\", ckpt_parallel_load=1)\n",
    "import nemo.lightning as nl\n\n\ndef make():\n    return nl.MegatronStrategy(  # build it\n        "
    "ckpt_load_strictness=\"log_all\",\n        ckpt_load_main_params=True,\n    )\n",
    PY_HEAD + "from nemo.collections import llm\nimport nemo_run as run\n\ncfg = run.Config(nl.MegatronStrategy, "
    "ckpt_parallel_save_optim=True, enable_nemo_ckpt_io=False)\n",
]


@dataclass
class Group:
    tried: int = 0
    clean: int = 0
    crashes: list[str] = field(default_factory=list)
    bad_fixes: list[str] = field(default_factory=list)

    @property
    def defects(self) -> int:
        return len(self.crashes) + len(self.bad_fixes)


# ------------------------------------------------------------------------------------------------ mutations
def _lines(text: str) -> list[str]:
    return text.split("\n")


def mutate_yaml(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        lines = _lines(text)
        i = rng.randrange(len(lines))
        kind = rng.randrange(9)
        if kind == 0 and len(lines) > 1:  # an odd line break
            j = rng.randrange(len(lines) - 1)
            text = "\n".join(lines[:j + 1]) + rng.choice(LINE_BREAKS) + "\n".join(lines[j + 1:])
            continue
        if kind == 1:
            lines.insert(i, rng.choice(ODD_LINES))
        elif kind == 2 and len(lines) > 1:
            del lines[i]
        elif kind == 3:
            lines.insert(i, lines[i])
        elif kind == 4:
            indent = rng.choice([-2, -1, 1, 2])
            lines[i] = lines[i][-indent:] if indent < 0 else " " * indent + lines[i]
        elif kind == 5 and ": " in lines[i]:
            key, _, _ = lines[i].partition(": ")
            lines[i] = f"{key}: {rng.choice(ODD_VALUES)}"
        elif kind == 6:
            at = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:at] + rng.choice(ODD_CHARS) + lines[i][at:]
        elif kind == 7:  # dist_ckpt keys where a model block is
            model = next((n for n, line in enumerate(lines) if line.startswith("model:")), None)
            if model is not None:
                lines.insert(model + 1, rng.choice(ODD_LINES[:10]))
        else:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        text = "\n".join(lines)
    return text


def mutate_python(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        lines = _lines(text)
        i = rng.randrange(len(lines))
        kind = rng.randrange(8)
        if kind == 0:
            terms = rng.choice([10, 500, 3000, 20000])
            lines.insert(i, "x = " + " + ".join(["1"] * terms))
        elif kind == 1:
            depth = rng.choice([50, 150, 250, 1000])
            lines.insert(i, "y = " + "(" * depth + "1" + ")" * depth)
        elif kind == 2 and len(lines) > 1:
            j = rng.randrange(len(lines) - 1)
            text = "\n".join(lines[:j + 1]) + rng.choice(LINE_BREAKS) + "\n".join(lines[j + 1:])
            continue
        elif kind == 3 and len(lines) > 1:
            del lines[i]
        elif kind == 4:
            lines.insert(i, lines[i])
        elif kind == 5:
            at = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:at] + rng.choice(ODD_CHARS + ["(", ")", "=", "\f", "\\\n"]) + lines[i][at:]
        elif kind == 6:
            lines.insert(i, rng.choice(["    ckpt_async_save=yes,", "    ckpt_include_optimizer=True,  # noqa",
                                        "s2 = nl.MegatronStrategy(**kw, ckpt_load_on_device=True)",
                                        "# nemo-migrate: ignore[NM108]", "if True:\n\tpass"]))
        else:
            lines[i] = "\ufeff" + lines[i] if i == 0 else "  " + lines[i]
        text = "\n".join(lines)
    return text


# ------------------------------------------------------------------------------------------------ oracles
def _pyyaml(text: str) -> Any:
    """What NeMo reads (OmegaConf loads YAML with PyYAML); a sentinel where PyYAML refuses the text."""
    import yaml

    try:
        return list(yaml.load_all(text, Loader=yaml.SafeLoader))
    except Exception as exc:  # noqa: BLE001 - any refusal is just "PyYAML does not read it"
        return ("refused", type(exc).__name__)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for n, v in enumerate(value):
            out.update(_flat(v, f"{prefix}.{n}" if prefix else str(n)))
        return out or {prefix: []}
    return {prefix: repr(value)}


def _only_line_deletions(before: str, after: str) -> bool:
    """`after` is `before` with whole lines (each with its own line feed, the last one may have none) taken out."""
    import re

    a = [line for line in re.split(r"(?<=\n)", before) if line]
    b = [line for line in re.split(r"(?<=\n)", after) if line]
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return all(tag in ("equal", "delete") for tag, *_ in ops)


# ------------------------------------------------------------------------------------------------ runners
class Harness:
    def __init__(self) -> None:
        from migrator.engine.runner import LintOptions
        from migrator.engine.table import load_table
        from migrator.versions import Source, Target

        self.table = load_table()
        d = self.table.releases.default_target
        from migrator.versions import Version

        self.target = Target(nemo=Version.parse(d.nemo), megatron_core=Version.parse(d.megatron_core))
        self.source = Source()
        self.options = LintOptions(target=self.target)
        self.patch_mapping = None

    def lint_and_fix(self, text: str, filename: str, group: Group, *, values: bool) -> None:
        from migrator.engine.diagnostics import FileResult
        from migrator.engine.runner import check_text, fix_file, language_for
        from migrator.errors import MigratorError

        try:
            diagnostics, _ = check_text(text, filename, self.table, self.options)
        except MigratorError:
            return
        result = FileResult(filename=filename, diagnostics=diagnostics, source=text)
        parses = language_for(filename).function("parses")
        original_parses = parses(text, filename)
        for unsafe in (False, True):
            fixed = fix_file(result, self.table, self.options, unsafe=unsafe)
            if fixed.fixed == text:
                continue
            what = f"{filename}: {'unsafe' if unsafe else 'safe'} fix"
            if original_parses and not parses(fixed.fixed, filename):
                group.bad_fixes.append(f"{what}: the fixed text does not parse")
            elif filename.endswith(".py"):
                if _compiles(text) and not _compiles(fixed.fixed):
                    group.bad_fixes.append(f"{what}: the fixed code does not compile")
            elif values:
                self._check_values(text, fixed, unsafe, what, group)

    def _check_values(self, text: str, fixed: Any, unsafe: bool, what: str, group: Group) -> None:
        before, after = _pyyaml(text), _pyyaml(fixed.fixed)
        if isinstance(before, tuple):
            return  # PyYAML refuses the original: nothing NeMo reads to compare
        if isinstance(after, tuple):
            group.bad_fixes.append(f"{what}: PyYAML refuses the fixed text ({after[1]})")
            return
        if not unsafe:
            if before != after:
                group.bad_fixes.append(f"{what} changed what NeMo reads: {_first_difference(before, after)}")
            return
        rows = {d.location.row for d in fixed.applied}
        named = _paths_at_rows(text, fixed.result.filename, rows)
        parents = {p.rpartition(".")[0] for p in named}
        fb, fa = _flat(before), _flat(after)
        changed = {k for k in fb.keys() | fa.keys() if fb.get(k) != fa.get(k)}
        stray = sorted(k for k in changed if k not in named and k.rpartition(".")[0] not in parents
                       and not any(k.startswith(p + ".") for p in named))
        if stray:
            group.bad_fixes.append(f"{what} changed settings it does not name: {stray[:3]}")

    def strip(self, text: str, filename: str, group: Group) -> None:
        from migrator.errors import MigratorError
        from migrator.migrate.mapping import map_text
        from migrator.migrate.strip import strip_text

        try:
            mapping = map_text(text, filename, self.table, self.target, self.source, force=True)
            result = strip_text(mapping)
        except MigratorError:
            return
        if not result.removed:
            return
        what = f"{filename}: --strip"
        if not _only_line_deletions(text, result.text):
            group.bad_fixes.append(f"{what} changed more than whole lines")
            return
        before, after = _pyyaml(text), _pyyaml(result.text)
        if isinstance(before, tuple):
            return
        if isinstance(after, tuple):
            group.bad_fixes.append(f"{what}: PyYAML refuses the stripped text ({after[1]})")
            return
        fb, fa = _flat(before[0] if before else None), _flat(after[0] if after else None)
        expected = {k: v for k, v in fb.items() if k not in result.removed}
        if fa != expected:
            diff = sorted(k for k in fa.keys() | expected.keys() if fa.get(k) != expected.get(k))
            group.bad_fixes.append(f"{what} changed values it did not remove: {diff[:3]}")

    def patch(self, text: str, filename: str, group: Group) -> None:
        from migrator.errors import MigratorError
        from migrator.python.patch import patch_bytes

        if self.patch_mapping is None:
            from migrator.migrate.mapping import map_text

            self.patch_mapping = map_text(
                "model:\n  dist_ckpt_format: torch_dist\n  dist_ckpt_load_on_device: false\n"
                "  dist_ckpt_parallel_save: true\n  dist_ckpt_load_strictness: log_all\n", "old.yaml",
                self.table, self.target, self.source)
        data = text.encode("utf-8")
        try:
            result = patch_bytes(data, filename, self.patch_mapping, self.table)
        except MigratorError:
            return
        if result.patched != data and _compiles(data) and not _compiles(result.patched):
            group.bad_fixes.append(f"{filename}: patch: the patched code does not compile")


def _compiles(code: str | bytes) -> bool:
    try:
        compile(code, "<fuzz>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _paths_at_rows(text: str, filename: str, rows: set[int]) -> set[str]:
    from migrator.yaml.document import parse

    paths = set()
    for n, root in enumerate(parse(text, filename).roots):  # prefixed by the document's index, as _flat does
        for path, mapping in root.walk_mappings((str(n),)):
            for key, _ in mapping.items:
                if key.start.row in rows:
                    paths.add(".".join(path + (str(key.raw),)))
    return paths


def _first_difference(before: Any, after: Any) -> str:
    fb, fa = _flat(before), _flat(after)
    for k in sorted(fb.keys() | fa.keys()):
        if fb.get(k) != fa.get(k):
            return f"{k}: {fb.get(k)} -> {fa.get(k)}"
    return "structure"


def seeds() -> list[tuple[str, str]]:
    found = []
    for folder in CONFIG_DIRS:
        if folder.is_dir():
            found += [(p.name, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.yaml"))]
    return found


def run(seed: int, yaml_cases: int, python_cases: int, budget_s: float | None = None) -> dict[str, Group]:
    """Mutate and check; returns {group: counts}. `budget_s` stops early (counts stay exact for what ran)."""
    rng = random.Random(seed)
    harness = Harness()
    groups = {name: Group() for name in ("yaml lint+fix", "yaml strip", "python lint+fix", "python patch")}
    configs = seeds()
    started = time.monotonic()

    def case(group: str, label: str, action: Callable[[], None]) -> None:
        g = groups[group]
        g.tried += 1
        before = g.defects
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - anything but MigratorError escaping is the defect we count
            g.crashes.append(f"{label}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
        if g.defects == before:
            g.clean += 1

    for n in range(yaml_cases):
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        name, text = configs[rng.randrange(len(configs))]
        mutant = mutate_yaml(text, rng)
        label = f"case {n} ({name}, seed {seed})"
        case("yaml lint+fix", label, lambda: harness.lint_and_fix(mutant, f"m{n}.yaml", groups["yaml lint+fix"],
                                                                   values=True))
        case("yaml strip", label, lambda: harness.strip(mutant, f"m{n}.yaml", groups["yaml strip"]))
    for n in range(python_cases):
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        mutant = mutate_python(rng.choice(PY_SEEDS), rng)
        label = f"case {n} (seed {seed})"
        case("python lint+fix", label, lambda: harness.lint_and_fix(mutant, f"m{n}.py", groups["python lint+fix"],
                                                                     values=False))
        case("python patch", label, lambda: harness.patch(mutant, f"m{n}.py", groups["python patch"]))
    return groups


def report(groups: dict[str, Group]) -> str:
    lines = [f"{'group':18} {'tried':>6} {'clean':>6} {'defects':>8}"]
    for name, g in groups.items():
        lines.append(f"{name:18} {g.tried:6} {g.clean:6} {g.defects:8}")
    for name, g in groups.items():
        for item in (g.crashes + g.bad_fixes)[:5]:
            lines.append(f"  {name}: {item}")
    return "\n".join(lines)
