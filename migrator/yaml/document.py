"""A YAML file as NeMo reads it, with exact positions.

PyYAML's SafeLoader composes the node tree, as it does for OmegaConf and so for NeMo (YAML 1.1, merge keys, flow
mappings as PyYAML takes them): every key and value with its start and end mark (code points; duplicate keys are
kept in the node's list, since they are a finding). libyaml's composer (CSafeLoader) is used where it is built in,
and the pure-Python composer where libyaml rejects the text (`{train:[1,2]}`: no space after the colon) so that a
file PyYAML reads is never refused. Merge keys (`<<: *base`) are applied as PyYAML's constructor applies them.

Plain scalars are then resolved the way NeMo 1.0 resolves them: YAML 1.1 (`yes`/`no`/`on`/`off` are booleans,
`017` is octal) plus OmegaConf's float resolver (`1e-5` is a float), with timestamps left as strings. A YAML 1.2
reading (the core schema, as editors, yq and ruamel read the text) is kept beside it, so a finding can say where
a YAML 1.2 tool reads the same text differently.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from migrator.engine.diagnostics import Location
from migrator.engine.yaml11 import resolve_yaml11, type_name
from migrator.errors import MigratorError

# The YAML 1.2 core schema as ruamel.yaml resolves plain scalars (first characters, then the patterns in order);
# a timestamp is neither of the types a finding names.
_YAML12 = [
    ("tTfF", "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")),
    ("-+0123456789.", "float", re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
        r"|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")),
    ("-+0123456789", "int", re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$")),
    ("~nN", "null", re.compile(r"^(?:~|null|Null|NULL)$")),
    ("0123456789", None, re.compile(
        r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?"
        r"(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?"
        r"(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$")),
]
MERGE_TAG = "tag:yaml.org,2002:merge"


def yaml12_type(text: str) -> str | None:
    """The type a YAML 1.2 (core schema) tool gives a plain scalar; None for a timestamp."""
    if text == "":
        return "null"
    for first, kind, pattern in _YAML12:
        if text[0] in first and pattern.match(text):
            return kind
    return "str"


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
    yaml12_type: str | None = None  # what a YAML 1.2 (core schema) tool makes of a plain scalar
    # mapping pairs as NeMo sees them: what merge keys (`<<`) bring in and the mapping does not set itself, then the
    # mapping's own pairs in file order (a duplicated key stays twice: it is a finding; the last one wins)
    items: list[tuple[Node, Node]] = field(default_factory=list)
    own_items: list[tuple[Node, Node]] = field(default_factory=list)  # the pairs written in this mapping (no `<<`)
    children: list[Node] = field(default_factory=list)  # sequence items
    merge_sources: list[Node] = field(default_factory=list)  # the mappings merge keys (`<<`) bring in

    def merged_mappings(self) -> list[Node]:
        """Every mapping this one takes keys from through merge keys, however deep."""
        found: list[Node] = []
        stack = list(self.merge_sources)
        while stack:
            node = stack.pop()
            if all(node is not f for f in found):
                found.append(node)
                stack.extend(node.merge_sources)
        return found

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
        """The value of `key` in a mapping (the last one if the key is duplicated, as PyYAML keeps)."""
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

    def keys(self) -> set[Any]:
        return {k.raw for k, _ in self.items if k.kind == "scalar"}

    def walk_mappings(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Node]]:
        """Every mapping in the tree with its key path (sequence items add their index); a mapping reached twice
        (an alias, or a merge) is yielded at each of its paths, but nothing loops on a recursive alias."""
        yield from self._walk(path, set())

    def _walk(self, path: tuple[str, ...], active: set[int]) -> Iterator[tuple[tuple[str, ...], Node]]:
        if id(self) in active:
            return
        active.add(id(self))
        if self.kind == "mapping":
            yield path, self
            for k, v in self.items:
                yield from v._walk(path + (str(k.raw),), active)
        elif self.kind == "sequence":
            for i, child in enumerate(self.children):
                yield from child._walk(path + (str(i),), active)
        active.discard(id(self))


@dataclass
class Document:
    filename: str
    text: str
    roots: list[Node]  # one per YAML document in the stream (usually one)


class Locator:
    """Positions from the parser's character index: rows counted at line feeds only, as the fix applier, the
    suppression scan and Python's tokenizer count them. PyYAML's own line numbers also break at a lone CR (and at
    NEL, LS, PS), so a `CR CR LF` shifted every row after it and a fix landed on the wrong bytes. `offset` is what
    the parser did not see (a BOM is taken off before parsing: libyaml skips it without counting it)."""

    def __init__(self, text: str, offset: int = 0):
        self.offset = offset
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def index(self, mark_index: int) -> int:
        return mark_index + self.offset

    def __call__(self, mark_index: int) -> Location:
        index = mark_index + self.offset
        row = bisect.bisect_right(self.starts, index)
        return Location(row, index - self.starts[row - 1] + 1)


def parse(text: str, filename: str) -> Document:
    """Compose every YAML document of `text`; MigratorError (one line naming the file and line) where PyYAML
    refuses it, or where it passes the bounds of `migrator.yaml.bounds` (size, depth, aliases)."""
    import yaml

    from migrator.yaml import bounds

    bounds.check_size(len(text), filename)
    offset = 1 if text.startswith("\ufeff") else 0
    locate = Locator(text, offset)
    try:
        nodes = compose_all(text[offset:])
        bounds.check_tree([node for node in nodes if node is not None], filename)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = locate(mark.index) if mark else None
        where = f"{filename}:{at.row}:{at.column}" if at else filename
        problem = exc.problem or exc.context or "invalid YAML"
        raise MigratorError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as exc:
        position = exc.position + offset
        row = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise MigratorError(f"{filename}:{row}:{column}: YAML error: unacceptable character #x{code:04x}") from None
    except yaml.YAMLError as exc:
        raise MigratorError(f"{filename}: YAML error: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise MigratorError(f"{filename}: YAML error: nested too deeply") from None
    memo: dict[int, Node] = {}
    try:
        roots = [convert(node, memo, locate) for node in nodes if node is not None]
    except MergeError as exc:
        raise MigratorError(f"{filename}:{exc.at.row}:{exc.at.column}: YAML error: {exc}") from None
    return Document(filename=filename, text=text, roots=roots)


class MergeError(Exception):
    """A merge key (`<<`) whose value is not a mapping or a list of mappings: PyYAML's constructor refuses it."""

    def __init__(self, message: str, at: Location):
        super().__init__(message)
        self.at = at


