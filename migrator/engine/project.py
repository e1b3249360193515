"""Project configuration: `nemo-migrator.toml` or `[tool.nemo-migrator]` in `pyproject.toml`.

Discovery walks up from the current directory; the first directory holding either file decides (settings are never
merged across directories). In one directory `nemo-migrator.toml` wins over `pyproject.toml`; a `pyproject.toml`
without a `[tool.nemo-migrator]` table is skipped. Relative paths and globs in the file (`exclude`,
`per-file-ignores`, `pairs`) are relative to the file's directory, the project root.

Read with the stdlib `tomllib` and validated by hand (no pydantic on the lint path); any unknown key or bad value
is a MigratorError naming the file and the key (exit 2).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.errors import MigratorError
from migrator.versions import parse_version_set

STANDALONE = "nemo-migrator.toml"
PYPROJECT = "pyproject.toml"
TOOL_KEY = "nemo-migrator"
SEVERITIES = ("error", "warning", "info")
SETTINGS = ("select", "ignore", "per-file-ignores", "target", "source", "exclude", "fail-on", "pairs")


@dataclass(frozen=True)
class ProjectConfig:
    path: Path | None  # the file the settings came from (None: no file)
    root: Path  # the directory relative paths and globs are resolved against
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    target: str | None = None
    source: str | None = None
    exclude: tuple[str, ...] = ()
    fail_on: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()  # (YAML config, Python script), relative to root
    warnings: tuple[str, ...] = field(default=(), compare=False)


def find_config(start: Path) -> tuple[Path | None, list[str]]:
    """The project configuration file for `start`, and warnings (a shadowed `[tool.nemo-migrator]`)."""
    for directory in (start, *start.parents):
        standalone = directory / STANDALONE
        pyproject = directory / PYPROJECT
        has_tool = pyproject.is_file() and _has_tool_table(pyproject)
        if standalone.is_file():
            warnings = [f"{pyproject}: [tool.{TOOL_KEY}] is ignored because {standalone} takes precedence"] \
                if has_tool else []
            return standalone, warnings
        if has_tool:
            return pyproject, []
    return None, []


def _has_tool_table(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if TOOL_KEY.encode() not in data:  # most pyproject.toml files: no TOML parse at all
        return False
    tool = _read_toml(path).get("tool", {})
    return isinstance(tool, dict) and TOOL_KEY in tool


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MigratorError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MigratorError(f"{path}: invalid TOML: {exc}") from None


def load_project_config(start: Path | None = None, *, isolated: bool = False) -> ProjectConfig:
    start = (start or Path.cwd()).resolve()
    if isolated:
        return ProjectConfig(path=None, root=start)
    path, warnings = find_config(start)
    if path is None:
        return ProjectConfig(path=None, root=start)
    data = _read_toml(path)
    if path.name == PYPROJECT:
        data = data["tool"][TOOL_KEY]
        prefix = f"[tool.{TOOL_KEY}] "
        if not isinstance(data, dict):
            raise MigratorError(f"{path}: tool.{TOOL_KEY} must be a table ([tool.{TOOL_KEY}]), got {data!r}")
    else:
        prefix = ""
    return parse_config(data, path, prefix, tuple(warnings))


def parse_config(data: dict[str, Any], path: Path, prefix: str = "", warnings: tuple[str, ...] = ()) -> ProjectConfig:
    def error(key: str, problem: str) -> MigratorError:
        return MigratorError(f"{path}: {prefix}{key}: {problem}")

    for key in data:
        if key not in SETTINGS:
            import difflib

            close = difflib.get_close_matches(key.replace("_", "-"), SETTINGS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known settings: {', '.join(SETTINGS)}"
            raise MigratorError(f"{path}: {prefix}unknown setting {key!r}{hint}")

    def strings(key: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise error(key, f"expected a list of strings, got {value!r}")
        return tuple(v.strip() for v in value if v.strip())

    def version_set(key: str, value: Any, allowed: tuple[str, ...]) -> str:
        if isinstance(value, dict):
            if not all(isinstance(v, str) for v in value.values()):
                raise error(key, f"versions must be strings (quote them: \"2.1\"), got {value!r}")
            value = ",".join(f"{k}={v}" for k, v in value.items())
        if not isinstance(value, str):
            raise error(key, f"expected \"nemo=X,megatron-core=Y\" or a table of versions, got {value!r}")
        try:
            components = parse_version_set(value, option="value")
        except MigratorError as exc:
            raise error(key, str(exc).removeprefix("value: ")) from None
        wrong = set(components) - set(allowed)
        if wrong:
            raise error(key, f"only {', '.join(allowed)} can be given, got {', '.join(sorted(wrong))}")
        return value

    values: dict[str, Any] = {}
    if "select" in data:
        values["select"] = strings("select", data["select"])
    if "ignore" in data:
        values["ignore"] = strings("ignore", data["ignore"])
    if "exclude" in data:
        values["exclude"] = strings("exclude", data["exclude"])
        for pattern in values["exclude"]:
            _check_glob(pattern, lambda problem: error("exclude", problem))
    if "per-file-ignores" in data:
        table = data["per-file-ignores"]
        if not isinstance(table, dict):
            raise error("per-file-ignores", f"expected a table of glob = [codes], got {table!r}")
        entries = []
        for pattern, codes in table.items():
            _check_glob(pattern, lambda problem: error(f"per-file-ignores.{pattern!r}", problem))
            entries.append((pattern, strings(f"per-file-ignores.{pattern!r}", codes)))
        values["per_file_ignores"] = tuple(entries)
    if "target" in data:
        values["target"] = version_set("target", data["target"], ("nemo", "megatron-core"))
    if "source" in data:
        values["source"] = version_set("source", data["source"], ("nemo",))
    if "fail-on" in data:
        if data["fail-on"] not in SEVERITIES:
            raise error("fail-on", f"expected one of {', '.join(SEVERITIES)}, got {data['fail-on']!r}")
        values["fail_on"] = data["fail-on"]
    if "pairs" in data:
        values["pairs"] = _pairs(data["pairs"], path.parent, error)
    return ProjectConfig(path=path, root=path.parent, warnings=warnings, **values)


def _pairs(table: Any, root: Path, error) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise error("pairs", f"expected a table of \"config.yaml\" = \"script.py\", got {table!r}")
    pairs: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    for config, scripts in table.items():
        key = f"pairs.{config!r}"
        if isinstance(scripts, str):
            scripts = [scripts]
        if not isinstance(scripts, list) or not scripts or not all(isinstance(s, str) for s in scripts):
            raise error(key, f"expected a Python script path (or a list of them), got {scripts!r}")
        if not config.endswith((".yaml", ".yml")):
            raise error(key, "the key must be a YAML config (*.yaml, *.yml)")
        if not (root / config).is_file():
            raise error(key, f"{root / config} does not exist")
        for script in scripts:
            if not script.endswith(".py"):
                raise error(key, f"{script!r} is not a Python script (*.py)")
            if not (root / script).is_file():
                raise error(key, f"{root / script} does not exist")
            normalized = _normalize(script)
            if normalized in owner and owner[normalized] != _normalize(config):
                raise error(key, f"{script} is already paired with {owner[normalized]}; a script reads one config")
            owner[normalized] = _normalize(config)
            pairs.append((_normalize(config), normalized))
    return tuple(pairs)


def _normalize(relative: str) -> str:
    return Path(relative).as_posix().removeprefix("./")


# ------------------------------------------------------------------------------------------------- globs
def _check_glob(pattern: str, error) -> None:
    if not pattern:
        raise error("empty glob")
    try:
        glob_regex(pattern)
    except re.error as exc:
        raise error(f"bad glob {pattern!r}: {exc}") from None


@functools.lru_cache(maxsize=None)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A gitignore-style glob as a regex over a '/'-separated relative path. A pattern without '/' matches a file or
    folder name at any depth (`legacy`, `*.yml`); with a '/' it is anchored at the project root
    (`conf/legacy/*.yaml`). `*` and `?` stay within one path component, `**` spans any number of them, and a match
    on a folder covers everything inside it."""
    anchored = "/" in pattern.rstrip("/")
    body = pattern.strip("/")
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = body.find("]", i + 2)
            if end == -1:
                out.append(re.escape(char))
                i += 1
            else:
                inner = body[i + 1:end]
                out.append("[" + ("^" + inner[1:] if inner.startswith("!") else inner) + "]")
                i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{''.join(out)}(?:/.*)?$")


