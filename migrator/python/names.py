"""What both strategy-call finders (`calls` on LibCST, `ast_calls` on Python's ast) share, without LibCST."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrator.engine.table import Table

NOT_LITERAL = object()  # a value the tool cannot judge statically

# a file that names neither cannot hold Megatron-Bridge code the Bridge lint judges (checked before loading LibCST)
BRIDGE_MARKERS = ("CheckpointConfig", "megatron.bridge")


def needs_bridge_check(text: str) -> bool:
    return any(marker in text for marker in BRIDGE_MARKERS)


def package_of(filename: str) -> str | None:
    """The dotted package a file belongs to (walking up while `__init__.py` exists), for relative imports."""
    path = Path(filename).resolve()
    parts: list[str] = []
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.append(folder.name)
        folder = folder.parent
    return ".".join(reversed(parts)) or None


def _absolute(name: str, package: str | None) -> str | None:
    if not name.startswith("."):
        return name
    if package is None:
        return None
    level = len(name) - len(name.lstrip("."))
    base = package.split(".")
    if level - 1 > len(base) - 1:
        return None
    base = base[: len(base) - (level - 1)]
    rest = name[level:]
    return ".".join(base + ([rest] if rest else []))


def same_value(a: Any, b: Any) -> bool:
    """Equal in value and type (`1` is not `True`, `2.0` is not `2`)."""
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class StrategyNames:
    """What both strategy-call finders look for, from the rule table: the class, the NeMo-Run wrappers taking it
    as their first argument, and the enums whose members are literal values (StrictHandling)."""

    classes: frozenset[str]
    wrappers: frozenset[str]
    enum_classes: frozenset[str]
    enum_names: frozenset[str]

    @classmethod
    def of(cls, table: Table) -> StrategyNames:
        enum_classes = frozenset(a.enum_class for a in table.strategy.arguments if a.enum_class)
        return cls(frozenset(table.strategy.class_names), frozenset(table.strategy.config_wrappers), enum_classes,
                   frozenset(e.rsplit(".", 1)[-1] for e in enum_classes))

    def enum_member(self, qualified_names: Iterable[str]) -> Any:
        """The lower-case member name an attribute of one of the enums names, or NOT_LITERAL."""
        for name in qualified_names:
            owner, _, member = name.rpartition(".")
            # megatron-core re-exports the enum from several modules
            if owner in self.enum_classes or (owner.startswith("megatron.")
                                              and owner.rsplit(".", 1)[-1] in self.enum_names):
                return member.lower()
        return NOT_LITERAL