def compose_all(text: str) -> list[Any]:
    """PyYAML's node trees for every document: libyaml's composer where it takes the text, else PyYAML's own
    (which accepts a few flow forms libyaml refuses; an error is then PyYAML's own)."""
    import yaml

    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return list(yaml.compose_all(text, Loader=fast))
        except yaml.YAMLError:
            pass
    return list(yaml.compose_all(text, Loader=yaml.SafeLoader))


def convert(node: Any, memo: dict[int, Node] | None = None, locate: Locator | None = None) -> Node:
    """Our Node for a PyYAML node (an alias gives the same Node object as its anchor)."""
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    start, end = node.start_mark, node.end_mark
    common = dict(
        start=locate(start.index),
        end=locate(end.index),
        start_index=locate.index(start.index),
        end_index=locate.index(end.index),
    ) if locate is not None else dict(  # a tree composed apart from its text: the parser's own positions
        start=Location(start.line + 1, start.column + 1),
        end=Location(end.line + 1, end.column + 1),
        start_index=start.index,
        end_index=end.index,
    )
    if isinstance(node, ScalarNode):
        style = node.style or None
        result = Node("scalar", raw=node.value, style=style,
                      yaml12_type=yaml12_type(node.value) if style is None else "str", **common)
        memo[id(node)] = result
        return result
    if isinstance(node, MappingNode):
        result = Node("mapping", **common)
        memo[id(node)] = result
        merges = []
        for k, v in node.value:
            if k.tag == MERGE_TAG:
                merges.append(v)
            else:
                result.own_items.append((convert(k, memo, locate), convert(v, memo, locate)))
        if merges:
            result.items = _merged(merges, result.own_items, memo, result.merge_sources, locate) + result.own_items
        else:
            result.items = result.own_items
        return result
    if isinstance(node, SequenceNode):
        result = Node("sequence", **common)
        memo[id(node)] = result
        result.children = [convert(v, memo, locate) for v in node.value]
        return result
    raise MigratorError(f"unexpected YAML node {type(node).__name__}")  # pragma: no cover


def _merged(merges: list[Any], own: list[tuple[Node, Node]], memo: dict[int, Node],
            sources: list[Node], locate: Locator) -> list[tuple[Node, Node]]:
    """The pairs merge keys bring into a mapping, as the merge-key spec and PyYAML's SafeConstructor (6.0.1 to
    6.0.3) apply them: of several merged mappings the first one listed wins, a mapping's own pairs win over all of
    them. (PyYAML 6.0.4 deduplicates merged keys by string identity, so there the last listed one wins for most
    keys; the common case, one merged mapping, is the same in every version.)"""
    from yaml.nodes import MappingNode, SequenceNode

    flat: list[tuple[Node, Node]] = []
    for value in merges:
        for source in value.value if isinstance(value, SequenceNode) else [value]:
            if not isinstance(source, MappingNode):
                raise MergeError("expected a mapping or list of mappings for merging (`<<`)",
                                 locate(source.start_mark.index))
            sources.append(convert(source, memo, locate))
            flat.extend(sources[-1].items)
    own_keys = {k.raw for k, _ in own if k.kind == "scalar"}
    first: dict[Any, int] = {}
    for i, (k, _) in enumerate(flat):
        if k.kind == "scalar":
            first.setdefault(k.raw, i)
    return [(k, v) for i, (k, v) in enumerate(flat)
            if k.kind != "scalar" or (k.raw not in own_keys and first[k.raw] == i)]
