"""Imports go one way, read from the source with `ast` (top-level and function-local imports, relative forms).

Two rank tables: the packages (cli -> features -> engine -> data) and the converter's folders (formats, storage <
read, model < write < verify, pipeline). A module may import one of the same or a lower rank, never a higher one;
nothing in migrator/convert imports migrator.cli. A module the table does not place is an error too, so a new
package or folder has to be given its rank here.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# module or package -> rank (the longest match wins; the scope itself matches only exactly); higher ranks may
# import lower ones
PACKAGE_RANKS = {
    "migrator.__main__": 4,
    "migrator.cli": 3,
    "migrator.convert": 2, "migrator.migrate": 2, "migrator.output": 2, "migrator.python": 2, "migrator.yaml": 2,
    "migrator.schema": 2,
    "migrator.engine": 1,
    "migrator": 0, "migrator.errors": 0, "migrator.versions": 0,  # `migrator` itself: __version__
    "migrator.inputs": 0,  # reading a file the user named: regular files only, bounded
}
CONVERT_RANKS = {
    "migrator.convert": 0,  # the package's own __init__ (a docstring)
    "migrator.convert.formats": 0, "migrator.convert.storage": 0,
    "migrator.convert.read": 1, "migrator.convert.model": 1,
    "migrator.convert.write": 2,
    "migrator.convert.verify": 3, "migrator.convert.load_check": 3, "migrator.convert.pipeline": 3,
}
FORBIDDEN = {"migrator.convert": ("migrator.cli",)}  # importer prefix -> imported prefixes it may never name


def module_sources(root: Path = REPO / "migrator") -> dict[str, tuple[str, bool]]:
    """Dotted module name -> (source text, is a package __init__) for every module under `root`."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        sources[".".join(parts[:-1] if is_package else parts)] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def imports_of(name: str, source: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The project modules `name` imports anywhere in its body; `from X import y` counts X.y when that is a module."""
    known = set(known)
    found = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
    return {m for m in found if m == "migrator" or m.startswith("migrator.")}


def rank(module: str, ranks: Mapping[str, int], scope: str) -> int | None:
    """The rank of the longest table entry that is `module` or a package above it (`scope` itself: only exactly)."""
    matches = [p for p in ranks if module == p or (p != scope and module.startswith(p + "."))]
    return ranks[max(matches, key=len)] if matches else None


def violations(sources: Mapping[str, tuple[str, bool]], ranks: Mapping[str, int], scope: str,
               forbidden: Mapping[str, tuple[str, ...]] = {}) -> list[tuple[str, str, str]]:
    """(importer, imported, why) for every import inside `scope` that goes against `ranks` or names a forbidden module."""
    found = []
    for name, (source, is_package) in sources.items():
        if not (name == scope or name.startswith(scope + ".")):
            continue
        mine = rank(name, ranks, scope)
        if mine is None:
            found.append((name, "", "not in the rank table"))
            continue
        for target in sorted(imports_of(name, source, is_package, sources)):
            for prefix, banned in forbidden.items():
                if name.startswith(prefix) and any(target == b or target.startswith(b + ".") for b in banned):
                    found.append((name, target, "forbidden"))
            if not (target == scope or target.startswith(scope + ".")):
                continue
            theirs = rank(target, ranks, scope)
            if theirs is None:
                found.append((name, target, "imported module not in the rank table"))
            elif theirs > mine:
                found.append((name, target, f"rank {mine} imports rank {theirs}"))
    return found


def test_converter_imports_go_one_way() -> None:
    sources = module_sources()
    assert "migrator.convert.pipeline" in sources and "migrator.convert.read.source" in sources
    assert violations(sources, CONVERT_RANKS, "migrator.convert", FORBIDDEN) == []


def test_package_imports_go_one_way() -> None:
    assert violations(module_sources(), PACKAGE_RANKS, "migrator") == []


@pytest.mark.parametrize("importer,source,expected", [
    # a reader importing a writer, function-local and relative: found
    ("migrator.convert.read.source", "def f():\n    from ..write import dcp\n",
     ("migrator.convert.read.source", "migrator.convert.write.dcp", "rank 1 imports rank 2")),
    ("migrator.convert.formats.chunks", "from ..model.spec import ModelSpec\n",
     ("migrator.convert.formats.chunks", "migrator.convert.model.spec", "rank 0 imports rank 1")),
    ("migrator.convert.write.dcp", "import migrator.convert.pipeline\n",
     ("migrator.convert.write.dcp", "migrator.convert.pipeline", "rank 2 imports rank 3")),
    ("migrator.convert.model.spec", "from migrator.convert import verify\n",
     ("migrator.convert.model.spec", "migrator.convert.verify", "rank 1 imports rank 3")),
    ("migrator.convert.pipeline", "def f():\n    from migrator.cli.options import x\n",
     ("migrator.convert.pipeline", "migrator.cli.options", "forbidden")),
    ("migrator.convert.read.source", "from . import torch_dist\nfrom ..formats import chunks\n", None),
    ("migrator.convert.write.dcp", "from migrator.convert.read.source import Source\n", None),
    ("migrator.convert.newfolder.x", "", ("migrator.convert.newfolder.x", "", "not in the rank table")),
])
def test_the_check_finds_a_synthetic_bad_import(importer: str, source: str, expected: tuple | None) -> None:
    sources = {**module_sources(), importer: (source, False)}
    found = [v for v in violations(sources, CONVERT_RANKS, "migrator.convert", FORBIDDEN) if v[0] == importer]
    assert found == ([expected] if expected else [])


@pytest.mark.parametrize("importer,source,expected", [
    # the engine reading the YAML reader, and the output formats reaching into the CLI: both were real violations
    ("migrator.engine.verdicts", "def f():\n    from migrator.yaml.document import type_name\n",
     ("migrator.engine.verdicts", "migrator.yaml.document", "rank 1 imports rank 2")),
    ("migrator.output.sarif", "from migrator.cli import rule_cmd\n",
     ("migrator.output.sarif", "migrator.cli.rule_cmd", "rank 2 imports rank 3")),
    ("migrator.output.sarif", "from migrator.output.rule_doc import render_rule\n", None),
])
def test_the_package_check_finds_a_synthetic_bad_import(importer: str, source: str, expected: tuple | None) -> None:
    sources = {**module_sources(), importer: (source, False)}
    found = [v for v in violations(sources, PACKAGE_RANKS, "migrator") if v[0] == importer]
    assert found == ([expected] if expected else [])


def test_relative_imports_resolve_from_a_package_init() -> None:
    known = {"migrator.convert.read", "migrator.convert.read.zarr", "migrator.convert.write"}
    assert imports_of("migrator.convert.read", "from . import zarr\nfrom ..write import x\n", True, known) == \
        {"migrator.convert.read.zarr", "migrator.convert.write"}
