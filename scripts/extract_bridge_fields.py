#!/usr/bin/env python3
"""Extract Megatron-Bridge's `CheckpointConfig` field table from its tagged sources (read-only, no network).

Usage: extract_bridge_fields.py --bridge-git-dir BRIDGE.git --mlm-git-dir MEGATRON-LM.git [TAG ...] > fields.yaml

For each Bridge release tag it reads `src/megatron/bridge/training/config.py` with `git show`, parses the
`CheckpointConfig` dataclass with `ast` (never imports it) and, when the class derives from Megatron-LM's
`megatron.training.config.CheckpointConfig` (Bridge 0.4+), reads that base class at the Megatron-LM commit the tag
pins as its `3rdparty/Megatron-LM` submodule. It prints the fields as YAML: one entry per field, with one `variants`
item per run of consecutive releases in which the field's type, allowed values, default and origin are the same.
It also records, per release, the assertions of `CheckpointConfig.finalize()`, `__post_init__` and the
checkpoint-related assertions of `ConfigContainer.validate()` as source text, so that the hand-written conflict
rules in rules/bridge.yaml can be checked against them (tests/test_bridge_table.py).

The output is `rules/bridge_fields.yaml`; regenerate it after fetching a new tag and review the diff.
"""
from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys

CONFIG = "src/megatron/bridge/training/config.py"
BASE_NAMES = {"MTrainCheckpointConfig", "MLMCheckpointConfig"}
MLM_CONFIG_CANDIDATES = ("megatron/training/config/training_config.py", "megatron/training/config.py")


def git_show(git_dir: str, rev: str, path: str) -> str | None:
    proc = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def submodule_commit(git_dir: str, tag: str) -> str | None:
    out = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", tag, "3rdparty/Megatron-LM"],
                         capture_output=True, text=True).stdout.split()
    return out[2] if len(out) >= 3 and out[1] == "commit" else None


def mcore_version(mlm_git_dir: str, commit: str) -> str:
    text = git_show(mlm_git_dir, commit, "megatron/core/package_info.py") or ""
    parts = {k: v for k, v in re.findall(r"^(MAJOR|MINOR|PATCH|PRE_RELEASE)\s*=\s*['\"]?([\w.]*)['\"]?", text, re.M)}
    return f"{parts.get('MAJOR')}.{parts.get('MINOR')}.{parts.get('PATCH')}{parts.get('PRE_RELEASE', '')}"


def find_class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


def literal_values(annotation: ast.expr) -> list | None:
    """The values of a `Literal[...]` inside the annotation (Optional/Union/| None around it allowed)."""
    for node in ast.walk(annotation):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value).split(".")[-1] == "Literal":
            elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return [ast.literal_eval(e) for e in elts]
    return None


def simple_type(annotation: ast.expr) -> tuple[str, bool]:
    """(bool|int|str|float|other, nullable) of an annotation."""
    text = ast.unparse(annotation)
    nullable = "None" in text or text.startswith("Optional")
    lits = literal_values(annotation)
    if lits is not None:
        kinds = {type(v).__name__ for v in lits if v is not None}
        return ("str" if kinds == {"str"} else "int" if kinds == {"int"} else "other"), nullable
    core = re.sub(r"Optional\[(.*)\]", r"\1", text)
    core = {c.strip() for c in core.split("|")} - {"None"}
    if len(core) == 1 and (only := core.pop()) in ("bool", "int", "str", "float"):
        return only, nullable
    return "other", nullable


def default_of(value: ast.expr | None) -> tuple[bool, object]:
    """(has_default, default) of a field's assigned value; `field(default=...)` is unwrapped."""
    if value is None:
        return False, None
    if isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1] == "field":
        for kw in value.keywords:
            if kw.arg == "default":
                return True, _literal(kw.value)
            if kw.arg == "default_factory":
                return True, f"<factory {ast.unparse(kw.value)}>"
        return False, None
    return True, _literal(value)


def _literal(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return f"<expr {ast.unparse(node)}>"


def class_fields(cls: ast.ClassDef, origin: str) -> dict[str, dict]:
    fields: dict[str, dict] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if "ClassVar" in ast.unparse(node.annotation):
                continue
            type_, nullable = simple_type(node.annotation)
            has_default, default = default_of(node.value)
            entry = {"type": type_, "nullable": nullable, "annotation": ast.unparse(node.annotation),
                     "origin": origin}
            allowed = literal_values(node.annotation)
            if allowed is not None:
                entry["allowed"] = [v for v in allowed if v is not None]
            if has_default:
                entry["default"] = default
            else:
                entry["required"] = True
            fields[node.target.id] = entry
    return fields


def checks(cls: ast.ClassDef, method: str, only_checkpoint: bool = False) -> list[str]:
    """Source text of the assert/raise conditions in a method (with their enclosing `if` tests)."""
    fn = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method), None)
    if fn is None:
        return []
    found: list[str] = []

    def visit(body: list[ast.stmt], guards: list[str]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.If):
                test = ast.unparse(stmt.test)
                visit(stmt.body, guards + [f"({test})" if isinstance(stmt.test, ast.BoolOp) else test])
                visit(stmt.orelse, guards + [f"not ({test})"])
            elif isinstance(stmt, (ast.For, ast.With, ast.Try)):
                visit(stmt.body, guards)
            elif isinstance(stmt, ast.Assert):
                found.append(" and ".join(guards + [f"assert {ast.unparse(stmt.test)}"]))
            elif isinstance(stmt, ast.Raise):
                found.append(" and ".join(guards + ["raise"]))
            elif isinstance(stmt, ast.Assign) and method == "__post_init__":
                found.append(" and ".join(guards + [f"set {ast.unparse(stmt)}"]))

    visit(fn.body, [])
    if only_checkpoint:
        found = [c for c in found if "checkpoint." in c]
    return found


