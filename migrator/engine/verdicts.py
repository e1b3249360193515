"""Language-neutral judgments of one value against the rule table and the target.

The YAML rules (migrator.yaml.checks), the Python rules (migrator.python.lint) and the mapping
(migrator.migrate.mapping) all ask the same questions of a value; they answer them here and only differ in where
the finding points and how a fix is spelled.
"""
from __future__ import annotations

import difflib
import functools
from typing import Any

from migrator.engine.table import ArgumentNote, Lifecycle, ValueLifecycle
from migrator.engine.yaml11 import resolve_yaml11, type_name
from migrator.versions import Target, Version


def with_article(type_: str) -> str:
    return {"int": "an integer", "bool": "a boolean", "str": "a string"}.get(type_, f"a {type_}")


def bool_spelling(value: bool) -> str:
    """NeMo's own configs spell booleans `True`/`False`; YAML 1.1, YAML 1.2 and Python all read them the same."""
    return "True" if value else "False"


def coerce_literal(value: Any, wanted: str) -> str | None:
    """The literal a wrongly typed value most likely meant (`"True"` -> `True`, `2.0` -> `2`), or None."""
    if isinstance(value, str):
        parsed = resolve_yaml11(value.strip())
        if type_name(parsed) == wanted:
            return bool_spelling(parsed) if wanted == "bool" else str(parsed)
        if wanted == "bool" and type_name(parsed) == "int" and parsed in (0, 1):
            return bool_spelling(bool(parsed))
        return None
    if wanted == "int" and isinstance(value, float) and value.is_integer():
        return str(int(value))
    if wanted == "bool" and type(value) is int and value in (0, 1):
        return bool_spelling(bool(value))
    return None


def closest_allowed(value: Any, allowed: list[Any]) -> str | None:
    """The one allowed value a typo most likely meant (`torch-dist` -> `torch_dist`), or None."""
    close = difflib.get_close_matches(str(value).lower().replace("-", "_"), [str(a) for a in allowed], n=2,
                                      cutoff=0.75)
    return close[0] if len(close) == 1 else None


def lifecycle_stage(lifecycle: ValueLifecycle, target: Target) -> tuple[str, Lifecycle] | None:
    """("NM106", stage) when the target removed the value, ("NM107", stage) when it deprecated it, else None."""
    for code, stage in (("NM106", lifecycle.removed), ("NM107", lifecycle.deprecated)):
        if stage is not None and target.reached(nemo=stage.nemo, megatron_core=stage.megatron_core):
            return code, stage
    return None


def note_applies(note: ArgumentNote, target: Target) -> bool:
    """Whether a version-keyed argument note (NM114) concerns the target."""
    if note.nemo_at_most and not target.nemo.at_most(note.nemo_at_most):
        return False
    return not (note.megatron_core_at_least and target.megatron_core < Version.parse(note.megatron_core_at_least))


def closest(name: str, known: list[str]) -> list[str]:
    """Did-you-mean candidates; a single candidate when one is clearly nearest (fewest edits)."""
    return list(_closest(name, tuple(known)))


@functools.lru_cache(maxsize=4096)
def _closest(name: str, known: tuple[str, ...]) -> tuple[str, ...]:  # keyword names repeat across a tree
    matches = difflib.get_close_matches(name, known, n=3, cutoff=0.8)
    if len(matches) < 2:
        return tuple(matches)
    distances = {m: edit_distance(name, m) for m in matches}
    best = min(distances.values())
    nearest = [m for m in matches if distances[m] == best]
    return tuple(nearest if len(nearest) == 1 and best <= 2 else matches)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance with adjacent transpositions (optimal string alignment)."""
    d = [[max(i, j) if min(i, j) == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]
