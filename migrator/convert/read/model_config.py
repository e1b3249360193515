"""Load a `.nemo`'s `model_config.yaml` into plain Python values, the way NeMo 1.0 (OmegaConf) reads it.

OmegaConf reads YAML 1.1 through PyYAML (`yes`/`no`/`on`/`off` are booleans, `0o17`-style octal as `017`) and adds
a float resolver for exponents without a dot (`1e-5`). ruamel.yaml, which this project uses, reads YAML 1.2. So
we let ruamel compose the node tree and resolve plain scalars with the lint's 1.1 rules
(`migrator.yaml.document.resolve_yaml11`); quoted scalars are strings. Anchors and aliases are followed; OmegaConf interpolations (`${...}`) stay strings.

`load_model_config` then checks the type and range of every architecture value the converter reads
(`model/nemo1_values.py`), naming the file, line and key of the first one NeMo 1.0 would not accept;
`load_yaml11` only reads (for the other YAML files the converter reads: NeMo 2.0's model.yaml, Bridge's
run_config.yaml).
"""
from __future__ import annotations

from typing import Any

from migrator.convert.model.nemo1_values import check_model_config
from migrator.errors import MigratorError
from migrator.yaml import bounds
from migrator.yaml.document import resolve_yaml11


Positions = dict[str, tuple[int, str | None]]  # dotted key -> (line, YAML text of a scalar value)


def _to_python(node: Any, memo: dict[int, Any], what: str, positions: Positions | None = None, path: str = "",
               depth: int = 0) -> Any:
    """`positions`, when given, receives the line (and scalar text) of the keys of the top-level mapping and of the
    mappings directly under it (`tokenizer.model`)."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, ScalarNode):  # quoted and block scalars are strings; plain ones resolve as YAML 1.1
        return node.value if node.style else resolve_yaml11(node.value)
    if isinstance(node, SequenceNode):
        items: list[Any] = []
        memo[id(node)] = items
        items.extend(_to_python(child, memo, what) for child in node.value)
        return items
    if isinstance(node, MappingNode):
        mapping: dict[Any, Any] = {}
        memo[id(node)] = mapping
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if str(key_node.tag) == "tag:yaml.org,2002:merge":  # `<<: *anchor`
                merged = _to_python(value_node, memo, what)
                sources = merged if isinstance(merged, list) else [merged]
                if not all(isinstance(source, dict) for source in sources):
                    raise MigratorError(f"{what}:{line}: a merge key (<<) must name a mapping or a list of mappings")
                for source in sources:
                    for k, v in source.items():
                        mapping.setdefault(k, v)
                continue
            if not isinstance(key_node, ScalarNode):
                raise MigratorError(f"{what}:{line}: a mapping key must be a scalar, not a "
                                    f"{'list' if isinstance(key_node, SequenceNode) else 'mapping'}")
            key = _to_python(key_node, memo, what)
            name = f"{path}{key}"
            if positions is not None and depth < 2 and isinstance(key, str):
                text = value_node.value if isinstance(value_node, ScalarNode) and not value_node.style else None
                positions[name] = (line, text if text is None or len(text) <= 60 else text[:57] + "...")
            mapping[key] = _to_python(value_node, memo, what, positions if depth < 1 else None,
                                      f"{name}.", depth + 1)
        return mapping
    return None


def load_model_config(text: bytes | str, what: str) -> dict[str, Any]:
    """A NeMo 1.0 `model_config.yaml` as a dict, its architecture values checked; `what` names the file or member
    in errors (exit 2)."""
    positions: Positions = {}
    config = load_yaml11(text, what, positions)

    def where(key: str) -> str:
        return f"{what}:{positions[key][0]}" if key in positions else what

    check_model_config(config, where, lambda key: positions[key][1] if key in positions else None)
    return config


def load_yaml11(text: bytes | str, what: str, positions: Positions | None = None) -> dict[str, Any]:
    """A YAML mapping read as NeMo (OmegaConf, YAML 1.1) reads it, unchecked; `what` names the file in errors."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    bounds.check_size(len(text), what)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MigratorError(f"{what}: not UTF-8 text ({error})") from None
    try:
        node = bounds.bounded_ruamel(YAML(typ="rt"), what).compose(text)
    except YAMLError as error:
        raise MigratorError(f"{what}: YAML error: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    except RecursionError:
        raise MigratorError(f"{what}: YAML nested too deeply to read") from None
    if node is not None:
        bounds.check_tree([node], what)
    config = _to_python(node, {}, what, positions) if node is not None else None
    if not isinstance(config, dict):
        raise MigratorError(f"{what}: expected a mapping of model settings, found {type(config).__name__}")
    return config
