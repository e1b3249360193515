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
from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import Any

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


class Node:
    """A composed YAML node: positions plus NeMo's (YAML 1.1) reading of it.

    A view over PyYAML's node, made when a rule reaches it (ruff's habit: only the work a file needs): positions,
    the YAML 1.2 reading and a mapping's pairs are computed when read, so the keys and values no rule looks at cost
    nothing beyond libyaml's composition. The same PyYAML node always gives the same Node object (an alias gives its
    anchor's), so nodes can be compared by identity.
    """

    __slots__ = ("kind", "_y", "_tree", "_items", "_own", "_children", "_sources", "_index")

    def __init__(self, kind: str, y: Any, tree: _Tree):
        self.kind = kind  # "scalar" | "mapping" | "sequence"
        self._y = y
        self._tree = tree
        self._items: list[tuple[Node, Node]] | None = None
        self._own: list[tuple[Node, Node]] | None = None
        self._children: list[Node] | None = None
        self._sources: list[Node] | None = None
        self._index: dict[str, tuple[Any, Any]] | None = None

    def __repr__(self) -> str:
        return f"Node({self.kind}, {self.start.row}:{self.start.column}, raw={self.raw!r})"

    # ------------------------------------------------------------------------------------------- positions
    @property
    def start(self) -> Location:
        return self._tree.locate(self._y.start_mark.index)

    @property
    def end(self) -> Location:
        return self._tree.locate(self._y.end_mark.index)

    @property
    def start_index(self) -> int:
        return self._tree.locate.index(self._y.start_mark.index)

    @property
    def end_index(self) -> int:
        return self._tree.locate.index(self._y.end_mark.index)

    # ------------------------------------------------------------------------------------------- scalars
    @property
    def raw(self) -> str | None:
        """A scalar's text after unquoting/escapes (None for a mapping or sequence)."""
        return self._y.value if self.kind == "scalar" else None

    @property
    def style(self) -> str | None:
        """None = plain, '"' / "'" quoted, '|' / '>' block (None for a mapping or sequence)."""
        return (self._y.style or None) if self.kind == "scalar" else None

    @property
    def yaml12_type(self) -> str | None:
        """What a YAML 1.2 (core schema) tool makes of a plain scalar ("str" for a quoted or block one)."""
        if self.kind != "scalar":
            return None
        return yaml12_type(self._y.value) if not self._y.style else "str"

    @property
    def is_plain(self) -> bool:
        return self.kind == "scalar" and not self._y.style

    @property
    def value(self) -> Any:
        """The scalar as NeMo sees it (quoted and block scalars are strings)."""
        if self.kind != "scalar":
            return None
        return resolve_yaml11(self._y.value) if not self._y.style else self._y.value

    @property
    def yaml12_differs(self) -> bool:
        """True where a YAML 1.2 tool reads this plain scalar as another type than NeMo does."""
        return self.is_plain and self.yaml12_type is not None and self.yaml12_type != type_name(self.value)

    # ------------------------------------------------------------------------------------------- collections
    @property
    def items(self) -> list[tuple[Node, Node]]:
        """A mapping's pairs as NeMo sees them: what merge keys (`<<`) bring in and the mapping does not set itself,
        then the mapping's own pairs in file order (a duplicated key stays twice: it is a finding; the last one
        wins). Empty for a scalar or sequence."""
        if self._items is None:
            self._pairs()
        return self._items  # type: ignore[return-value]

    @property
    def own_items(self) -> list[tuple[Node, Node]]:
        """The pairs written in this mapping (no `<<`)."""
        if self._own is None:
            self._pairs()
        return self._own  # type: ignore[return-value]

    @property
    def merge_sources(self) -> list[Node]:
        """The mappings merge keys (`<<`) bring in."""
        if self._sources is None:
            self._pairs()
        return self._sources  # type: ignore[return-value]

    @property
    def children(self) -> list[Node]:
        """A sequence's items (empty for a scalar or mapping)."""
        if self._children is None:
            wrap = self._tree.wrap
            self._children = [wrap(c) for c in self._y.value] if self.kind == "sequence" else []
        return self._children

    def _pairs(self) -> None:
        # a document with merge keys is converted whole when parsed (`_Tree.convert`); here there are none, so a
        # mapping's pairs are the ones written in it
        wrap = self._tree.wrap
        pairs = [(wrap(k), wrap(v)) for k, v in self._y.value] if self.kind == "mapping" else []
        self._items = self._own = pairs
        self._sources = []

    def _raw_pairs(self) -> list[tuple[Any, Any]]:
        """The PyYAML (key, value) nodes of `items`, without making Nodes of them."""
        if self._items is None and not self._tree.merges:
            return self._y.value if self.kind == "mapping" else []
        return [(k._y, v._y) for k, v in self.items]

    def _lookup(self) -> dict[str, tuple[Any, Any]]:
        """Scalar key text -> its last (key, value) PyYAML pair in `items`."""
        if self._index is None:
            scalar = self._tree.scalar
            self._index = {k.value: (k, v) for k, v in self._raw_pairs() if type(k) is scalar}
        return self._index

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

    def get(self, key: str) -> Node | None:
        """The value of `key` in a mapping (the last one if the key is duplicated, as PyYAML keeps)."""
        pair = self._lookup().get(key)
        return self._tree.wrap(pair[1]) if pair is not None else None

    def pair(self, key: str) -> tuple[Node, Node] | None:
        pair = self._lookup().get(key)
        return (self._tree.wrap(pair[0]), self._tree.wrap(pair[1])) if pair is not None else None

    def keys(self) -> set[Any]:
        return set(self._lookup())

    def keys_named(self, names: Container[str]) -> list[Node]:
        """The scalar keys of `items` whose text is in `names`, in order (duplicates included)."""
        scalar, wrap = self._tree.scalar, self._tree.wrap
        return [wrap(k) for k, _ in self._raw_pairs() if type(k) is scalar and k.value in names]

    def duplicate_keys(self) -> list[tuple[Node, Node]]:
        """(first key, repeated key) for each scalar key written twice in this mapping (`own_items`: what a merge key
        brings in may be overridden, that is no duplicate)."""
        if self.kind != "mapping":
            return []
        if self._own is not None:
            own = [(k._y, v._y) for k, v in self._own]
        else:
            own = self._y.value
        scalar = self._tree.scalar
        seen: dict[str, Any] = {}
        found = []
        for k, _ in own:
            if type(k) is not scalar:
                continue
            first = seen.setdefault(k.value, k)
            if first is not k:
                found.append((first, k))
        return [(self._tree.wrap(a), self._tree.wrap(b)) for a, b in found]

    def walk_mappings(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Node]]:
        """Every mapping in the tree with its key path (sequence items add their index); a mapping reached twice
        (an alias, or a merge) is yielded at each of its paths, but nothing loops on a recursive alias."""
        yield from self._walk(path, set())

    def _walk(self, path: tuple[str, ...], active: set[int]) -> Iterator[tuple[tuple[str, ...], Node]]:
        if id(self) in active:
            return
        active.add(id(self))
        scalar, wrap = self._tree.scalar, self._tree.wrap
        if self.kind == "mapping":
            yield path, self
            for k, v in self._raw_pairs():
                if type(v) is not scalar:  # a scalar holds no mapping
                    yield from wrap(v)._walk(path + (k.value if type(k) is scalar else "None",), active)
        elif self.kind == "sequence":
            for i, child in enumerate(self._y.value):
                if type(child) is not scalar:
                    yield from wrap(child)._walk(path + (str(i),), active)
        active.discard(id(self))


