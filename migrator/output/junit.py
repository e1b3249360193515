"""`--output-format junit`: JUnit XML for CI test-report views. One test suite per file, one test case per
finding, failing (`type` is its severity) when the finding is at or above `--fail-on` (default warning) and passing
with the finding in `<system-out>` below it (an info note fails no build), one passing case for a clean file, an
`<error>` for a file that could not be linted."""
from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from migrator.engine.diagnostics import FileResult
from migrator.output.common import TOOL, display_path, failing, fix_note


def render(results: list[FileResult], *, root: Path | None = None, fail_on: str | None = None, **_: Any) -> str:
    suites = ET.Element("testsuites", name=TOOL)
    total = failures = errors = 0
    for result in results:
        path = display_path(result.filename, root)
        suite = ET.SubElement(suites, "testsuite", name=path)
        if result.error is not None:
            case = ET.SubElement(suite, "testcase", name=f"{TOOL} (file)", classname=path, file=path)
            ET.SubElement(case, "error", message=result.error).text = result.error
            counts = (1, 0, 1)
        elif not result.diagnostics:
            ET.SubElement(suite, "testcase", name=f"{TOOL} (no findings)", classname=path, file=path)
            counts = (1, 0, 0)
        else:
            failed = 0
            for d in result.diagnostics:
                where = f"{d.location.row}:{d.location.column}"
                case = ET.SubElement(suite, "testcase", name=f"{d.code} ({d.name}) at {where}", classname=path,
                                     file=path, line=str(d.location.row))
                body = f"{path}:{where}: {d.code} {d.severity}: {d.message}"
                note = fix_note(d)
                if note:
                    body += f"\n{note}"
                if failing(d, fail_on):
                    ET.SubElement(case, "failure", message=d.message, type=d.severity).text = body
                    failed += 1
                else:
                    ET.SubElement(case, "system-out").text = body
            counts = (len(result.diagnostics), failed, 0)
        suite.set("tests", str(counts[0]))
        suite.set("failures", str(counts[1]))
        suite.set("errors", str(counts[2]))
        total, failures, errors = total + counts[0], failures + counts[1], errors + counts[2]
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    suites.set("errors", str(errors))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
