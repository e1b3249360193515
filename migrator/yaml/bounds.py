"""Bounds every YAML reader goes through: the text's size before parsing, and the composed node tree's depth and
size with aliases expanded (a "billion laughs" file is a few lines whose aliases expand to 10^9 nodes).

Real NeMo configs are at most a few tens of kilobytes, at most about ten levels deep and a few thousand nodes; the
limits are two orders of magnitude above that and far below what would take more than seconds or gigabytes.
`check_tree` works on ruamel.yaml and PyYAML nodes alike (both keep a scalar's text, a sequence's items and a
mapping's (key, value) pairs in `.value`), so it serves whichever parser a reader uses.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from migrator.errors import MigratorError

MAX_BYTES = 4 * 1024 * 1024  # characters of YAML text (a parse takes seconds at this size)
MAX_DEPTH = 100  # nested mappings/sequences
MAX_NODES = 1_000_000  # nodes once every alias is expanded


def check_size(size: int, what: str) -> None:
    """Refuse a text longer than MAX_BYTES before any parsing starts."""
    if size > MAX_BYTES:
        raise MigratorError(f"{what}: YAML file too large ({size:,} bytes; the limit is {MAX_BYTES:,}); not read")


def bounded_ruamel(yaml: Any, what: str) -> Any:
    """Give a ruamel.yaml `YAML` object a scanner that stops at MAX_DEPTH nested flow collections (`[[[[...`) or
    block indentation levels: ruamel's parser slows down with the square of the nesting (1,000 brackets take
    seconds, 5,000 minutes), so the depth is bounded while scanning, before the tree exists."""
    base = yaml.Scanner

    class Bounded(base):  # type: ignore[misc, valid-type]
        def fetch_flow_collection_start(self, *args: Any, **kwargs: Any) -> None:
            if len(self.flow_context) >= MAX_DEPTH:
                mark = self.reader.get_mark()
                raise MigratorError(f"{what}:{mark.line + 1}: YAML nested more than {MAX_DEPTH} levels deep; not read")
            super().fetch_flow_collection_start(*args, **kwargs)

        def add_indent(self, column: int) -> bool:
            if len(self.indents) >= MAX_DEPTH:
                mark = self.reader.get_mark()
                raise MigratorError(f"{what}:{mark.line + 1}: YAML nested more than {MAX_DEPTH} levels deep; not read")
            return super().add_indent(column)

    yaml.Scanner = Bounded
    return yaml


def _children(node: Any) -> list[Any]:
    value = node.value
    if isinstance(value, list):
        return [part for item in value for part in (item if isinstance(item, tuple) else (item,))]
    return []


def _within_bounds_without_aliases(roots: list[Any]) -> bool:
    """For a tree without aliases (each node reached once, nothing recursive): is every chain of nodes at most
    MAX_DEPTH long and the node count at most MAX_NODES? Only collections are visited; scalars are counted."""
    count = 0
    stack = [(root, 1) for root in roots]
    while stack:
        node, depth = stack.pop()
        count += 1
        value = node.value
        if not isinstance(value, list):
            continue
        inner = depth + 1
        for item in value:
            for child in (item if isinstance(item, tuple) else (item,)):
                if isinstance(child.value, list):
                    stack.append((child, inner))
                else:
                    count += 1
                    if inner > MAX_DEPTH:
                        return False
        if inner > MAX_DEPTH and value:
            return False
        if depth > MAX_DEPTH:
            return False
    return count <= MAX_NODES


def check_tree(roots: Iterable[Any], what: str, aliases: bool = True) -> None:
    """Refuse a composed YAML tree that is recursive (an alias inside its own anchor), nested deeper than MAX_DEPTH
    or larger than MAX_NODES with aliases expanded. Linear in the number of distinct nodes (no recursion).
    `aliases=False` (the text has no `*` or no `&`: no alias, so no node is reached twice): a tree within bounds
    is passed after a count of its nodes; any other tree goes through the full check below, which words the refusal.
    """
    roots = list(roots)
    if not aliases and _within_bounds_without_aliases(roots):
        return
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    for root in roots:
        open_nodes: set[int] = set()
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            key = id(node)
            if done:
                children = _children(node)
                open_nodes.discard(key)
                size[key] = 1 + sum(size[id(c)] for c in children)
                depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
                if depth[key] > MAX_DEPTH:
                    raise MigratorError(f"{what}: YAML nested more than {MAX_DEPTH} levels deep; not read")
                if size[key] > MAX_NODES:
                    raise MigratorError(f"{what}: YAML too large once its aliases are expanded (more than "
                                        f"{MAX_NODES:,} nodes); not read")
                continue
            if key in size:
                continue
            if key in open_nodes:
                raise MigratorError(f"{what}: YAML alias refers to a node that contains it (a recursive alias); "
                                    f"not read")
            open_nodes.add(key)
            stack.append((node, True))
            if len(open_nodes) > MAX_DEPTH:
                raise MigratorError(f"{what}: YAML nested more than {MAX_DEPTH} levels deep; not read")
            stack.extend((child, False) for child in _children(node))
