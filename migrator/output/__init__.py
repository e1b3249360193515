"""Renderers: one per `--output-format`, all reading the same FileResult/Diagnostic model."""
from __future__ import annotations

import importlib
from collections.abc import Callable

from migrator.engine.diagnostics import FileResult

# name -> "module:function"; a renderer takes the results and returns the full text to print on stdout.
RENDERERS: dict[str, str] = {
    "text": "migrator.output.text:render",
    "json": "migrator.output.json_format:render",
}


def renderer(name: str) -> Callable[[list[FileResult]], str]:
    module, func = RENDERERS[name].split(":")
    return getattr(importlib.import_module(module), func)
