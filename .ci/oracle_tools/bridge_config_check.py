"""Run every Bridge snippet the tests produced in real Megatron-Bridge (0.3.1 in the oracle venv), in one process.

    python bridge_config_check.py SNIPPETS_DIR SHIM_DIR FIELDS_YAML

For each NAME.py / NAME.json pair (lint-*: a lint verdict to confirm; `construct_fails` when the lint reported
NM201/NM205 on a keyword, which must then raise TypeError): execute the snippet (it imports CheckpointConfig from
megatron.bridge.training.config and builds `checkpoint`), then check that `checkpoint` is a real CheckpointConfig,
holds exactly the intended values (NAME.json), that every value fits the field's annotation (a Literal's values,
bool/int/str), and that finalize() passes, or fails when the migration predicted it (an NM204 finalize conflict).
Also checks rules/bridge_fields.yaml's entries for this Bridge release against the installed dataclass: the same
field names, defaults and Literal values. Prints one line per failure and a summary; exit 1 on any failure.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
import typing
from pathlib import Path


def main() -> int:
    snippets, shim_dir, fields_yaml = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    sys.path.insert(0, shim_dir)
    import bridge_cpu_shim  # noqa: F401  (before any megatron import)
    import yaml
    from megatron.bridge import __version__ as bridge_version
    from megatron.bridge.training.config import CheckpointConfig

    start = time.time()
    failures: list[str] = []
    hints = typing.get_type_hints(CheckpointConfig)
    real = {f.name: f for f in dataclasses.fields(CheckpointConfig)}

    def allowed(name: str) -> list | None:
        for arg in [hints[name], *typing.get_args(hints[name])]:
            if typing.get_origin(arg) is typing.Literal:
                return list(typing.get_args(arg))
        return None

    def fits(name: str, value) -> bool:
        lits = allowed(name)
        if lits is not None:
            return value in lits or (value is None and type(None) in typing.get_args(hints[name]))
        kinds = [hints[name], *typing.get_args(hints[name])]
        if value is None:
            return type(None) in kinds
        return any(isinstance(k, type) and isinstance(value, k) and not (k is int and isinstance(value, bool))
                   for k in kinds)

    # 1. the extracted field table against the installed class
    release = ".".join(bridge_version.split(".")[:3])
    table = yaml.safe_load(fields_yaml.read_text())
    ours = {}
    for entry in table["fields"]:
        for v in entry["variants"]:
            if tuple(map(int, v["first"].split("."))) <= tuple(map(int, release.split("."))) <= \
                    tuple(map(int, v["last"].split("."))):
                ours[entry["name"]] = v
    if set(ours) != set(real):
        failures.append(f"field table for {release}: names differ: only ours {sorted(set(ours) - set(real))}, "
                        f"only Bridge {sorted(set(real) - set(ours))}")
    for name, v in ours.items():
        if name not in real:
            continue
        default = real[name].default
        if default is dataclasses.MISSING or v.get("default") != default:
            failures.append(f"field table for {release}: {name} default {v.get('default')!r} != Bridge {default!r}")
        if (v.get("allowed") or None) != ([a for a in allowed(name) if a is not None] if allowed(name) else None):
            failures.append(f"field table for {release}: {name} allowed {v.get('allowed')} != Bridge {allowed(name)}")

    # 2. the snippets
    count = 0
    finalized = 0
    for code_path in sorted(snippets.glob("*.py")):
        count += 1
        spec = json.loads(code_path.with_suffix(".json").read_text())
        scope: dict = {"__name__": "snippet"}
        try:
            exec(compile(code_path.read_text(), str(code_path), "exec"), scope)
        except TypeError as exc:
            if spec.get("construct_fails"):
                continue  # the lint said so (NM201/NM205 in a call)
            failures.append(f"{code_path.name}: does not run: TypeError: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - report every failure, keep going
            failures.append(f"{code_path.name}: does not run: {type(exc).__name__}: {exc}")
            continue
        if spec.get("construct_fails"):
            failures.append(f"{code_path.name}: CheckpointConfig(...) built, but the lint said it raises TypeError")
            continue
        cfg = scope.get("checkpoint")
        if type(cfg) is not CheckpointConfig:
            failures.append(f"{code_path.name}: `checkpoint` is {type(cfg).__name__}, not CheckpointConfig")
            continue
        for name, value in spec["values"].items():
            got = getattr(cfg, name)
            if got != value or type(got) is not type(value):
                failures.append(f"{code_path.name}: {name} = {got!r}, intended {value!r}")
            if not fits(name, value):
                failures.append(f"{code_path.name}: {name} = {value!r} does not fit {hints[name]}")
        for name, f in real.items():
            if name not in spec["values"] and getattr(cfg, name) != f.default:
                failures.append(f"{code_path.name}: {name} = {getattr(cfg, name)!r} but the snippet did not set it")
        try:
            cfg.finalize()
            failed = None
        except (AssertionError, ValueError) as exc:
            failed = f"{type(exc).__name__}: {exc}"
        finalized += 1
        if spec["finalize_fails"] and failed is None:
            failures.append(f"{code_path.name}: finalize() passed, but the migration warned that it fails")
        if not spec["finalize_fails"] and failed is not None:
            failures.append(f"{code_path.name}: finalize() failed: {failed}")
    for line in failures:
        print(f"FAIL {line}")
    print(f"bridge {bridge_version}: {count} snippets executed, {finalized} finalize() checks, "
          f"{len(ours)} fields compared, {len(failures)} failures ({time.time() - start:.1f}s)")
    return 1 if failures or count == 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
