"""Lint and migrate-config read one mapping: wherever migrate-config refuses a file, the lint reports an error."""
from __future__ import annotations

import pytest

from migrator.cli.options import resolve_source, resolve_target
from migrator.engine.table import load_table
from migrator.errors import MigratorError
from migrator.migrate.mapping import map_text
from migrator.yaml.checks import check_document
from migrator.yaml.document import parse
from tests.conftest import NEMO_CONFIGS, need_shared, run_cli

TABLE = load_table()
TARGETS = [None, "nemo=2.0", "nemo=2.1,megatron-core=0.15", "megatron-core=0.8"]
SOURCES = [None, "nemo=1.23", "nemo=2.0"]


def _yaml_examples() -> list[tuple[str, str]]:
    texts = []
    for rule in TABLE.lint_rules:
        for i, ex in enumerate([*rule.invalid, *rule.valid]):
            if ex.lang == "yaml":
                texts.append((f"{rule.code}-{i}", ex.source))
            if ex.config:
                texts.append((f"{rule.code}-{i}-config", ex.config))
    for setting in TABLE.settings.settings:
        for i, ex in enumerate(setting.examples.invalid):
            texts.append((f"{setting.key}-invalid-{i}", ex.source))
        for i, source in enumerate(setting.examples.valid):
            texts.append((f"{setting.key}-valid-{i}", source))
    return texts


def _disagreements(name: str, text: str) -> list[str]:
    bad = []
    for target in TARGETS:
        for source in SOURCES:
            t, s = resolve_target(target), resolve_source(source)
            try:
                mapping = map_text(text, name, TABLE, t, s)
            except MigratorError:
                continue  # not a NeMo 1.0 config with settings to migrate: nothing is refused
            if not mapping.refused:
                continue
            errors = [d for d in check_document(parse(text, name), TABLE, t, s) if d.severity == "error"]
            if not errors:
                bad.append(f"{name} target={target} source={source}: refused ({mapping.errors[0].text}) "
                           "but the lint reports no error")
    return bad


def test_every_refusal_on_the_rule_examples_is_a_lint_error():
    examples = _yaml_examples()
    assert len(examples) > 50
    refused = [n for n, t in examples if _refuses(n, t)]
    assert refused  # the comparison is not vacuous
    assert [d for n, t in examples for d in _disagreements(n, t)] == []


def test_every_refusal_on_the_shared_configs_is_a_lint_error():
    paths = sorted(need_shared(NEMO_CONFIGS).glob("*.yaml"))
    assert [d for p in paths for d in _disagreements(p.name, p.read_text())] == []


def _refuses(name: str, text: str) -> bool:
    try:
        return map_text(text, name, TABLE, resolve_target(None), resolve_source("nemo=1.23")).refused
    except MigratorError:
        return False


def test_an_old_source_zarr_default_is_an_error_in_both(files):
    path = files("old.yaml", "trainer:\n  devices: 1\nmodel:\n  mcore_gpt: True\n")
    lint = run_cli("lint", "--source", "nemo=1.23", str(path))
    assert lint.returncode == 1 and "NM106 error: dist_ckpt_format is not set" in lint.stdout
    emit = run_cli("config", str(path), "--emit-python", "--source", "nemo=1.23")
    assert emit.returncode == 1 and "dist_ckpt_format is not set" in emit.stderr


@pytest.mark.parametrize("text, where", [
    ("exp_manager:\n  checkpoint_callback_params:\n    async_save: True\nmodel:\n  mcore_gpt: True\n"
     "  dist_ckpt_format: zarr\n", None),
    ("exp_manager:\n  checkpoint_callback_params:\n    async_save: True\nmodel:\n  mcore_gpt: True\n", "nemo=1.23"),
])
def test_zarr_with_async_save_is_an_error_and_a_refusal(files, text, where):
    path = files("z.yaml", text)
    extra = ["--source", where] if where else []
    lint = run_cli("lint", "--target", "megatron-core=0.15", *extra, str(path))
    assert lint.returncode == 1 and "3:5: NM115 error" in lint.stdout and "torch_dist format" in lint.stdout
    emit = run_cli("config", str(path), "--emit-python", "--target", "megatron-core=0.15", *extra)
    assert emit.returncode == 1 and "NM115" in emit.stderr and "ckpt_async_save=True" not in emit.stdout
