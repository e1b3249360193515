"""A YAML file as NeMo reads it, with exact positions.

ruamel.yaml composes the node tree (every key and value with its start and end mark; duplicate keys kept, since
they are a finding). Plain scalars are then resolved the way NeMo 1.0 resolves them: OmegaConf on PyYAML, i.e.
YAML 1.1 (`yes`/`no`/`on`/`off` are booleans, `017` is octal) plus OmegaConf's float resolver (`1e-5` is a float),
with timestamps left as strings. ruamel's own YAML 1.2 reading is kept beside it, so a finding can say where a
YAML 1.2 tool (an editor, yq, ruamel) reads the same text differently.
"""
from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from migrator.engine.diagnostics import Location
from migrator.errors import MigratorError

_BOOL_11 = {
    **dict.fromkeys(["yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"], True),
    **dict.fromkeys(["no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"], False),
}
_NULL = {"~", "null", "Null", "NULL", ""}
_INT_11 = re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"
)
# PyYAML's float resolver and the one OmegaConf adds (exponent without a dot); either one makes a float
_FLOAT_11 = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
    r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_TAG_TYPES = {
    "tag:yaml.org,2002:bool": "bool",
    "tag:yaml.org,2002:int": "int",
    "tag:yaml.org,2002:float": "float",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:str": "str",
}


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(value), type(value).__name__)


def resolve_yaml11(text: str) -> Any:
    """The Python value OmegaConf/PyYAML gives a plain (unquoted) scalar."""
    if text in _BOOL_11:
        return _BOOL_11[text]
    if text in _NULL:
        return None
    if _INT_11.match(text):
        return _int_11(text)
    if _FLOAT_11.match(text):
        return _float_11(text)
    return text


def _int_11(text: str) -> int:
    t = text.replace("_", "")
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    if t == "0":
        return 0
    if t.startswith("0b"):
        return sign * int(t[2:], 2)
    if t.startswith("0x"):
        return sign * int(t[2:], 16)
    if t.startswith("0"):
        return sign * int(t, 8)
    if ":" in t:
        value = 0
        for part in t.split(":"):
            value = value * 60 + int(part)
        return sign * value
    return sign * int(t)


def _float_11(text: str) -> float:
    t = text.replace("_", "").lower()
    if t.endswith(".inf"):
        return -math.inf if t.startswith("-") else math.inf
    if t.endswith(".nan"):
        return math.nan
    if ":" in t:
        sign = -1 if t.startswith("-") else 1
        value = 0.0
        for part in t.lstrip("+-").split(":"):
            value = value * 60 + float(part)
        return sign * value
    return float(t)


@dataclass(eq=False)
class Node:
    """A composed YAML node: positions plus NeMo's (YAML 1.1) reading of it."""

    kind: str  # "scalar" | "mapping" | "sequence"
    start: Location
    end: Location
    start_index: int
    end_index: int
    raw: str | None = None  # scalar text after unquoting/escapes
    style: str | None = None  # None = plain, '"' / "'" quoted, '|' / '>' block
    yaml12_type: str | None = None  # what ruamel (YAML 1.2 core schema) makes of it
    items: list[tuple[Node, Node]] = field(default_factory=list)  # mapping pairs, in file order
    children: list[Node] = field(default_factory=list)  # sequence items

    @property
    def is_plain(self) -> bool:
        return self.kind == "scalar" and self.style is None

    @property
    def value(self) -> Any:
        """The scalar as NeMo sees it (quoted and block scalars are strings)."""
        if self.kind != "scalar":
            return None
        return resolve_yaml11(self.raw or "") if self.is_plain else self.raw

    @property
    def yaml12_differs(self) -> bool:
        """True where a YAML 1.2 tool reads this plain scalar as another type than NeMo does."""
        return self.is_plain and self.yaml12_type is not None and self.yaml12_type != type_name(self.value)

    def get(self, key: str) -> Node | None:
        """The value of `key` in a mapping (the last one if the key is duplicated, as PyYAML would keep)."""
        found = None
        for k, v in self.items:
            if k.kind == "scalar" and k.raw == key:
                found = v
        return found

    def pair(self, key: str) -> tuple[Node, Node] | None:
        found = None
        for k, v in self.items:
            if k.kind == "scalar" and k.raw == key:
                found = (k, v)
        return found

    def walk_mappings(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Node]]:
        """Every mapping in the tree with its key path (sequence items add their index)."""
        if self.kind == "mapping":
            yield path, self
            for k, v in self.items:
                yield from v.walk_mappings(path + (str(k.raw),))
        elif self.kind == "sequence":
            for i, child in enumerate(self.children):
                yield from child.walk_mappings(path + (str(i),))


@dataclass
class Document:
    filename: str
    text: str
    roots: list[Node]  # one per YAML document in the stream (usually one)


class Locator:
    """1-based (row, column) of a character index, rows counted at line feeds only, as the fix applier, the
    suppression scan and Python's tokenizer count them. The YAML parser's own line numbers also break at a lone CR
    (and at NEL, LS, PS), so a `CR CR LF` would shift every row after it and a fix would land on the wrong bytes."""

    def __init__(self, text: str):
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def __call__(self, index: int) -> Location:
        row = bisect.bisect_right(self.starts, index)
        return Location(row, index - self.starts[row - 1] + 1)


def parse(text: str, filename: str) -> Document:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    from migrator.yaml import bounds

    bounds.check_size(len(text), filename)
    locate = Locator(text)
    yaml = bounds.bounded_ruamel(YAML(typ="rt"), filename)
    try:
        composed = [node for node in yaml.compose_all(text) if node is not None]
        bounds.check_tree(composed, filename)
        roots = [convert(node, locate) for node in composed]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = locate(mark.index) if mark else None
        where = f"{filename}:{at.row}:{at.column}" if at else filename
        problem = exc.problem or exc.context or "invalid YAML"
        raise MigratorError(f"{where}: YAML syntax error: {problem}") from None
    except YAMLError as exc:
        raise MigratorError(f"{filename}: YAML error: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise MigratorError(f"{filename}: YAML nested too deeply to read") from None
    return Document(filename=filename, text=text, roots=roots)


def convert(node: Any, locate: Locator, memo: dict[int, Node] | None = None) -> Node:
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    memo = {} if memo is None else memo
    if id(node) in memo:  # an alias: the same node object as its anchor
        return memo[id(node)]
    start, end = node.start_mark, node.end_mark
    common = dict(
        start=locate(start.index),
        end=locate(end.index),
        start_index=start.index,
        end_index=end.index,
    )
    if isinstance(node, ScalarNode):
        result = Node("scalar", raw=node.value, style=node.style or None,
                      yaml12_type=_TAG_TYPES.get(str(node.tag)), **common)
        memo[id(node)] = result
        return result
    if isinstance(node, MappingNode):
        result = Node("mapping", **common)
        memo[id(node)] = result
        result.items = [(convert(k, locate, memo), convert(v, locate, memo)) for k, v in node.value]
        return result
    if isinstance(node, SequenceNode):
        result = Node("sequence", **common)
        memo[id(node)] = result
        result.children = [convert(v, locate, memo) for v in node.value]
        return result
    raise MigratorError(f"unexpected YAML node {type(node).__name__}")  # pragma: no cover
