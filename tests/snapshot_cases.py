"""Fixed inputs for the renderer snapshots, and the helper that regenerates them deliberately.

    .venv/bin/python -m tests.snapshot_cases           # rewrite tests/snapshots/*.* from the current renderers
    .venv/bin/python -m tests.snapshot_cases --check   # exit 1 if any snapshot differs (what the tests assert)

The inputs are the YAML files under tests/snapshots/inputs/conf (linted at a pinned target) plus one hand-made
result whose path and message hold every character a format must escape. Paths are rendered relative to the inputs
folder; absolute paths (text, json) and the package version are replaced by placeholders, so the snapshots do not
depend on the checkout's location or the release number.
"""
from __future__ import annotations

import sys
from pathlib import Path

from migrator import __version__
from migrator.cli.options import resolve_target
from migrator.engine.diagnostics import Diagnostic, Edit, FileResult, Fix, Location
from migrator.engine.runner import LintOptions, lint_paths
from migrator.engine.table import load_table
from migrator.output import RENDERERS, renderer

HERE = Path(__file__).resolve().parent
SNAPSHOTS = HERE / "snapshots"
INPUTS = SNAPSHOTS / "inputs"
TARGET = "nemo=2.5,megatron-core=0.16"
EXTENSION = {"text": "txt", "json": "json", "github": "txt", "gitlab": "json", "junit": "xml", "rdjson": "json",
             "rdjsonl": "jsonl", "sarif": "sarif"}

ODD_SOURCE = "model:\n  dist_ckpt_format: zarr\n"


def odd_result() -> FileResult:
    """A path with ',', ':', ' ' and '%', a message with '%', ':' and CR LF: what github/sarif must escape."""
    filename = str(INPUTS / "odd, name: 100%.yaml")
    edit = Edit("torch_dist", Location(2, 21), Location(2, 25))
    diagnostic = Diagnostic(
        code="NM107", name="deprecated-value", message="100% sure: zarr is deprecated,\r\nsee the second line",
        severity="warning", filename=filename, location=Location(2, 21), end_location=Location(2, 25),
        fix=Fix("unsafe", "Use 'torch_dist'", (edit,)))
    return FileResult(filename=filename, diagnostics=[diagnostic], source=ODD_SOURCE)


def build_results() -> list[FileResult]:
    options = LintOptions(target=resolve_target(TARGET))
    results = lint_paths([str(INPUTS / "conf")], load_table(), options)
    return results + [odd_result()]


def render(name: str) -> str:
    text = renderer(name)(build_results(), root=INPUTS)
    return text.replace(str(INPUTS) + "/", "").replace(__version__, "<VERSION>")


def snapshot_path(name: str) -> Path:
    return SNAPSHOTS / f"{name}.{EXTENSION[name]}"


def main(argv: list[str]) -> int:
    missing = set(RENDERERS) - set(EXTENSION)
    if missing:
        print(f"add a snapshot extension for {sorted(missing)}", file=sys.stderr)
        return 2
    stale = []
    for name in sorted(RENDERERS):
        path = snapshot_path(name)
        text = render(name)
        if "--check" in argv:
            if not path.exists() or path.read_bytes().decode("utf-8") != text:
                stale.append(path.name)
            continue
        path.write_text(text, encoding="utf-8", newline="")
        print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(f"stale snapshots: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
