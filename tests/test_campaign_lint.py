"""The lint-side mutation campaign (issue 14) at a fixed seed: real configs and scripts, mutated, through lint, safe
and unsafe fixes, --strip and patch; 0 crashes and 0 bad fixes. A longer run: `python scripts/fuzz_lint.py`."""
from __future__ import annotations

from tests.campaign import lint_fuzz
from tests.conftest import NEMO_CONFIGS, need_shared

SEED = 14


def test_lint_fix_strip_patch_mutation_campaign(capsys):
    need_shared(NEMO_CONFIGS)
    groups = lint_fuzz.run(SEED, yaml_cases=120, python_cases=60)
    report = lint_fuzz.report(groups)
    with capsys.disabled():
        print("\n" + report)
    assert all(g.tried for g in groups.values())
    assert sum(g.defects for g in groups.values()) == 0, report
