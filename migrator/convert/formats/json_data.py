"""Small JSON files of a checkpoint (`metadata.json`, zarr `.zarray`) read as data, with bounds.

`json.loads` raises RecursionError on deeply nested text and happily parses hundreds of megabytes; a checkpoint's
JSON files are a few hundred bytes. Here a file larger than `max_bytes`, text that is not UTF-8 JSON, nesting
deeper than the interpreter allows and a top level that is not an object are each one MigratorError naming the
file.
"""
from __future__ import annotations

import json
from typing import Any

from migrator.errors import MigratorError

MAX_JSON_BYTES = 1 << 20


def json_object(data: bytes, what: str, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The JSON object `data` holds; `what` (the file) names it in errors."""
    if len(data) > max_bytes:
        raise MigratorError(f"{what}: {len(data)} bytes, more than the {max_bytes} a checkpoint's JSON file may have")
    try:
        value = json.loads(data)
    except RecursionError:
        raise MigratorError(f"{what}: JSON nested too deeply") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise MigratorError(f"{what}: not valid JSON ({_one_line(error)})") from None
    if not isinstance(value, dict):
        raise MigratorError(f"{what}: a JSON {type(value).__name__}, not an object")
    return value


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200]
