"""Write fiddle's JSON serialization of a `fdl.Config` graph without importing fiddle.

NeMo 2.0 stores a checkpoint's context as fiddle JSON (`serialization.dump_json`, format "0.0.1") and rebuilds it
with `serialization.Deserialization` + `fdl.build`. The format, as fiddle 0.3 writes it:

* top level: `{"root": ref, "objects": {key: node}, "refcounts": {key: n}, "version": "0.0.1"}`;
* a `fdl.Config` node: `{"type": pyref(fiddle._src.config.Config), "items": [["Attr(name='x')", value], ...],
  "metadata": ref(BuildableTraverserMetadata node), "paths": ["<root>.model", ...]}`; its metadata node holds
  `fn_or_cls` (a pyref to the class), `argument_names` (a tuple node), `argument_tags` and `argument_history`
  (empty dict nodes);
* dicts, lists and tuples are nodes of type pyref(builtins.dict/list/tuple) with `Key(key=...)` /
  `Index(index=...)` items; a dict's metadata is the tuple of its keys;
* leaves: `{"type": "leaf", "value": v, "paths": [...]}`; Python objects by reference: `{"type": "pyref",
  "module": m, "name": n}` (torch dtypes, functions, classes);
* object keys are `snake_case(ClassName)_N`, children are written before their parents.

NeMo's `load_context(path, subpath="model")` finds its start object by an exact match in `paths`, so every
Config node carries the attribute path that leads to it from the root.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = "0.0.1"
_CONFIG = {"type": "pyref", "module": "fiddle._src.config", "name": "Config"}
_METADATA = {"type": "pyref", "module": "fiddle._src.config", "name": "BuildableTraverserMetadata"}


@dataclass(frozen=True)
class PyRef:
    """A Python object referenced by import path, e.g. PyRef("torch.bfloat16")."""

    path: str

    def node(self) -> dict[str, str]:
        module, name = self.path.rsplit(".", 1)
        return {"type": "pyref", "module": module, "name": name}


@dataclass
class Config:
    """`fdl.Config(target, **arguments)`; only the arguments given here are recorded (NeMo's io does the same)."""

    target: str  # import path of the class or function
    arguments: dict[str, Any] = field(default_factory=dict)


def _builtin(name: str) -> dict[str, str]:
    return {"type": "pyref", "module": "builtins", "name": name}


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[^_A-Z])(?=[A-Z])", "_", name).lower()


class _Writer:
    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def _key(self, hint: str) -> str:
        base = _snake_case(hint)
        n = self.counts.get(base, 0) + 1
        self.counts[base] = n
        return f"{base}_{n}"

    def _add(self, hint: str, node: dict[str, Any]) -> dict[str, str]:
        key = self._key(hint)
        self.objects[key] = node
        return {"type": "ref", "key": key}

    def _tuple(self, values: list[Any]) -> dict[str, str]:
        items = [[f"Index(index={i})", v] for i, v in enumerate(values)]
        return self._add("tuple", {"type": _builtin("tuple"), "items": items, "metadata": None})

    def _empty_dict(self) -> dict[str, str]:
        empty_keys = {"type": _builtin("tuple"), "items": [], "metadata": None}
        return self._add("dict", {"type": _builtin("dict"), "items": [], "metadata": empty_keys})

    def value(self, value: Any, path: str) -> Any:
        if isinstance(value, Config):
            return self.config(value, path)
        if isinstance(value, PyRef):
            return value.node()
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"{path}: dict keys must be strings")
            items = [[f"Key(key={k!r})", self.value(v, f"{path}[{k!r}]")] for k, v in value.items()]
            keys = self._tuple(list(value))
            return self._add("dict", {"type": _builtin("dict"), "items": items, "metadata": keys, "paths": [path]})
        if isinstance(value, (list, tuple)):
            kind = "list" if isinstance(value, list) else "tuple"
            items = [[f"Index(index={i})", self.value(v, f"{path}[{i}]")] for i, v in enumerate(value)]
            return self._add(kind, {"type": _builtin(kind), "items": items, "metadata": None, "paths": [path]})
        if value is None or isinstance(value, (bool, int, str)):
            return {"type": "leaf", "value": value, "paths": [path]}
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"{path}: {value} cannot be written to JSON")
            return {"type": "leaf", "value": value, "paths": [path]}
        raise TypeError(f"{path}: cannot serialise {type(value).__name__}")

    def config(self, cfg: Config, path: str) -> dict[str, str]:
        items = [[f"Attr(name={name!r})", self.value(v, f"{path}.{name}")] for name, v in cfg.arguments.items()]
        names = self._tuple(list(cfg.arguments))
        tags = self._empty_dict()
        history = self._empty_dict()
        class_name = cfg.target.rsplit(".", 1)[-1]
        metadata = self._add("buildable_traverser_metadata", {
            "type": _METADATA,
            "items": [["Attr(name='fn_or_cls')", PyRef(cfg.target).node()],
                      ["Attr(name='argument_names')", names],
                      ["Attr(name='argument_tags')", tags],
                      ["Attr(name='argument_history')", history]],
            "metadata": _METADATA,
        })
        return self._add(class_name, {"type": _CONFIG, "items": items, "metadata": metadata, "paths": [path]})


def graph(root: Config) -> dict[str, Any]:
    """The JSON-ready dict fiddle's `dump_json` would produce for `root` (a tree: every node referenced once)."""
    writer = _Writer()
    root_ref = writer.config(root, "<root>")
    return {"root": root_ref, "objects": writer.objects, "refcounts": {k: 1 for k in writer.objects},
            "version": FORMAT_VERSION}


def dumps(root: Config) -> str:
    return json.dumps(graph(root), allow_nan=False)
