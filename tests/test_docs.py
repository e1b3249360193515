"""The integration docs and examples stay true: rule pages current, every format/setting/hook documented, and
every `nemo-migrate lint` option the example workflow uses exists."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

import yaml

from migrator.engine.project import SETTINGS
from migrator.output import RENDERERS
from tests.conftest import ROOT, run_cli

DOC = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")


def test_rule_pages_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_rule_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_format_setting_and_hook_is_documented():
    for name in RENDERERS:
        assert f"`{name}`" in DOC, name
    for key in SETTINGS:
        assert f"{key} =" in DOC or f"`{key}`" in DOC or f"**{key}**" in DOC, key
    hooks = {h["id"] for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    snippet = DOC.split("```yaml", 1)[1].split("```", 1)[0]
    assert {h["id"] for h in yaml.safe_load(snippet)["repos"][0]["hooks"]} == hooks
    assert "# yaml-language-server: $schema=" in DOC


def test_example_workflow_uses_real_options():
    workflow = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text(encoding="utf-8"))
    runs = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    commands = [c.rstrip(" \\") for run in runs for c in re.findall(r"nemo-migrate lint[^|>\n]*", run)]
    assert len(commands) == 3
    help_text = run_cli("lint", "--help").stdout
    for command in commands:
        for token in shlex.split(command):
            if token.startswith("--"):
                assert token in help_text, token
    text = (ROOT / "examples" / "github-actions.yml").read_text()
    assert "reviewdog -f=rdjson" in text and "--output-format rdjson" in text
    assert "github/codeql-action/upload-sarif" in text and "security-events: write" in text