def extract(bridge: str, mlm: str, tag: str) -> dict:
    source = git_show(bridge, tag, CONFIG)
    if source is None:
        raise SystemExit(f"{tag}: {CONFIG} not found")
    tree = ast.parse(source)
    cls = find_class(tree, "CheckpointConfig")
    bases = [ast.unparse(b) for b in cls.bases]
    pin = submodule_commit(bridge, tag)
    release = {"tag": tag, "megatron_lm_commit": pin, "megatron_core_at_pin": mcore_version(mlm, pin) if pin else None}
    fields: dict[str, dict] = {}
    post_init: list[str] = []
    finalize: list[str] = []
    if any(b in BASE_NAMES for b in bases):
        base_src = next((s for p in MLM_CONFIG_CANDIDATES if (s := git_show(mlm, pin, p))), None)
        if base_src is None:
            raise SystemExit(f"{tag}: Megatron-LM CheckpointConfig not found at {pin}")
        base = find_class(ast.parse(base_src), "CheckpointConfig")
        fields.update(class_fields(base, "megatron-lm"))
        post_init += checks(base, "__post_init__")
        finalize += [f"base: {c}" for c in checks(base, "finalize")]
        release["base"] = "megatron.training.config.CheckpointConfig"
    for name, entry in class_fields(cls, "bridge").items():
        if name in fields:
            entry["origin"] = "bridge (overrides megatron-lm)"
        fields[name] = entry
    post_init += checks(cls, "__post_init__")
    finalize += checks(cls, "finalize")
    container = find_class(tree, "ConfigContainer")
    release["post_init"] = post_init
    release["finalize"] = finalize
    release["validate"] = checks(container, "validate", only_checkpoint=True) if container else []
    release["fields"] = fields
    return release


def compact(releases: list[dict]) -> list[dict]:
    """One entry per field; consecutive releases with identical facts share a variant."""
    order: list[str] = []
    for rel in releases:
        order += [n for n in rel["fields"] if n not in order]
    table = []
    for name in order:
        variants: list[dict] = []
        for rel in releases:
            facts = rel["fields"].get(name)
            if facts is None:
                continue
            facts = {k: v for k, v in facts.items() if k != "annotation"} | {"annotation": facts["annotation"]}
            version = rel["tag"].lstrip("v")
            last = variants[-1] if variants else None
            contiguous = last is not None and last["_next"] == rel["_index"]
            if last is not None and contiguous and last["facts"] == facts:
                last["last"] = version
                last["_next"] = rel["_index"] + 1
            else:
                variants.append({"first": version, "last": version, "facts": facts, "_next": rel["_index"] + 1})
        table.append({"name": name, "variants": [
            {"first": v["first"], "last": v["last"], **v["facts"]} for v in variants]})
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bridge-git-dir", required=True)
    parser.add_argument("--mlm-git-dir", required=True)
    parser.add_argument("tags", nargs="*")
    args = parser.parse_args()
    tags = args.tags or sorted(
        (t for t in subprocess.run(["git", f"--git-dir={args.bridge_git_dir}", "tag"], capture_output=True,
                                   text=True).stdout.split() if re.fullmatch(r"v\d+\.\d+\.\d+", t)
         and tuple(map(int, t[1:].split("."))) >= (0, 2, 0)),
        key=lambda t: tuple(map(int, t[1:].split("."))))
    releases = []
    for i, tag in enumerate(tags):
        rel = extract(args.bridge_git_dir, args.mlm_git_dir, tag)
        rel["_index"] = i
        releases.append(rel)
    import yaml  # PyYAML: stable, plain block output

    out = {
        "schema_version": 1,
        "generated_by": "scripts/extract_bridge_fields.py (from the tagged sources; do not edit by hand)",
        "releases": [{k: v for k, v in r.items() if k not in ("fields", "_index")} for r in releases],
        "fields": compact(releases),
    }
    sys.stdout.write("# Megatron-Bridge CheckpointConfig fields per release, extracted from the tagged sources.\n")
    sys.stdout.write(yaml.safe_dump(out, sort_keys=False, width=120, allow_unicode=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
