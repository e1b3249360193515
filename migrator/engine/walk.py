"""Which files a folder argument stands for, the way ruff walks: `.gitignore` respected, virtual environments and
hidden folders skipped. A path named on the command line is always linted (unless `--force-exclude` and the
project's `exclude` say otherwise, see `runner.discover`).

- Skipped while walking: a folder whose name starts with `.` (`.git`, `.venv`, `.tox`, ...), a virtual environment
  (a folder holding `pyvenv.cfg`, whatever its name), and the tool folders in `SKIP_DIRS`.
- `.gitignore`: inside a git work tree, git itself decides (`git check-ignore --stdin --no-index`: every
  `.gitignore` from the repository root down, `.git/info/exclude` and the user's global excludes file, applied to
  the path whether or not it is tracked, as ruff does); outside one, the `.gitignore` files inside the walked folder
  are read with `pathspec` (git's own pattern rules). A `.gitignore` above the folder is never read there.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

SKIP_DIRS = frozenset({"__pycache__", "node_modules", "venv", "site-packages", "__pypackages__"})


def is_virtualenv(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "pyvenv.cfg"))


def walk(root: str, suffixes: tuple[str, ...]) -> list[str]:
    """The files below `root` with one of `suffixes`, sorted, minus what .gitignore, hidden folders and virtual
    environments exclude."""
    candidates = sorted(_candidates(root, suffixes), key=lambda p: Path(p).parts)  # folder by folder
    if not candidates:
        return []
    ignored = _git_ignored(root, candidates)
    if ignored is None:
        ignored = _gitignore_files_ignored(root, candidates)
    return [path for path in candidates if path not in ignored]


def _candidates(root: str, suffixes: tuple[str, ...]) -> Iterator[str]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                   and not is_virtualenv(os.path.join(folder, d))]
        for name in files:
            if name.endswith(suffixes):
                yield str(Path(folder, name))  # as pathlib spells it: `lint .` reports a.yaml, not ./a.yaml


def _git_ignored(root: str, paths: list[str]) -> set[str] | None:
    """The paths git ignores, or None when `root` is not inside a git work tree (or git is missing)."""
    try:
        inside = subprocess.run(["git", "-C", root, "rev-parse", "--is-inside-work-tree"], capture_output=True,
                                text=True, timeout=60)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        absolute = [os.path.abspath(p) for p in paths]
        proc = subprocess.run(["git", "-C", root, "check-ignore", "--stdin", "-z", "--no-index"],
                              input="\0".join(absolute) + "\0", capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode not in (0, 1):  # 1: nothing ignored
        return None
    hits = {os.path.normcase(h) for h in proc.stdout.split("\0") if h}
    return {p for p, a in zip(paths, absolute) if os.path.normcase(a) in hits}


def _gitignore_files_ignored(root: str, paths: list[str]) -> set[str]:
    """Outside git: the .gitignore files inside `root`; a path is skipped when one of them ignores it (a `!`
    pattern re-includes only what its own file excluded)."""
    specs = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                   and not is_virtualenv(os.path.join(folder, d))]
        if ".gitignore" in files:
            try:
                lines = Path(folder, ".gitignore").read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            specs.append((folder, lines))
    if not specs:
        return set()
    import pathspec

    compiled = [(folder, pathspec.GitIgnoreSpec.from_lines(lines)) for folder, lines in specs]
    ignored = set()
    for path in paths:
        for folder, spec in compiled:
            relative = os.path.relpath(path, folder)
            if relative.startswith(".."):
                continue
            if _ignored_by(spec, relative):
                ignored.add(path)
                break
    return ignored


def _ignored_by(spec, relative: str) -> bool:
    """A file is ignored when it, or a folder above it, matches (git never looks inside an ignored folder)."""
    parts = Path(relative).parts
    for end in range(1, len(parts)):
        if spec.match_file("/".join(parts[:end]) + "/"):
            return True
    return spec.match_file("/".join(parts))