def relative_to_root(path: str, root: Path) -> str | None:
    """`path` (as given on the command line) relative to the project root, or None when it lies outside it."""
    absolute = Path(path)
    if not absolute.is_absolute():
        absolute = Path.cwd() / absolute
    try:
        return Path(_clean(absolute)).relative_to(root).as_posix()
    except ValueError:
        return None


def _clean(path: Path) -> str:
    import os

    return os.path.normpath(path)


def matches_any(patterns: tuple[str, ...], relative: str | None) -> bool:
    return relative is not None and any(glob_regex(p).match(relative) for p in patterns)


# ------------------------------------------------------------------------------------------------- per file
def file_options(options: Any, path: str) -> Any:
    """`LintOptions.for_file`: add the per-file ignores whose glob matches `path`, and point a paired script's
    `config_path` at its config (an explicit `config_path` wins)."""
    from dataclasses import replace

    from migrator.engine.selection import Selection

    root = options.root or Path.cwd()
    relative = relative_to_root(path, root)
    extra = tuple(code for pattern, codes in options.per_file_ignores if matches_any((pattern,), relative)
                  for code in codes)
    selection = options.selection
    if extra:
        selection = Selection(selection.select, selection.ignore + extra)
    config_path = options.config_path
    if config_path is None and relative is not None:
        config = next((c for c, script in options.pairs if script == relative), None)
        if config is not None:
            config_path = root / config
    return replace(options, selection=selection, config_path=config_path)


