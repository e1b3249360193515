"""Read the model and config of an existing NeMo 2.0 checkpoint from its `context/io.json`, as plain JSON.

NeMo's converter accepts a NeMo 2.0 checkpoint as `--model_id` and takes the model and config classes from it
(`io.load_context(path, subpath="model")`). We do the same without importing NeMo or fiddle: io.json is fiddle's
JSON graph (section 5.1 of the reference notes), so the classes are the `fn_or_cls` pyrefs of the objects at
`<root>.model` and `<root>.model.config`, and the config's explicitly passed arguments are its `Attr(name=...)`
items.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrator.convert.formats.json_data import json_object
from migrator.errors import MigratorError

_ATTR = re.compile(r"^Attr\(name='([^']+)'\)$")


@dataclass(frozen=True)
class ReferenceModel:
    path: Path  # the io.json that was read
    model_class: str
    config_class: str
    config_arguments: dict[str, Any]  # explicit arguments: JSON values, "torch.<dtype>" / "module.attr" for pyrefs


def find_io_json(model_id: str) -> Path | None:
    """`model_id` as a NeMo 2.0 checkpoint: a directory with context/io.json, a context/ directory, or io.json."""
    path = Path(model_id).expanduser()
    for candidate in (path / "context" / "io.json", path / "io.json", path):
        if candidate.is_file() and candidate.name == "io.json":
            return candidate
    return None


def _value(node: Any, objects: dict[str, Any]) -> Any:
    """A plain value for a config argument; nested objects (other Buildables) are returned as their class path."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "leaf":
            return node.get("value")
        if kind == "pyref":
            return _pyref_name(node)
        if kind == "ref":
            key = node.get("key") if isinstance(node.get("key"), str) else None
            target = objects.get(key, {}) if key is not None else {}
            return {"<object>": _pyref_name(target.get("type")) or key}
    return node


def _fn_or_cls(obj: dict[str, Any], objects: dict[str, Any], where: str) -> str:
    for name, value in _meta(obj, objects).get("items", []):
        if name == "Attr(name='fn_or_cls')":
            found = _pyref_name(value)
            if found:
                return found
    raise MigratorError(f"{where}: no class recorded for this object (not a fiddle Config)")


MAX_IO_JSON_BYTES = 64 << 20  # a real io.json is tens of kilobytes


def load_io_json(io_json: Path) -> dict[str, dict[str, Any]]:
    """The `objects` of a fiddle io.json, each checked to be a JSON object (its `paths` a list, its `items` a list of
    [name, value] pairs) so that readers can walk them without tripping on another type."""
    try:
        data = json_object(io_json.read_bytes(), str(io_json), MAX_IO_JSON_BYTES)
    except OSError as error:
        raise MigratorError(f"{io_json}: cannot read ({error.strerror})") from None
    objects = data.get("objects")
    if not isinstance(objects, dict):
        raise MigratorError(f"{io_json}: not a NeMo 2.0 io.json (no `objects` mapping)")
    for key, obj in objects.items():
        ok = isinstance(obj, dict) and isinstance(obj.get("paths", []), list) and all(
            isinstance(obj.get(part, []), list) and all(isinstance(item, list) and len(item) == 2 and isinstance(
                item[0], str) for item in obj.get(part, [])) for part in ("items",))
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        ok = ok and (meta is None or isinstance(meta, dict) and isinstance(meta.get("items", []), list) and all(
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) for item in meta.get("items", [])))
        if not ok:
            raise MigratorError(f"{io_json}: object {key[:80]!r} is not a fiddle object (a mapping with `items` "
                                "[name, value] pairs)")
    return objects


def _pyref_name(node: Any) -> str | None:
    if isinstance(node, dict) and node.get("type") == "pyref" and isinstance(node.get("module"), str) \
            and isinstance(node.get("name"), str):
        return f"{node['module']}.{node['name']}"
    return None


def _meta(obj: dict[str, Any], objects: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and meta.get("type") == "ref":
        meta = objects.get(meta.get("key")) if isinstance(meta.get("key"), str) else None
    return meta if isinstance(meta, dict) else {}


def read_reference_model(io_json: Path) -> ReferenceModel:
    objects = load_io_json(io_json)
    model_key = next((k for k, o in objects.items() if "<root>.model" in o.get("paths", [])), None)
    if model_key is None:
        raise MigratorError(f"{io_json}: no object at <root>.model (not a NeMo 2.0 TrainerContext)")
    model = objects[model_key]
    model_class = _fn_or_cls(model, objects, f"{io_json}: <root>.model")
    config_key = None
    for name, value in model.get("items", []):
        if name == "Attr(name='config')" and isinstance(value, dict) and value.get("type") == "ref":
            config_key = value.get("key")
    if not isinstance(config_key, str) or config_key not in objects:
        raise MigratorError(f"{io_json}: <root>.model has no config argument")
    config = objects[config_key]
    config_class = _fn_or_cls(config, objects, f"{io_json}: <root>.model.config")
    arguments = {}
    for name, value in config.get("items", []):
        m = _ATTR.match(name)
        if m:
            arguments[m.group(1)] = _value(value, objects)
    return ReferenceModel(path=io_json, model_class=model_class, config_class=config_class,
                          config_arguments=arguments)
