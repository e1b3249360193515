"""Renderers: one per `--output-format`, all reading the same FileResult/Diagnostic model."""
from __future__ import annotations

import importlib
from collections.abc import Callable

# name -> "module:function"; a renderer takes the results (and keyword options: `root`, the project root that
# machine formats make paths relative to; `unsafe_fixes`) and returns the full text to print on stdout.
RENDERERS: dict[str, str] = {
    "text": "migrator.output.text:render",
    "json": "migrator.output.json_format:render",
    "github": "migrator.output.github:render",
    "gitlab": "migrator.output.gitlab:render",
    "junit": "migrator.output.junit:render",
    "rdjson": "migrator.output.rdjson:render",
    "rdjsonl": "migrator.output.rdjson:render_lines",
    "sarif": "migrator.output.sarif:render",
}


def renderer(name: str) -> Callable[..., str]:
    module, func = RENDERERS[name].split(":")
    return getattr(importlib.import_module(module), func)
