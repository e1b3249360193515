"""Print (or check) the preset values of NeMo 2.0's config classes that nemo-migrate compares against.

Runs in the oracle venv (it imports NeMo; the project itself never does):
  $ORACLE_PY .ci/oracle_tools/nemo2_presets.py --dump OUT.json CLASS...   # {config_class: {field: default}}
  $ORACLE_PY .ci/oracle_tools/nemo2_presets.py --check rules/nemo2_models.yaml
--check compares every `preset:` block of the rules file with the installed NeMo's dataclass defaults and exits
non-zero on a difference, so the data cannot drift from the NeMo it claims to describe. Config classes that the
installed NeMo lacks (newer than it, e.g. NemotronHConfig4B in 2.4.0) are reported and skipped.
"""
import dataclasses
import importlib
import json
import sys

import torch
import yaml


def _plain(value):
    if isinstance(value, torch.dtype):
        return str(value)
    if callable(value) and not isinstance(value, type):
        name = getattr(value, "__qualname__", getattr(value, "__name__", repr(value)))
        if "<lambda>" in name:
            return "<lambda>"
        return f"{value.__module__}.{name}"
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, (int, float, str, bool, list)) or value is None:
        return value
    return repr(value)


def _same(a, b) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


def class_defaults(path: str) -> dict | None:
    module, name = path.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            try:
                out[f.name] = _plain(f.default_factory())  # type: ignore[misc]
            except Exception as e:  # e.g. the Mamba stack spec needs mamba_ssm; not an architecture value
                out[f.name] = f"<unavailable: {type(e).__name__}>"
    return out


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        rules = yaml.safe_load(open(sys.argv[2]))
        bad = 0
        classes = {}
        for mid, entry in rules["models"].items():
            classes.setdefault(entry["config_class"], []).append(mid)
        for fam in rules["families"].values():
            for key in ("config_class", "rope_scaling_config_class"):
                if fam.get(key):
                    classes.setdefault(fam[key], []).append("family")
        presets = rules["presets"]
        for cls_path, users in classes.items():
            defaults = class_defaults(cls_path)
            if defaults is None:
                print(f"skip {cls_path} (not in this NeMo; used by {users})")
                continue
            bad_before = bad
            for field, value in presets[cls_path].items():
                if field not in defaults:
                    print(f"MISMATCH {cls_path}.{field}: not a field of the installed class")
                    bad += 1
                elif not _same(defaults[field], value):
                    print(f"MISMATCH {cls_path}.{field}: rules say {value!r}, NeMo says {defaults[field]!r}")
                    bad += 1
            if bad == bad_before:
                print(f"ok {cls_path}: {len(presets[cls_path])} preset values")
        return 1 if bad else 0
    if len(sys.argv) >= 3 and sys.argv[1] == "--dump":
        with open(sys.argv[2], "w") as f:
            json.dump({p: class_defaults(p) for p in sys.argv[3:]}, f, indent=1, default=str)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
