"""`--strip`: remove the migrated keys from the NeMo 1.0 YAML as text-span edits.

Whole lines are removed (the key, its value and the comment on its line), anchored on the positions the YAML
parser reports; every other byte stays as it was (a ruamel dump would rewrite `False` as `false`, drop `null`s,
re-indent). A key is kept, with the reason, where removing its lines could change anything else: something else on
its line (a flow mapping), a duplicated key, or a mapping it would leave empty.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from migrator.engine.fixes import line_offsets
from migrator.errors import MigratorError
from migrator.migrate.mapping import Mapping
from migrator.yaml import checks
from migrator.yaml.document import Node, parse


@dataclass
class StripResult:
    text: str
    removed: list[str] = field(default_factory=list)  # yaml paths
    kept: list[tuple[str, str]] = field(default_factory=list)  # (yaml path, why)


def strip_text(mapping: Mapping) -> StripResult:
    text = mapping.document.text
    offsets = line_offsets(text)  # offsets[row]: where a 1-based row starts
    spans: list[tuple[int, int]] = []
    result = StripResult(text)
    per_parent: dict[int, list[Node]] = {}
    for argument in mapping.arguments:
        if argument.origin != "yaml" or argument.key is None or argument.value_node is None:
            continue
        key, value = argument.key, argument.value_node
        parent = argument.parent
        if parent is None:  # pragma: no cover - a carried key always has a parent mapping
            continue
        if all(key is not k for k, _ in parent.own_items):
            result.kept.append((argument.yaml_path, "it comes from a merge key (<<), and its anchor may serve others"))
            continue
        copies = [k for k, _ in parent.items if k.kind == "scalar" and k.raw == key.raw]
        if len(copies) > 1:  # what NM105 reports
            result.kept.append((argument.yaml_path, "the key is duplicated"))
            continue
        first = offsets[key.start.row]
        before = text[first:key.start_index]
        end_row = value.end.row if not (value.end.column == 1 and value.end.row > key.start.row) else value.end.row - 1
        line_end = offsets[min(end_row + 1, len(offsets) - 1)]
        after = text[value.end_index:line_end]
        if before.strip() or not _only_comment(after):
            result.kept.append((argument.yaml_path, "other content shares its line"))
            continue
        per_parent.setdefault(id(parent), []).append(key)
        if len(per_parent[id(parent)]) >= len(parent.own_items):
            result.kept.append((argument.yaml_path, "removing it would leave its mapping empty"))
            per_parent[id(parent)].pop()
            continue
        spans.append((first, line_end))
        result.removed.append(argument.yaml_path)
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + text[end:]
    result.text = text
    if result.removed:
        _verify(mapping, result)
    return result


def _only_comment(rest: str) -> bool:
    rest = rest.strip()
    return not rest or rest.startswith("#")


def _verify(mapping: Mapping, result: StripResult) -> None:
    """The stripped text parses, the removed keys are gone, and every other checkpoint setting reads the same."""
    try:
        document = parse(result.text, mapping.filename)
    except MigratorError as exc:  # pragma: no cover - whole-line removal of block keys keeps YAML valid
        raise MigratorError(f"{mapping.filename}: --strip would break the YAML ({exc}); nothing written") from None
    configs = [c for c in (checks.classify(r) for r in document.roots) if c is not None]
    before = _values(mapping.config)
    after = _values(configs[0]) if configs else {}
    expected = {k: v for k, v in before.items() if k not in result.removed}
    if after != expected:  # pragma: no cover - a guard, not an expected path
        raise MigratorError(f"{mapping.filename}: --strip would change other settings; nothing written")


def _values(config: checks.Config) -> dict[str, object]:
    values = {}
    for path, mapping in config.root.walk_mappings():
        for key, value in mapping.items:
            if key.kind == "scalar":
                dotted = ".".join(path + (str(key.raw),))
                values[dotted] = (value.raw, value.style) if value.kind == "scalar" else value.kind
    return values
