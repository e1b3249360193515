"""Finding `MegatronStrategy(...)` with Python's own `ast`, resolving names the way LibCST's QualifiedNameProvider
does (the lint's reference, `migrator.python.calls`), at a fraction of its cost.

The lint runs this on every Python file that names the class; LibCST is loaded only where bytes are edited (fixes,
`--patch`) or where this module declines a file (`Unsupported`): a `global`/`nonlocal` statement, a line ending
other than LF/CRLF, a parenthesised or line-continued keyword, an identifier Python normalises. There LibCST's
answer is the reference, so both paths give the same findings and positions.

Name resolution, as LibCST's scope analysis does it:
- scopes: the module, each function and lambda (parameters and body), each class body (not visible from the
  functions inside it) and each comprehension (its first iterable belongs to the enclosing scope);
- `import a.b.c` binds `a.b.c`, `a.b` and `a`; `import a.b as x` binds `x`; `from m import a as b` binds `b`;
  `from m import *` binds nothing; every other store (assignment, `for`, `with ... as`, `def`, `class`, parameter,
  `except ... as`) is a local binding;
- a plain name (`MegatronStrategy(...)`) sees the bindings of the nearest scope that has one, only those made by
  an earlier statement when that scope is its own (else the enclosing scope's); a dotted name (`nl.X`) sees every
  binding of its longest bound prefix in that scope, wherever it is made;
- an import binding's qualified names come from every alias of its statement whose name is a prefix of the dotted
  name; a module-level local binding's qualified name is the dotted name itself; other locals match nothing.
"""
from __future__ import annotations

import ast
import builtins
import io
import re
import tokenize
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from migrator.engine.table import Table
from migrator.python.names import NOT_LITERAL, StrategyNames, _absolute, package_of


class Unsupported(Exception):
    """This file needs LibCST's analysis (see the module docstring)."""


@dataclass(frozen=True)
class Piece:
    """A node's span: 1-based rows, 0-based code-point columns (as LibCST's positions), and its source text."""

    start: tuple[int, int]
    end: tuple[int, int]
    text: str
    simple_string: bool = False  # one string literal token, not an f-string nor a concatenation
    quote: str = '"'  # a simple string's quote character


@dataclass
class AstArg:
    keyword: Piece
    value: Piece


@dataclass
class AstCall:
    """The ast counterpart of `calls.StrategyCall` (what the checker reads)."""

    wrapper: str | None
    keywords: dict[str, AstArg] = field(default_factory=dict)
    double_star: Any = None
    expects_error: bool = False
    values: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------ scopes
class _Rows:
    """Which rows hold a pattern, asked for a row range in O(1) (prefix sums), to skip subtrees that cannot matter."""

    def __init__(self, lines: list[str], pattern: re.Pattern[str]):
        self.before = [0]
        for line in lines:
            self.before.append(self.before[-1] + bool(pattern.search(line)))

    def any_in(self, node: ast.AST) -> bool:
        return self.before[node.end_lineno] > self.before[node.lineno - 1]


_WORD = re.compile(r"\w+")
_BINDS_IN_EXPRESSION = re.compile(r"\blambda\b|\bfor\b|:=")  # a scope or a binding inside an expression
_TARGETS = (ast.Name, ast.Tuple, ast.List, ast.Starred)  # what an assignment target is made of


@dataclass
class _Binding:
    order: tuple[int, int]  # where the statement that makes it ends
    node: ast.AST | None = None  # the Import/ImportFrom, None for a local binding


class _Scope:
    def __init__(self, kind: str, parent: _Scope | None):
        self.kind = kind  # module, function, class, comprehension
        self.parent = parent
        self.bindings: dict[str, list[_Binding]] = {}

    def visible_parent(self) -> _Scope | None:
        parent = self.parent
        while parent is not None and parent.kind == "class":
            parent = parent.parent
        return parent

    def owner_of(self, name: str) -> _Scope | None:
        scope: _Scope | None = self
        while scope is not None:
            if scope.bindings.get(name):
                return scope
            scope = scope.visible_parent()
        return None


_SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
                ast.DictComp, ast.GeneratorExp)


class _Walker:
    """Walks a module in source order keeping the current scope; `scope_of_node` remembers each scope so the
    second pass sees the scopes the first one filled."""

    def __init__(self):
        self.scopes: dict[int, _Scope] = {}
        self.statement_end = (0, 0)

    def scope_for(self, node: ast.AST, kind: str, parent: _Scope) -> _Scope:
        scope = self.scopes.get(id(node))
        if scope is None:
            scope = self.scopes[id(node)] = _Scope(kind, parent)
        return scope

    def walk(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.stmt):
            saved = self.statement_end
            self.statement_end = (node.end_lineno, node.end_col_offset)
            self.visit(node, scope)
            self.statement_end = saved
        else:
            self.visit(node, scope)

    def visit(self, node: ast.AST, scope: _Scope) -> None:
        self.enter(node, scope)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in node.decorator_list:
                self.walk(child, scope)
            self.arguments_outside(node.args, scope)
            if node.returns is not None:
                self.walk(node.returns, scope)
            self.bind(scope, node.name)
            inner = self.scope_for(node, "function", scope)
            self.bind_arguments(node.args, inner)
            for child in node.body:
                self.walk(child, inner)
        elif isinstance(node, ast.Lambda):
            self.arguments_outside(node.args, scope)
            inner = self.scope_for(node, "function", scope)
            self.bind_arguments(node.args, inner)
            self.walk(node.body, inner)
        elif isinstance(node, ast.ClassDef):
            for child in node.decorator_list + node.bases + node.keywords:
                self.walk(child, scope)
            self.bind(scope, node.name)
            inner = self.scope_for(node, "class", scope)
            for child in node.body:
                self.walk(child, inner)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            inner = self.scope_for(node, "comprehension", scope)
            for index, generator in enumerate(node.generators):
                self.walk(generator.iter, scope if index == 0 else inner)
                self.walk(generator.target, inner)
                for condition in generator.ifs:
                    self.walk(condition, inner)
            if isinstance(node, ast.DictComp):
                self.walk(node.key, inner)
                self.walk(node.value, inner)
            else:
                self.walk(node.elt, inner)
        else:
            for child in ast.iter_child_nodes(node):
                self.walk(child, scope)

    def arguments_outside(self, args: ast.arguments, scope: _Scope) -> None:
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.walk(default, scope)
        for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.walk(arg.annotation, scope)

    def bind_arguments(self, args: ast.arguments, scope: _Scope) -> None:
        for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if arg is not None:
                self.bind(scope, arg.arg, order=(0, 0))  # bound before the body runs

    def bind(self, scope: _Scope, name: str, node: ast.AST | None = None, order: tuple[int, int] | None = None) -> None:
        pass

    def enter(self, node: ast.AST, scope: _Scope) -> None:
        pass


