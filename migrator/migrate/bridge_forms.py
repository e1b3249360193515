"""The text forms of a Bridge mapping besides Python: a `checkpoint:` YAML block (for Bridge's OmegaConf YAML
overrides) and Hydra-style override strings (`checkpoint.ckpt_format=torch_dist`, one per line).

Both are checked before they are returned: the YAML is read back (PyYAML semantics are not needed: every value is
written in a form YAML 1.1 and 1.2 read the same way) and must give the mapped values; each override must split
into a key and a value that reads back as the mapped value.
"""
from __future__ import annotations

import json
import re
import textwrap
from typing import Any

from migrator.errors import MigratorError
from migrator.migrate.bridge_mapping import BridgeMapping

WIDTH = 110
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "none", "~"}


def yaml_scalar(value: Any) -> str:
    """A value written the same for YAML 1.1 (OmegaConf) and 1.2: lower-case booleans, null, plain integers, and
    double-quoted strings (JSON escapes are YAML escapes)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {value!r}")  # pragma: no cover - mapped values are these types


def override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it: true/false/null, integers, a plain string when it cannot be
    taken for anything else, otherwise a single-quoted string."""
    if not isinstance(value, str):
        return yaml_scalar(value)  # null, true/false and integers are written as in YAML
    if _PLAIN.match(value) and value.lower() not in _RESERVED and not value.startswith("-"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(" ".join(text.split()), WIDTH - len(indent) - 2,
                                                           break_on_hyphens=False, break_long_words=False)]


def emit_yaml(mapping: BridgeMapping) -> str:
    from migrator.python.bridge_emit import header_text, omitted_texts

    if mapping.refused:
        raise MigratorError(f"{mapping.filename}: refusing to emit: " + "; ".join(m.text for m in mapping.errors))
    label = {"error": "error", "warning": "warning", "info": "note"}
    lines = _comment(header_text(mapping))
    for message in mapping.messages:
        where = ", ".join(p for p in (message.code, f"line {message.location.row}" if message.location else None) if p)
        lines += _comment(f"{label[message.severity]}{f' ({where})' if where else ''}: {message.text}")
    for text in omitted_texts(mapping):
        lines += _comment(text)
    lines.append("checkpoint:" if mapping.fields else "checkpoint: {}")
    for item in mapping.fields:
        line = f"  {item.name}: {yaml_scalar(item.value)}"
        if item.comment:
            line += f"  # {' '.join(item.comment.split())}"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    _check_yaml(text, mapping)
    return text


def _check_yaml(text: str, mapping: BridgeMapping) -> None:
    from ruamel.yaml import YAML

    try:
        data = YAML(typ="safe", pure=True).load(text)
    except Exception as exc:  # pragma: no cover - a bug guard
        raise MigratorError(f"<migrate-config>: generated YAML does not parse: {str(exc).splitlines()[0]}") from None
    if (data or {}).get("checkpoint") != mapping.values() and mapping.fields:  # pragma: no cover - a bug guard
        raise MigratorError("<migrate-config>: generated YAML does not read back as the mapped values")


def emit_overrides(mapping: BridgeMapping) -> str:
    if mapping.refused:
        raise MigratorError(f"{mapping.filename}: refusing to emit: " + "; ".join(m.text for m in mapping.errors))
    return "".join(f"checkpoint.{item.name}={override_value(item.value)}\n" for item in mapping.fields)
