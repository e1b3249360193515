"""Collects the Bridge snippets the tests produce, for the Bridge oracle (.ci/oracle_bridge_config).

When NEMO_MIGRATE_BRIDGE_SNIPPETS names a folder, `record()` writes each snippet emitted for Megatron-Bridge 0.3.x
as NAME.py plus NAME.json (the values it must hold and whether finalize() must fail); the oracle then executes them
all in real Megatron-Bridge 0.3.1. Without the variable it does nothing.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

ENV = "NEMO_MIGRATE_BRIDGE_SNIPPETS"


def record_lint_case(name: str, code: str, values: dict[str, Any], *, construct_fails: bool,
                     finalize_fails: bool) -> None:
    """A lint verdict for Bridge 0.3 to be confirmed by real Bridge: the snippet builds `checkpoint`; NM201/NM205 in a
    call say the construction raises TypeError, NM204 (a finalize() conflict) says finalize() fails."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    stem = "lint-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    (path / f"{stem}.py").write_text(code, encoding="utf-8")
    (path / f"{stem}.json").write_text(json.dumps({"values": values, "finalize_fails": finalize_fails,
                                                   "construct_fails": construct_fails}, indent=1), encoding="utf-8")


def record(name: str, code: str, mapping_json: dict[str, Any]) -> None:
    folder = os.environ.get(ENV)
    if not folder or not mapping_json["target"]["megatron-bridge"].startswith("0.3."):
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    finalize_fails = any(m["code"] == "NM204" and "finalize()" in m["message"] for m in mapping_json["messages"])
    (path / f"{stem}.py").write_text(code, encoding="utf-8")
    (path / f"{stem}.json").write_text(json.dumps({
        "values": {a["name"]: a["value"] for a in mapping_json["arguments"]},
        "finalize_fails": finalize_fails,
        "target": mapping_json["target"],
    }, indent=1), encoding="utf-8")