class _Binder(_Walker):
    def __init__(self, lines: list[str], class_tails: set[str]):
        super().__init__()
        self.binding_rows = _Rows(lines, _BINDS_IN_EXPRESSION)
        self.class_tails = class_tails
        self.aliases: set[str] = set()  # names the class is imported as (`from ... import MegatronStrategy as S`)

    def walk(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.expr) and not isinstance(node, _TARGETS) and not self.binding_rows.any_in(node):
            return  # no lambda, comprehension or `:=` in its rows: it binds nothing and opens no scope
        super().walk(node, scope)

    def bind(self, scope: _Scope, name: str, node: ast.AST | None = None, order: tuple[int, int] | None = None) -> None:
        scope.bindings.setdefault(name, []).append(_Binding(order or self.statement_end, node))

    def enter(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            raise Unsupported("global/nonlocal")
        if isinstance(node, ast.Import):
            for alias in node.names:
                dotted = alias.asname or alias.name
                parts = dotted.split(".")
                for end in range(len(parts), 0, -1):
                    self.bind(scope, ".".join(parts[:end]), node)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    self.bind(scope, alias.asname or alias.name, node)
                if alias.asname and alias.name in self.class_tails:
                    self.aliases.add(alias.asname)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            self.bind(scope, node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            self.bind(scope, node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            self.bind(scope, node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            self.bind(scope, node.rest)


def _import_qualified_names(node: ast.AST, full_name: str) -> set[str]:
    """LibCST's ImportAssignment.get_qualified_names_for."""
    module = ""
    if isinstance(node, ast.ImportFrom):
        module = ("." * node.level) + (node.module or "")
    results = set()
    for alias in node.names:
        parts = alias.name.split(".")
        for end in range(len(parts), 0, -1):
            real_name = ".".join(parts[:end])
            as_name = real_name
            if module and module.endswith("."):
                real_name = f"{module}{real_name}"
            elif module:
                real_name = f"{module}.{real_name}"
            if alias.asname:
                as_name = alias.asname
            if full_name.startswith(as_name):
                remaining = full_name.split(as_name, 1)[1]
                if remaining and not remaining.startswith("."):
                    continue
                remaining = remaining.lstrip(".")
                results.add(f"{real_name}.{remaining}" if remaining else real_name)
                break
    return results


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _prefixes(full_name: str) -> list[str]:
    parts = full_name.split(".")
    return [".".join(parts[:end]) for end in range(len(parts), 0, -1)]


# ------------------------------------------------------------------------------------------------------ names
class Resolver(_Walker):
    """The qualified names a name or dotted name stands for (LibCST's QualifiedNameProvider, relative names made
    absolute), in the scopes a `_Binder` pass filled; subclasses say what to collect in `enter`."""

    def __init__(self, package: str | None, scopes: dict[int, _Scope]):
        super().__init__()
        self.scopes = scopes
        self.package = package

    def names(self, node: ast.AST, scope: _Scope) -> set[str]:
        full_name = _dotted(node)
        if full_name is None:
            return set()
        if isinstance(node, ast.Name):
            qualified = self.name_access(node, scope)
        else:
            qualified = self.dotted_access(full_name, scope)
        found = set()
        for name in qualified:
            name = _absolute(name, self.package)
            if name is not None:
                found.add(name)
        return found

    def qualified(self, bindings: list[_Binding], owner: _Scope, full_name: str) -> set[str]:
        results: set[str] = set()
        for binding in bindings:
            if binding.node is not None:
                results |= _import_qualified_names(binding.node, full_name)
            elif owner.kind == "module":
                results.add(full_name)
        return results

    def name_access(self, node: ast.Name, scope: _Scope) -> set[str]:
        owner = scope.owner_of(node.id)
        if owner is None:
            return {f"builtins.{node.id}"} if hasattr(builtins, node.id) else set()
        bindings = owner.bindings[node.id]
        if owner is scope:
            here = (node.lineno, node.col_offset)
            earlier = [b for b in bindings if b.order <= here]
            if not earlier:
                parent = scope.visible_parent()
                owner = parent.owner_of(node.id) if parent is not None else None
                if owner is None:
                    return set()
                earlier = owner.bindings[node.id]
            bindings = earlier
        return self.qualified(bindings, owner, node.id)

    def dotted_access(self, full_name: str, scope: _Scope) -> set[str]:
        for prefix in _prefixes(full_name):
            owner = scope.owner_of(prefix)
            if owner is not None:
                return self.qualified(owner.bindings[prefix], owner, full_name)
        return set()


# ------------------------------------------------------------------------------------------------------ finder
class _Finder(Resolver):
    def __init__(self, table: Table, package: str | None, source: _Source, scopes: dict[int, _Scope],
                 call_rows: _Rows):
        super().__init__(package, scopes)
        self.call_rows = call_rows
        self.known = StrategyNames.of(table)
        self.source = source
        self.calls: list[AstCall] = []
        self.raises_depth = 0

    def walk(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.stmt) and not self.call_rows.any_in(node):
            return  # no row of it names the class (or an alias of it): no strategy call inside
        super().walk(node, scope)

    def visit(self, node: ast.AST, scope: _Scope) -> None:
        raises = isinstance(node, (ast.With, ast.AsyncWith)) and self.expects_error(node, scope)
        self.raises_depth += raises
        super().visit(node, scope)
        self.raises_depth -= raises

    def expects_error(self, node: ast.With | ast.AsyncWith, scope: _Scope) -> bool:
        return any(isinstance(item.context_expr, ast.Call) and "pytest.raises" in self.names(item.context_expr.func,
                                                                                               scope)
                   for item in node.items)

    def is_strategy(self, node: ast.AST, scope: _Scope) -> bool:
        return bool(self.names(node, scope) & self.known.classes)

    # ---------------------------------------------------------------------------------------- calls
    def enter(self, node: ast.AST, scope: _Scope) -> None:
        if not isinstance(node, ast.Call):
            return
        if self.is_strategy(node.func, scope):
            self.calls.append(self.collect(node, None, scope))
            return
        wrapper = self.names(node.func, scope) & self.known.wrappers
        if wrapper and node.args and not isinstance(node.args[0], ast.Starred) \
                and all((k.lineno, k.col_offset) > (node.args[0].lineno, node.args[0].col_offset)
                        for k in node.keywords) \
                and self.is_strategy(node.args[0], scope):
            self.calls.append(self.collect(node, sorted(wrapper)[0], scope))

    def collect(self, node: ast.Call, wrapper: str | None, scope: _Scope) -> AstCall:
        call = AstCall(wrapper, expects_error=self.raises_depth > 0)
        for keyword in node.keywords:
            if keyword.arg is None:
                call.double_star = keyword
                continue
            name_piece = self.source.keyword_piece(keyword)
            call.keywords[keyword.arg] = AstArg(name_piece, self.source.value_piece(keyword))
            call.values[keyword.arg] = self.literal(keyword.value, scope)
        return call

    def literal(self, expr: ast.expr, scope: _Scope) -> Any:
        """As `calls._Finder.literal`: a `literal` below, or the lower-case member of a StrictHandling enum; else
        NOT_LITERAL."""
        if isinstance(expr, ast.Attribute):
            return self.known.enum_member(self.names(expr, scope))
        return literal(expr)


def literal(expr: ast.expr) -> Any:
    """True/False/None, a number, a string or bytes literal (also implicitly concatenated), a signed number; else
    NOT_LITERAL (as LibCST's readers take them: `bridge_from_nemo2.literal`, `calls._Finder.literal`)."""
    if isinstance(expr, ast.Constant):
        value = expr.value
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            return value
        return NOT_LITERAL  # complex, Ellipsis
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, (ast.UAdd, ast.USub)):
        operand = expr.operand
        if isinstance(operand, ast.Constant) and type(operand.value) in (int, float):
            return -operand.value if isinstance(expr.op, ast.USub) else +operand.value
    return NOT_LITERAL


# ------------------------------------------------------------------------------------------------------ positions
class _Source:
    """Byte offsets (ast) as code-point columns (LibCST), and the source text of a span."""

    def __init__(self, text: str):
        self.lines = text.split("\n")
        self.encoded: dict[int, bytes] = {}

    def column(self, row: int, byte_offset: int) -> int:
        line = self.lines[row - 1]
        if line.isascii():
            return byte_offset
        data = self.encoded.get(row)
        if data is None:
            data = self.encoded[row] = line.encode("utf-8")
        return len(data[:byte_offset].decode("utf-8"))

    def position(self, row: int, byte_offset: int) -> tuple[int, int]:
        return row, self.column(row, byte_offset)

    def text(self, start: tuple[int, int], end: tuple[int, int]) -> str:
        if start[0] == end[0]:
            return self.lines[start[0] - 1][start[1]:end[1]]
        middle = self.lines[start[0]:end[0] - 1]
        return "\n".join([self.lines[start[0] - 1][start[1]:], *middle, self.lines[end[0] - 1][:end[1]]])

    def expression_piece(self, expr: ast.expr) -> Piece:
        """An expression's span without parentheses (as LibCST's position), its text, whether it is a simple
        string and its quote."""
        start = self.position(expr.lineno, expr.col_offset)
        end = self.position(expr.end_lineno, expr.end_col_offset)
        text = self.text(start, end)
        simple = _is_simple_string(expr, text)
        return Piece(start, end, text, simple_string=simple, quote=text.lstrip("rRbBuUfF")[0] if simple else '"')

    def attribute_piece(self, node: ast.Attribute) -> Piece:
        """The span of an attribute's name (`save` in `cfg.checkpoint.save`): the last characters of the node."""
        end = self.position(node.end_lineno, node.end_col_offset)
        start = (end[0], end[1] - len(node.attr))
        if self.text(start, end) != node.attr:
            raise Unsupported("an identifier Python normalises")
        return Piece(start, end, node.attr)

    def keyword_piece(self, keyword: ast.keyword) -> Piece:
        start = self.position(keyword.lineno, keyword.col_offset)
        end = (start[0], start[1] + len(keyword.arg))
        if self.text(start, end) != keyword.arg:
            raise Unsupported("an identifier Python normalises")
        return Piece(start, end, keyword.arg)

    def value_piece(self, keyword: ast.keyword) -> Piece:
        """The value's span without parentheses (as LibCST's position) and its text with them (as LibCST's
        code_for_node: parentheses belong to the expression)."""
        value = keyword.value
        start = self.position(value.lineno, value.col_offset)
        end = self.position(value.end_lineno, value.end_col_offset)
        keyword_end = self.position(keyword.end_lineno, keyword.end_col_offset)
        name_end = (keyword.lineno, self.column(keyword.lineno, keyword.col_offset) + len(keyword.arg))
        written = self.text(name_end, keyword_end).strip()
        if not written.startswith("="):
            raise Unsupported("an unexpected keyword layout")
        written = written[1:]
        while True:  # the whitespace and line continuations after `=` belong to the `=`
            stripped = written.lstrip(" \t\f")
            if stripped.startswith("\\\n") or stripped.startswith("\\\r\n"):
                written = stripped.split("\n", 1)[1]
                continue
            written = stripped
            break
        inner = self.text(start, end)
        simple = _is_simple_string(value, inner)
        quote = inner.lstrip("rRbBuUfF")[0] if simple else '"'
        return Piece(start, end, written.strip(), simple_string=simple, quote=quote)


def _is_simple_string(value: ast.expr, text: str) -> bool:
    if not (isinstance(value, ast.Constant) and isinstance(value.value, (str, bytes))):
        return False
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)]
    except (tokenize.TokenError, SyntaxError):
        return False
    return len(tokens) == 1 and tokens[0].type == tokenize.STRING


# ------------------------------------------------------------------------------------------------------ entry
def bind(tree: ast.Module, text: str, class_tails: set[str]) -> tuple[_Source, _Scope, _Binder]:
    """The binding pass over a parsed module (text without its BOM): its source, its module scope (the others hang
    off the binder's `scopes`) and the binder; raises Unsupported where LibCST must decide."""
    if "\r" in text.replace("\r\n", ""):
        raise Unsupported("a line ending other than LF or CRLF")
    if not text.isascii() and any(unicodedata.normalize("NFKC", word) != word
                                  for word in _WORD.findall(text) if not word.isascii()):
        raise Unsupported("an identifier Python normalises")  # `ﬁle` is `file` to Python, not to LibCST
    module = _Scope("module", None)
    source = _Source(text)
    binder = _Binder(source.lines, class_tails)
    binder.walk(tree, module)
    return source, module, binder


def find_calls(tree: ast.Module, text: str, table: Table, filename: str) -> list[AstCall]:
    """Every strategy call in a parsed module (text without its BOM); raises Unsupported where LibCST must
    decide."""
    tails = _class_tails(table)
    source, module, binder = bind(tree, text, tails)
    # the class's name, or a name it is imported as, is written on each row that can hold a call of it
    keys = re.compile("|".join(re.escape(k) for k in sorted(tails | binder.aliases)))
    finder = _Finder(table, package_of(filename), source, binder.scopes, _Rows(source.lines, keys))
    finder.walk(tree, module)
    return finder.calls


def _class_tails(table: Table) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name in table.strategy.class_names}
