#!/usr/bin/env python
"""Write docs/rules/<CODE>.md, one page per lint rule, from the rule table (rules/lint/*.yaml).

SARIF `helpUri` and rdjson `code.url` point at these pages under the Documentation URL of [project.urls]; the test
suite fails when a page is missing or stale.

    python scripts/generate_rule_docs.py           # rewrite the pages
    python scripts/generate_rule_docs.py --check   # exit 1 if any page differs
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from migrator.engine.table import load_table  # noqa: E402
from migrator.output.rule_doc import render_rule  # noqa: E402

PAGES = ROOT / "docs" / "rules"


def pages() -> dict[Path, str]:
    rules = sorted(load_table().lint_rules, key=lambda r: r.code)
    out = {PAGES / f"{r.code}.md": render_rule(r) + "\n" for r in rules}
    index = ["# Rules", "", "| code | name | severity | summary |", "|---|---|---|---|"]
    index += [f"| [{r.code}]({r.code}.md) | {r.name} | {r.severity} | {' '.join(r.summary.split())} |" for r in rules]
    out[PAGES / "README.md"] = "\n".join(index) + "\n"
    return out


def main(argv: list[str]) -> int:
    wanted = pages()
    stale = sorted({p.name for p in PAGES.glob("*.md")} - {p.name for p in wanted})
    for path, text in wanted.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(path.name)
            if "--check" not in argv:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if "--check" in argv and stale:
        print(f"stale rule pages: {', '.join(stale)} (run scripts/generate_rule_docs.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