def consistency_partners(paths: list[str], options: Any) -> list[str]:
    """Scripts to lint beside `paths` so the consistency rules run whichever side of a pair changed: for each YAML
    config in `paths` that the project pairs with a script not in `paths`, that script (as a path relative to the
    current directory when it lies below it). They are reported, never fixed (a hook touches only its files)."""
    if not options.pairs:
        return []
    root = options.root or Path.cwd()
    given = {relative_to_root(p, root) for p in paths}
    partners: list[str] = []
    for config, script in options.pairs:
        if config in given and script not in given:
            absolute = root / script
            try:
                shown = str(absolute.relative_to(Path.cwd()))
            except ValueError:
                shown = str(absolute)
            if shown not in partners:
                partners.append(shown)
    return partners


# ------------------------------------------------------------------------------------------------- command line
def override(from_file: str | None, from_cli: str | None) -> str | None:
    """A version set: the components given on the command line win, the file's fill in the rest."""
    return ",".join(part for part in (from_file, from_cli) if part) or None


def selection(config: ProjectConfig, select: tuple[str, ...], ignore: tuple[str, ...]) -> Any:
    """ruff's layering: a command-line --select replaces the file's select and ignore; without one, the file's
    select stays and the command line's --ignore adds to the file's ignore."""
    from migrator.engine.selection import Selection

    if select:
        return Selection.parse(select, ignore)
    return Selection.parse(config.select, config.ignore + tuple(ignore))


def check_selectors(config: ProjectConfig, rules: list[tuple[str, str]]) -> None:
    """A code in the file that matches no rule is an error naming the file and the key (like a bad --select)."""
    from migrator.engine.selection import Selection

    prefix = f"[tool.{TOOL_KEY}] " if config.path is not None and config.path.name == PYPROJECT else ""
    keys = [("select", config.select or ()), ("ignore", config.ignore)]
    keys += [(f"per-file-ignores.{pattern!r}", codes) for pattern, codes in config.per_file_ignores]
    for key, codes in keys:
        unknown = Selection.parse(codes, ()).unknown_selectors(rules)
        if unknown:
            raise MigratorError(f"{config.path}: {prefix}{key}: no rule matches {', '.join(unknown)} "
                                "(see `nemo-migrate rule`)")


def exclusion(config: ProjectConfig):
    if not config.exclude:
        return None
    return lambda path: matches_any(config.exclude, relative_to_root(path, config.root))


def changed_rows(diff_base: str | None, diff_file: str | None, *, fixing: bool):
    """(changed rows by path, the folder those paths are relative to) for --diff-only / --changed-lines-from."""
    if diff_base is None and diff_file is None:
        return None
    if diff_base is not None and diff_file is not None:
        raise MigratorError("--diff-only and --changed-lines-from cannot be combined")
    if fixing:
        raise MigratorError("--diff-only/--changed-lines-from filter the report; they cannot be combined with "
                            "--fix or --diff")
    from migrator.engine import changed_lines

    if diff_base is not None:
        return changed_lines.changed_lines_from_git(diff_base)
    return changed_lines.changed_lines_from_file(diff_file)
