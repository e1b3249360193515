#!/usr/bin/env python
"""Run the patcher and the Python lint over NVIDIA NeMo's own code (not committed; give the checkout's path).

Files: every `*.py` that calls `MegatronStrategy(` directly, plus every recipe under nemo/collections/llm/recipes/
that configures it as `run.Config(nl.MegatronStrategy, ...)`. For each file: does LibCST round-trip it byte for byte,
how many strategy calls are found, what the lint reports (by code), what `--patch` with a real NeMo 1.0 config would
change (in memory only), whether the patched file parses, compiles, keeps the AST outside the strategy calls, and is
stable under a second run.

    python benchmarks/nemo_real_code.py /tmp/nemo [--config megatron_gpt_config.yaml] [--target nemo=2.5] [-v]
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG = ROOT.parent / "shared" / "fixtures" / "nemo-configs" / "megatron_gpt_config.yaml"
RECIPE = re.compile(r"run\.Config\(\s*nl\.MegatronStrategy\b")


def select(nemo: Path) -> tuple[list[Path], list[Path]]:
    direct, recipes = [], []
    for path in sorted(nemo.rglob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "MegatronStrategy(" in text:
            direct.append(path)
        if "nemo/collections/llm/recipes/" in path.as_posix() and RECIPE.search(text):
            recipes.append(path)
    return direct, recipes


def strip_strategy_keywords(tree: ast.AST) -> str:
    """The AST with the keywords of every MegatronStrategy call / run.Config(MegatronStrategy, ...) removed."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            first = ast.unparse(node.args[0]) if node.args else ""
            if func.endswith("MegatronStrategy") or first.endswith("MegatronStrategy"):
                node.keywords = []
    return ast.dump(tree)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nemo", type=Path)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--target", default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()

    import libcst as cst

    from migrator.cli.options import resolve_source, resolve_target
    from migrator.engine.runner import LintOptions, check_text
    from migrator.engine.table import load_table
    from migrator.errors import MigratorError
    from migrator.migrate.mapping import load_mapping
    from migrator.python.patch import patch_bytes

    table = load_table()
    target = resolve_target(args.target)
    mapping = load_mapping(args.config, table, target, resolve_source(None))
    direct, recipes = select(args.nemo)
    files = sorted(set(direct) | set(recipes))
    print(f"NeMo checkout: {args.nemo}  config: {args.config.name}  target: {target.describe()}")
    print(f"files: {len(direct)} call MegatronStrategy( directly, {len(recipes)} recipes use "
          f"run.Config(nl.MegatronStrategy, ...); {len(files)} in all")

    stats = Counter()
    by_code: Counter[str] = Counter()
    with_config: Counter[str] = Counter()
    findings: list[str] = []
    problems: list[str] = []
    for path in files:
        rel = path.relative_to(args.nemo).as_posix()
        data = path.read_bytes()
        text = data.decode("utf-8")
        try:
            module = cst.parse_module(data)
        except cst.ParserSyntaxError as exc:
            problems.append(f"{rel}: LibCST cannot parse: {exc.message}")
            continue
        stats["parsed"] += 1
        if module.bytes != data:
            problems.append(f"{rel}: round trip changed the bytes")
        else:
            stats["round-trip identical"] += 1
        options = LintOptions(target=target)
        diagnostics, _ = check_text(text, rel, table, options)
        for d in diagnostics:
            by_code[d.code] += 1
            findings.append(f"{rel}:{d.location.row}:{d.location.column}: {d.code} {d.message}")
        diagnostics, _ = check_text(text, rel, table, LintOptions(target=target, config_path=args.config))
        for d in diagnostics:
            with_config[d.code] += 1
        try:
            result = patch_bytes(data, str(path), mapping, table)
        except MigratorError as exc:
            problems.append(f"{rel}: patch refused: {exc}")
            continue
        stats["strategy calls"] += len(result.plans)
        stats["calls edited"] += len(result.edited)
        stats["calls not edited (reported)"] += len(result.blocked)
        for plan in result.blocked:
            findings.append(f"{rel}:{plan.row}:{plan.column}: not edited: {plan.blocked}")
        if not result.changed:
            stats["unchanged"] += 1
            continue
        stats["changed"] += 1
        patched = result.patched.decode("utf-8")
        try:
            compile(patched, rel, "exec", dont_inherit=True)
            stats["patched compiles"] += 1
        except SyntaxError as exc:
            problems.append(f"{rel}: patched file does not compile: {exc}")
        if strip_strategy_keywords(ast.parse(text)) != strip_strategy_keywords(ast.parse(patched)):
            problems.append(f"{rel}: the AST outside the strategy calls changed")
        else:
            stats["AST outside the calls unchanged"] += 1
        again = patch_bytes(result.patched, str(path), mapping, table)
        if again.changed:
            problems.append(f"{rel}: a second patch run changes it again")
        else:
            stats["idempotent"] += 1
        if ("\r\n" in text) != ("\r\n" in patched):
            problems.append(f"{rel}: line endings changed")

    for key in ("parsed", "round-trip identical", "strategy calls", "calls edited", "calls not edited (reported)",
                "changed", "unchanged", "patched compiles", "AST outside the calls unchanged", "idempotent"):
        print(f"  {key:<34} {stats[key]}")
    print("lint findings by code (no --config):", dict(sorted(by_code.items())))
    print("lint findings by code (--config):   ", dict(sorted(with_config.items())))
    if args.verbose:
        print("\n".join(findings))
    print(f"problems: {len(problems)}")
    for problem in problems:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