class _Tree:
    """The Nodes of one parsed text, one per PyYAML node."""

    __slots__ = ("kinds", "locate", "memo", "merges", "scalar")

    def __init__(self, merges: bool, locate: Locator):
        from yaml.nodes import MappingNode, ScalarNode, SequenceNode

        self.locate = locate
        self.memo: dict[int, Node] = {}
        self.merges = merges  # the text may hold a merge key: every node is converted when parsed
        self.scalar = ScalarNode
        self.kinds = {ScalarNode: "scalar", MappingNode: "mapping", SequenceNode: "sequence"}

    def wrap(self, y: Any) -> Node:
        node = self.memo.get(id(y))
        if node is None:
            kind = self.kinds.get(type(y))
            if kind is None:  # pragma: no cover
                raise MigratorError(f"unexpected YAML node {type(y).__name__}")
            node = self.memo[id(y)] = Node(kind, y, self)
        return node

    def convert(self, y: Any) -> Node:
        """The Node for a PyYAML node with every pair and child below it made now (merge keys applied as PyYAML's
        constructor applies them, in document order)."""
        if id(y) in self.memo:
            return self.memo[id(y)]
        result = self.wrap(y)
        if result.kind == "mapping":
            result._items, result._own, result._sources = [], [], []
            merges = []
            for k, v in y.value:
                if k.tag == MERGE_TAG:
                    merges.append(v)
                else:
                    result._own.append((self.convert(k), self.convert(v)))
            if merges:
                result._items = self._merged(merges, result._own, result._sources) + result._own
            else:
                result._items = result._own
        elif result.kind == "sequence":
            result._children = []
            result._children = [self.convert(v) for v in y.value]
        return result

    def _merged(self, merges: list[Any], own: list[tuple[Node, Node]], sources: list[Node]) -> list[tuple[Node, Node]]:
        """The pairs merge keys bring into a mapping, as the merge-key spec and PyYAML's SafeConstructor (6.0.1 to
        6.0.3) apply them: of several merged mappings the first one listed wins, a mapping's own pairs win over all
        of them. (PyYAML 6.0.4 deduplicates merged keys by string identity, so there the last listed one wins for
        most keys; the common case, one merged mapping, is the same in every version.)"""
        from yaml.nodes import MappingNode, SequenceNode

        flat: list[tuple[Node, Node]] = []
        for value in merges:
            for source in value.value if isinstance(value, SequenceNode) else [value]:
                if not isinstance(source, MappingNode):
                    raise MergeError("expected a mapping or list of mappings for merging (`<<`)",
                                     self.locate(source.start_mark.index))
                sources.append(self.convert(source))
                flat.extend(sources[-1].items)
        own_keys = {k.raw for k, _ in own if k.kind == "scalar"}
        first: dict[Any, int] = {}
        for i, (k, _) in enumerate(flat):
            if k.kind == "scalar":
                first.setdefault(k.raw, i)
        return [(k, v) for i, (k, v) in enumerate(flat)
                if k.kind != "scalar" or (k.raw not in own_keys and first[k.raw] == i)]


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
        bounds.check_tree([node for node in nodes if node is not None], filename, aliases="*" in text and "&" in text)
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
    # a merge key needs `<<`, or an explicit tag that names (or %-escapes) `merge`: without either the pairs of a
    # mapping are the ones written in it, and Nodes are made as rules reach them; with one, the whole tree is
    # converted now, merges applied in document order (and a bad merge is an error wherever it is)
    tree = _Tree("<<" in text or ("!" in text and ("merge" in text or "%" in text)), locate)
    try:
        roots = [(tree.convert if tree.merges else tree.wrap)(node) for node in nodes if node is not None]
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
    (which accepts a few flow forms libyaml refuses; an error is then PyYAML's own). Tags are resolved only as far
    as this module reads them (`_composers`)."""
    import yaml

    fast, pure = _composers()
    if fast is not None:
        try:
            return list(yaml.compose_all(text, Loader=fast))
        except yaml.YAMLError:
            pass
    return list(yaml.compose_all(text, Loader=pure))


_COMPOSERS: list[Any] = []


def _composers() -> list[Any]:
    """[libyaml's composer (None where PyYAML is built without it), PyYAML's own], both SafeLoader's but for the
    tags: the only tag read here is the merge key's (`<<`), the values are resolved by this module (NeMo's YAML 1.1
    and the YAML 1.2 reading), so a plain `<<` gets the merge tag, as PyYAML's resolver gives it, and any other
    node its kind's default tag, without PyYAML's per-scalar regular expressions (a Python call per node)."""
    if not _COMPOSERS:
        import yaml
        from yaml.nodes import ScalarNode, SequenceNode

        class MergeTagsOnly:
            def resolve(self, kind: Any, value: str, implicit: tuple[bool, bool]) -> str:
                if kind is ScalarNode:
                    return MERGE_TAG if implicit[0] and value == "<<" else "tag:yaml.org,2002:str"
                return "tag:yaml.org,2002:seq" if kind is SequenceNode else "tag:yaml.org,2002:map"

            def descend_resolver(self, current_node: Any, current_index: Any) -> None:
                return None  # no path resolvers

            def ascend_resolver(self) -> None:
                return None

        fast = getattr(yaml, "CSafeLoader", None)
        _COMPOSERS.extend([type("FastComposer", (MergeTagsOnly, fast), {}) if fast is not None else None,
                           type("PureComposer", (MergeTagsOnly, yaml.SafeLoader), {})])
    return _COMPOSERS
