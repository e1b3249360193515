"""Megatron-Bridge as a destination (`--to bridge`): the extracted field table, the mappings of NeMo 1.0 YAML and
NeMo 2.0 Python, the four output forms, the CLI's exit codes and usage errors.

Every snippet produced for Bridge 0.3.x is also recorded for the Bridge oracle (tests/bridge_snippets.py); for the
other releases, `check_against_field_table` checks each emitted field and value against the table extracted from
that release's tagged source.
"""
from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import pytest
import yaml

from migrator.engine.bridge_table import load_bridge_table, read_raw
from migrator.engine.table import load_table
from migrator.engine.table_schema import check_bridge_invariants, validate_bridge
from migrator.errors import MigratorError
from migrator.migrate.bridge_forms import emit_overrides, emit_yaml
from migrator.migrate.bridge_mapping import map_yaml
from migrator.python.bridge_emit import emit_bridge
from migrator.python.bridge_from_nemo2 import map_python
from migrator.versions import BridgeTarget, Source, Version
from tests.bridge_snippets import record
from tests.conftest import NEMO_CONFIGS, need_shared, run_cli

TABLE = load_table()
BRIDGE = load_bridge_table()
RELEASES = [r.version for r in BRIDGE.mapping.releases]


def target(release: str, core: str | None = None) -> BridgeTarget:
    rel = BRIDGE.resolve(release)
    return BridgeTarget(Version.parse(rel.version), Version.parse(core or rel.megatron_core))


def from_yaml(text: str, release: str = "0.6", core: str | None = None, *, source: str | None = None,
              force: bool = False, name: str = "cfg.yaml"):
    return map_yaml(text, name, TABLE, BRIDGE, target(release, core),
                    Source(Version.parse(source)) if source else Source(), force=force)


def from_python(text: str, release: str = "0.6", *, force: bool = False, name: str = "train.py"):
    return map_python(text, name, TABLE, BRIDGE, target(release), force=force)


def call_values(code: str) -> dict:
    """The keyword values of the CheckpointConfig(...) call in emitted code (read with ast, never executed)."""
    tree = ast.parse(code)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "CheckpointConfig"]
    assert len(calls) == 1
    return {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords}


def all_forms(mapping, label: str) -> dict:
    """Emit the four forms, check they carry the same values, record the Python for the oracle; the values."""
    code = emit_bridge(mapping)
    compile(code, label, "exec")
    block = yaml.safe_load(emit_yaml(mapping))  # PyYAML = YAML 1.1, as OmegaConf reads it
    overrides = {}
    for line in emit_overrides(mapping).splitlines():
        key, _, value = line.partition("=")
        assert key.startswith("checkpoint.")
        overrides[key.removeprefix("checkpoint.")] = yaml.safe_load(value.strip("'")) if value != "null" else None
    data = mapping.as_json()
    values = {a["name"]: a["value"] for a in data["arguments"]}
    assert call_values(code) == values
    assert (block["checkpoint"] or {}) == values
    assert overrides == values
    check_against_field_table(values, str(mapping.target.bridge), allow_removed=mapping.force)
    record(label, code, data)
    return values


def check_against_field_table(values: dict, release: str, *, allow_removed: bool = False) -> None:
    for name, value in values.items():
        facts = BRIDGE.facts(name, release)
        assert facts is not None, f"{name} is not a field of Bridge {release}"
        if value is None:
            assert facts.nullable, f"{name}=None but Bridge {release} types it {facts.type}"
            continue
        py_type = {"bool": bool, "int": int, "str": str}[facts.type]
        assert isinstance(value, py_type) and not (py_type is int and isinstance(value, bool)), (name, value)
        if facts.allowed is not None and not allow_removed:
            assert value in facts.allowed, (name, value, facts.allowed)


# ================================================================================================ the field table
def test_field_table_facts_read_from_the_tagged_sources():
    fmt = {r: BRIDGE.facts("ckpt_format", r) for r in ("0.2.0", "0.3.1", "0.4.0", "0.6.0")}
    assert fmt["0.3.1"].allowed == ["torch_dist", "zarr", "fsdp_dtensor"] and fmt["0.3.1"].origin == "bridge"
    assert fmt["0.4.0"].allowed == ["torch", "torch_dist", "torch_dcp", "fsdp_dtensor"]
    assert fmt["0.4.0"].origin == "megatron-lm"  # inherited from megatron.training.config.CheckpointConfig
    assert BRIDGE.lifespan("storage_writers_per_rank") == ("0.4.0", "0.6.0")
    assert BRIDGE.lifespan("dist_ckpt_workers") == ("0.5.0", "0.6.0")
    assert BRIDGE.lifespan("also_save_hf_checkpoint") == ("0.6.0", "0.6.0")
    assert BRIDGE.lifespan("ckpt_fully_parallel_save_process_group") == ("0.4.0", "0.6.0")
    # gone in 0.3.x, back (inherited) from 0.4.0: the variants are not contiguous
    assert BRIDGE.facts("dist_ckpt_save_pre_mcore_014", "0.3.1") is None
    assert BRIDGE.facts("dist_ckpt_save_pre_mcore_014", "0.2.2") is not None
    assert BRIDGE.facts("dist_ckpt_save_pre_mcore_014", "0.4.0") is not None
    # Bridge overrides Megatron-LM's defaults for these two
    worker = BRIDGE.facts("use_persistent_ckpt_worker", "0.5.0")
    assert worker.default is True and worker.origin == "bridge (overrides megatron-lm)"
    assert BRIDGE.facts("strict_fsdp_dtensor_load", "0.5.0").default is False
    assert BRIDGE.facts("async_strategy", "0.4.2").allowed == ["nvrx", "mcore"]
    assert BRIDGE.facts("async_strategy", "0.5.0").allowed is None  # a plain str from 0.5
    assert [r.megatron_core for r in BRIDGE.mapping.releases][::3] == ["0.15", "0.16", "0.17", "0.18"]


def test_bridge_invariants_catch_a_conflict_the_code_does_not_have():
    raw = read_raw()
    validate_bridge(raw, TABLE)  # the shipped files pass
    bad = copy.deepcopy(raw)
    bad["mapping"]["conflicts"][0]["check"] = "self.async_save and assert self.save is None"
    with pytest.raises(MigratorError, match="has no check"):
        validate_bridge(bad, TABLE)
    late = copy.deepcopy(raw)
    late["mapping"]["conflicts"][0]["first"] = "0.3.0"  # the check exists from 0.2.0
    with pytest.raises(MigratorError, match="excludes it"):
        validate_bridge(late, TABLE)
    wrong_field = copy.deepcopy(raw)
    wrong_field["mapping"]["nemo1"][0]["field"] = "save_ckpt_format"
    with pytest.raises(MigratorError, match="no field 'save_ckpt_format'"):
        validate_bridge(wrong_field, TABLE)
    too_early = copy.deepcopy(raw)
    entry = next(e for e in too_early["mapping"]["nemo1"] if e.get("field") == "storage_writers_per_rank")
    del entry["since"]
    with pytest.raises(MigratorError, match="say `since`"):
        validate_bridge(too_early, TABLE)
    extra = copy.deepcopy(raw)
    extra["mapping"]["releases"][0]["colour"] = "red"
    with pytest.raises(MigratorError, match="invalid Bridge table"):
        validate_bridge(extra, TABLE)


def test_every_release_tag_is_a_target_and_resolves():
    assert RELEASES[0] == "0.2.0" and RELEASES[-1] == "0.6.0"
    assert BRIDGE.resolve("0.3").version == "0.3.1" and BRIDGE.resolve("0.3.0").version == "0.3.0"
    assert BRIDGE.resolve("0").version == "0.6.0"
    with pytest.raises(MigratorError, match="newer releases are unverified"):
        BRIDGE.resolve("0.7")
    check_bridge_invariants(BRIDGE, TABLE)


# ================================================================================================ NeMo 1.0 YAML in
@pytest.mark.parametrize("release", RELEASES)
def test_every_shared_config_every_release_all_forms_agree(release):
    configs = sorted(need_shared(NEMO_CONFIGS).glob("*.yaml"))
    assert len(configs) >= 15
    for path in configs:
        mapping = map_yaml(path.read_text(), path.name, TABLE, BRIDGE, target(release), Source())
        if mapping.refused:
            assert path.name == "megatron_mamba_config.yaml" and Version.parse(release) >= Version.parse("0.3.0")
            assert [m.code for m in mapping.errors] == ["NM203"]
            continue
        values = all_forms(mapping, f"{path.stem}-{release}")
        if "dist_ckpt_format" in path.read_text():
            assert "ckpt_format" in values


def test_the_zarr_config_runs_on_bridge_0_3_with_megatron_core_0_15_only():
    text = need_shared(NEMO_CONFIGS / "megatron_mamba_config.yaml").read_text()
    old_core = from_yaml(text, "0.3", "0.15")
    assert not old_core.refused and all_forms(old_core, "mamba-0.3-core0.15")["ckpt_format"] == "zarr"
    refused = from_yaml(text, "0.3")
    assert refused.refused and "nemo-migrate convert" in refused.errors[0].text
    assert "megatron-core 0.16 removed zarr" in refused.errors[0].text
    forced = from_yaml(text, "0.3", force=True)
    assert not forced.refused and all_forms(forced, "mamba-0.3-force")["ckpt_format"] == "zarr"
    newest = from_yaml(text, "0.6", force=True)
    assert newest.field("ckpt_format").comment == "--force"


def test_official_table_mappings_and_flipped_defaults():
    text = """\
trainer: {max_steps: 10}
exp_manager:
  resume_if_exists: true
  resume_ignore_no_checkpoint: false
  resume_from_checkpoint: /ckpt/run1
  checkpoint_callback_params:
    dirpath: /ckpt/run1
    every_n_train_steps: 500
    save_weights_only: true
    save_top_k: 3
    async_save: true
model:
  dist_ckpt_format: torch_dist
  dist_ckpt_parallel_load: true
  dist_ckpt_load_strictness: log_all
"""
    for release in ("0.3", "0.6"):
        mapping = from_yaml(text, release)
        values = all_forms(mapping, f"official-{release}")
        assert values["save"] == "/ckpt/run1" and values["load"] == "/ckpt/run1"
        assert values["save_interval"] == 500
        assert values["save_optim"] is False  # inverse of save_weights_only
        assert values["exit_on_missing_checkpoint"] is True  # inverse of resume_ignore_no_checkpoint
        assert values["async_save"] is True and values["fully_parallel_load"] is True
        assert values["dist_ckpt_strictness"] == "log_all"
        # NeMo 1.0's parallel-save default (False) differs from Bridge's True: written, with a comment
        assert values["fully_parallel_save"] is False
        assert "Bridge defaults to True" in mapping.field("fully_parallel_save").comment
        assert "most_recent_k" not in values
        top_k = next(o for o in mapping.omitted if o.setting.endswith("save_top_k"))
        assert "most recent" in top_k.reason and "not carried: exp_manager.checkpoint_callback_params.save_top_k" \
            in emit_bridge(mapping)
        assert not [m for m in mapping.messages if m.code == "NM204"]  # save is set: finalize() passes
    assert "storage_writers_per_rank" not in from_yaml(text, "0.3").values()
    assert from_yaml(text, "0.4").values()["storage_writers_per_rank"] == 2  # NeMo's None = mcore's 2; Bridge 1


MODEL_KINDS = {
    "distributed": "  mcore_gpt: True\n",
    "fsdp": "  mcore_gpt: True\n  fsdp: True\n",  # FSDP checkpoints
    "legacy": "  mcore_gpt: False\n",  # pre-megatron-core (NM116)
    "asr": "  sample_rate: 16000\n",  # no Megatron language model: no distributed checkpoints at all
}


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_nemo1_defaults_only_for_models_that_write_distributed_checkpoints(kind):
    """As for NeMo 2.0 (yaml/kinds.Config.distributed): NeMo 1.0's dist_ckpt_* defaults were never used by an FSDP,
    legacy or non-Megatron model, so none is written for Bridge; the exp_manager settings still map."""
    text = ("trainer:\n  devices: 1\nexp_manager:\n  checkpoint_callback_params:\n    dirpath: /ckpt\nmodel:\n"
            + MODEL_KINDS[kind])
    mapping = from_yaml(text, "0.6")
    defaults = {f.name for f in mapping.fields if f.origin == "nemo1-default"}
    if kind == "distributed":
        assert defaults == {"fully_parallel_save", "storage_writers_per_rank"}
    else:
        assert defaults == set() and mapping.values() == {"save": "/ckpt"}, mapping.values()
    assert not mapping.refused


def test_async_save_without_save_is_a_warning_and_a_comment():
    mapping = from_yaml("exp_manager:\n  checkpoint_callback_params:\n    async_save: true\nmodel: {}\n", "0.3")
    warnings = [m for m in mapping.messages if m.code == "NM204"]
    assert len(warnings) == 1 and "finalize()" in warnings[0].text and warnings[0].severity == "warning"
    code = emit_bridge(mapping)
    assert "# warning (NM204)" in code
    assert all_forms(mapping, "async-no-save-0.3")["async_save"] is True


def test_keys_with_no_bridge_field_are_comments_that_say_why():
    text = ("model:\n  dist_ckpt_parallel_dist_opt: false\n  dist_ckpt_load_on_device: false\n"
            "  dist_ckpt_parallel_save_within_dp: true\n  dist_ckpt_torch_dist_multiproc: 4\n")
    old = from_yaml(text, "0.3")
    reasons = {o.setting: o.reason for o in old.omitted}
    assert "dist_ckpt_optim_fully_reshardable" in reasons["model.dist_ckpt_parallel_dist_opt"]
    assert "zarr" in reasons["model.dist_ckpt_load_on_device"]
    assert "never read by Bridge" in reasons["model.dist_ckpt_parallel_save_within_dp"]
    assert "from Bridge 0.4.0 on" in reasons["model.dist_ckpt_torch_dist_multiproc"]
    code = emit_bridge(old)
    assert code.count("# not carried:") == 4
    all_forms(old, "no-field-0.3")
    assert from_yaml(text, "0.4").values()["storage_writers_per_rank"] == 4


def test_refusals_as_today_for_bad_types_and_duplicates():
    bad = from_yaml("model:\n  dist_ckpt_parallel_save: 'True'\n")
    assert bad.refused and bad.errors[0].code == "NM101"
    dup = from_yaml("model:\n  dist_ckpt_format: torch_dist\n  dist_ckpt_format: torch_dist\n")
    assert dup.refused and dup.errors[0].code == "NM105"
    assert not from_yaml("model:\n  dist_ckpt_format: torch_dist\n  dist_ckpt_format: torch_dist\n",
                         force=True).refused
    wrong = from_yaml("exp_manager:\n  checkpoint_callback_params:\n    every_n_train_steps: often\nmodel: {}\n")
    assert wrong.refused and wrong.errors[0].code == "NM101"
    old_zarr = from_yaml("model:\n  mcore_gpt: true\n", "0.3", source="1.23.0")
    assert old_zarr.refused and "defaulted it to zarr" in old_zarr.errors[0].text


# ================================================================================================ NeMo 2.0 Python in
SCRIPT = """\
from nemo import lightning as nl
from nemo.lightning.pytorch.callbacks import ModelCheckpoint
from megatron.core.dist_checkpointing.validation import StrictHandling

strategy = nl.MegatronStrategy(
    tensor_model_parallel_size=2,
    save_ckpt_format="torch_dist",
    ckpt_load_optimizer=False,
    ckpt_load_main_params=True,
    ckpt_parallel_save_optim=False,
    ckpt_load_strictness=StrictHandling.LOG_ALL,
    ckpt_assume_constant_structure=some_flag,
)
checkpoint = ModelCheckpoint(dirpath="/results/ckpt", every_n_train_steps=100, save_top_k=2)
resume = nl.AutoResume(resume_from_directory="/results/ckpt", resume_ignore_no_checkpoint=True)
"""


@pytest.mark.parametrize("release", ["0.3", "0.4", "0.6"])
def test_nemo2_script_converts_to_the_right_checkpoint_config(release):
    mapping = from_python(SCRIPT, release)
    values = all_forms(mapping, f"nemo2-script-{release}")
    expected = {
        "save": "/results/ckpt", "save_interval": 100, "load": "/results/ckpt", "load_optim": False,
        "load_main_params_from_ckpt": True, "exit_on_missing_checkpoint": False, "ckpt_format": "torch_dist",
        "async_save": True,  # NeMo 2.0's ckpt_async_save default True, written because Bridge defaults to False
        "fully_parallel_load": True,  # likewise ckpt_parallel_load
        "dist_ckpt_strictness": "log_all",
    }
    if release != "0.3":
        expected["storage_writers_per_rank"] = 2
    assert values == expected
    assert "Bridge defaults to False" in mapping.field("async_save").comment
    assert mapping.field("async_save").origin == "nemo2-default"
    warned = [m for m in mapping.messages if m.setting == "ckpt_assume_constant_structure"]
    assert warned and "not a literal" in warned[0].text and warned[0].location.row == 12
    assert mapping.field("save").location.row == 14
    assert any(o.setting == "ckpt_parallel_save_optim" for o in mapping.omitted)
    assert not [m for m in mapping.messages if m.code == "NM204"]


def test_nemo2_zarr_and_async_without_save():
    mapping = from_python("import nemo.lightning as nl\ns = nl.MegatronStrategy(save_ckpt_format='zarr')\n", "0.3")
    assert mapping.refused and mapping.errors[0].code == "NM203" and mapping.errors[0].location.row == 2
    plain = from_python("from nemo.lightning import MegatronStrategy as MS\ns = MS(ckpt_parallel_load=False)\n", "0.3")
    values = all_forms(plain, "nemo2-async-default-0.3")
    assert values == {"async_save": True, "fully_parallel_load": False}
    assert [m.code for m in plain.messages if m.severity == "warning"] == ["NM204"]  # async_save needs save
    with pytest.raises(MigratorError, match="no MegatronStrategy"):
        from_python("x = 1\n")


# ================================================================================================ the CLI
def migrate(*args: str):
    return run_cli(*args, entry="migrate-config")


def test_cli_exit_codes_on_every_shared_config():
    for path in sorted(need_shared(NEMO_CONFIGS).glob("*.yaml")):
        proc = migrate(str(path), "--to", "bridge", "--output-format", "json")
        data = json.loads(proc.stdout)
        assert data["class"] == "megatron.bridge.training.config.CheckpointConfig"
        assert data["target"] == {"megatron-bridge": "0.6.0", "megatron-core": "0.19"}
        if path.name == "megatron_mamba_config.yaml":
            assert proc.returncode == 1 and data["refused"] and "nothing written" in proc.stderr
        else:
            assert proc.returncode == 0, proc.stderr
            assert all({"name", "value", "setting", "origin", "location"} <= set(a) for a in data["arguments"])


def test_cli_forms_and_usage_errors(tmp_path):
    config = need_shared(NEMO_CONFIGS / "megatron_gpt_config.yaml")
    py_proc = migrate(str(config), "--to", "bridge", "--target", "megatron-bridge=0.3")
    assert py_proc.returncode == 0 and "from megatron.bridge.training.config import CheckpointConfig" in py_proc.stdout
    assert "megatron-bridge=0.3.1, megatron-core=0.16" in py_proc.stdout
    yaml_proc = migrate(str(config), "--to", "bridge", "--emit-yaml")
    assert yaml_proc.returncode == 0 and "\ncheckpoint:\n" in yaml_proc.stdout
    over = migrate(str(config), "--to", "bridge", "--emit-overrides")
    assert over.returncode == 0 and all(line.startswith("checkpoint.") for line in over.stdout.splitlines())
    assert "checkpoint.storage_writers_per_rank=2" in over.stdout.splitlines()
    for args, message in [
        (("--to", "bridge", "--target", "nemo=2.5"), "names a NeMo release"),
        (("--target", "megatron-bridge=0.3"), "names a Megatron-Bridge release"),
        (("--emit-yaml",), "add --to bridge"),
        (("--to", "bridge", "--target", "megatron-bridge=0.9"), "not a release the rule table knows"),
        (("--to", "bridge", "--emit-yaml", "--emit-overrides"), "choose one form"),
    ]:
        proc = migrate(str(config), *args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert proc.stdout == ""
    not_nemo = tmp_path / "ci.yaml"
    not_nemo.write_text("jobs:\n  build: {runs-on: ubuntu}\n")
    broken = tmp_path / "broken.py"
    broken.write_text("strategy = nl.MegatronStrategy(\n")
    for path, message in [(tmp_path / "missing.yaml", "missing.yaml: cannot read"),
                          (not_nemo, "not a NeMo 1.0 config"), (broken, "broken.py:")]:
        proc = migrate(str(path), "--to", "bridge")
        assert proc.returncode == 2 and message in proc.stderr and proc.stdout == "", proc.stderr
        assert proc.stderr.count("\n") == 1  # one line, no traceback
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    proc = migrate(str(script), "--to", "bridge", "--emit-overrides", "--target", "megatron-bridge=0.3")
    assert proc.returncode == 0 and "checkpoint.async_save=true" in proc.stdout.splitlines()
    assert "train.py:12:5" in proc.stderr  # the non-literal value is reported with its location


# ================================================================================================ Bridge YAML lint
def test_bridge_yaml_is_recognised_before_nemo1_classification(tmp_path):
    from migrator.yaml.kinds import classify
    from migrator.yaml.document import parse

    run_config = ("_target_: megatron.bridge.training.config.ConfigContainer\nmodel:\n  num_layers: 2\n"
                  "  dist_ckpt_format: zarr\ncheckpoint:\n  save: /ckpt\n  save_ckpt_format: zarr\n")
    root = parse(run_config, "run_config.yaml").roots[0]
    config = classify(root)
    assert config.kind == "bridge" and config.checkpoint[0].start.row == 5 and not config.distributed
    with pytest.raises(MigratorError, match="run_config.yaml:5:1: already a Megatron-Bridge YAML"):
        from_yaml(run_config, name="run_config.yaml")  # never migrated as if it were NeMo 1.0
    targeted = parse("checkpoint:\n  _target_: megatron.bridge.training.config.CheckpointConfig\n  every: 5\n",
                     "c.yaml").roots[0]
    assert classify(targeted).kind == "bridge"  # the class named, whatever the fields
    nemo1 = parse("model:\n  dist_ckpt_format: zarr\n", "c.yaml").roots[0]
    assert classify(nemo1).kind == "training"
    other = parse("checkpoint:\n  every: 5\n", "c.yaml").roots[0]
    assert classify(other) is None  # a `checkpoint:` block with no Bridge field is not Bridge YAML
    path = tmp_path / "run_config.yaml"
    path.write_text(run_config)
    # nor by the NeMo 2.0 destination (which used to read `model.dist_ckpt_format` as NeMo 1.0's and refuse zarr)
    nemo2 = migrate(str(path), "--emit-python")
    assert nemo2.returncode == 2 and nemo2.stdout == ""
    assert nemo2.stderr.strip().endswith("not a NeMo 1.0 config; lint it with `nemo-migrate lint`"), nemo2.stderr
    proc = run_cli("lint", str(path), "--output-format", "json", "--target", "megatron-bridge=0.3")
    found = [(d["code"], d["location"]["row"]) for d in json.loads(proc.stdout)]
    assert found == [("NM201", 7)] and proc.returncode == 1  # no NeMo 1.0 NM106 on model.dist_ckpt_format
    fixed = run_cli("lint", str(path), "--unsafe-fixes", "--fix", "--target", "megatron-bridge=0.3")
    # the rename, then the zarr the renamed key now carries (NM203), are both fixed; the NeMo model block is untouched
    assert path.read_text() == run_config.replace("save_ckpt_format: zarr", "ckpt_format: torch_dist")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


def test_a_nemo2_yaml_is_refused_not_emitted_empty(tmp_path):
    """A YAML written for NeMo 2.0 holds MegatronStrategy arguments, which the NeMo 1.0 mapping does not read: an empty
    CheckpointConfig() would drop its ckpt_async_save silently."""
    path = tmp_path / "nemo2.yaml"
    path.write_text("trainer:\n  devices: 1\n  strategy:\n    _target_: nemo.lightning.MegatronStrategy\n"
                    "    ckpt_async_save: true\nmodel:\n  mcore_gpt: True\n")
    for form in ("--emit-python", "--emit-overrides"):
        proc = migrate(str(path), "--to", "bridge", form)
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert "nemo2.yaml:3:3: a NeMo 2.0 config" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_bridge_python_lint_through_the_cli(tmp_path):
    script = tmp_path / "recipe.py"
    script.write_text("from megatron.bridge.recipes.llama import llama3_8b_pretrain_config\n"
                      "cfg = llama3_8b_pretrain_config()\n"
                      "cfg.checkpoint.ckpt_parallel_load = True\n"
                      "cfg.checkpoint.storage_writers_per_rank = 4\n")
    proc = run_cli("lint", str(script), "--output-format", "json", "--target", "megatron-bridge=0.3")
    found = [(d["code"], d["location"]["row"], d["location"]["column"]) for d in json.loads(proc.stdout)]
    assert found == [("NM201", 3, 16), ("NM205", 4, 16)]
    newest = run_cli("lint", str(script), "--output-format", "json")
    assert [d["code"] for d in json.loads(newest.stdout)] == ["NM201"]
    fixed = run_cli("lint", str(script), "--unsafe-fixes", "--fix")
    assert "cfg.checkpoint.fully_parallel_load = True\n" in script.read_text(), fixed.stderr


# ================================================================================================ patching Bridge code
PATCH_YAML = """\
exp_manager:
  checkpoint_callback_params:
    dirpath: /ckpt/run
    every_n_train_steps: 200
model:
  dist_ckpt_format: torch_dist
  dist_ckpt_parallel_load: true
"""
RECIPE = """\
from megatron.bridge.recipes.llama import llama3_8b_pretrain_config


def main():
    cfg = llama3_8b_pretrain_config(dir="/results")  # the recipe
    cfg.checkpoint.save_interval = 50
    cfg.checkpoint.ckpt_format = 'zarr'
    cfg.train.train_iters = 10\r
    return cfg
"""
DIRECT = """\
import megatron.bridge.training.config as bc

cfg = bc.ConfigContainer(
    model=None,
    checkpoint=bc.CheckpointConfig(
        save="/old",
        async_save=True,  # kept: the YAML does not set it
    ),
)
"""
ONLY_RECIPE = """\
from megatron.bridge.recipes.llama import llama3_8b_pretrain_config as recipe
cfg = recipe()
print(cfg)
"""


def test_patch_bridge_code_assignments_calls_and_recipes(tmp_path):
    (tmp_path / "old.yaml").write_text(PATCH_YAML)
    files = {"recipe.py": RECIPE, "direct.py": DIRECT, "only_recipe.py": ONLY_RECIPE,
             "untouched.py": "import os\nprint(os.sep)\n"}
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode())
    check = migrate(str(tmp_path / "old.yaml"), "--to", "bridge", "--target", "megatron-bridge=0.3", "--patch",
                    str(tmp_path), "--check")
    assert check.returncode == 1 and "3 files would be patched, 1 unchanged" in check.stderr
    assert all((tmp_path / n).read_bytes() == t.encode() for n, t in files.items())
    proc = run_cli("patch", "--to", "bridge", "--target", "megatron-bridge=0.3", "--config", str(tmp_path / "old.yaml"),
                   str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    recipe = (tmp_path / "recipe.py").read_bytes().decode()
    assert recipe == RECIPE.replace("save_interval = 50", "save_interval = 200").replace(
        "ckpt_format = 'zarr'\n", "ckpt_format = 'torch_dist'\n"
        "    cfg.checkpoint.save = \"/ckpt/run\"\n"
        "    cfg.checkpoint.fully_parallel_save = False  # NeMo 1.0 default (not set in the YAML); Bridge defaults to "
        "True\n    cfg.checkpoint.fully_parallel_load = True\n")  # the \r of the untouched line stays
    direct = (tmp_path / "direct.py").read_text()
    assert 'save="/ckpt/run",\n        async_save=True,  # kept: the YAML does not set it\n        save_interval=200,' \
        in direct
    only = (tmp_path / "only_recipe.py").read_text()
    assert only.startswith(ONLY_RECIPE.rsplit("print", 1)[0] + 'cfg.checkpoint.save = "/ckpt/run"\n')
    for name, text in (("recipe.py", recipe), ("direct.py", direct), ("only_recipe.py", only)):
        values = {}
        exec_free = ast.parse(text)  # every patched file parses; the values it now sets are the mapping's
        for node in ast.walk(exec_free):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute) \
                    and ast.unparse(node.targets[0].value).endswith("checkpoint"):
                values[node.targets[0].attr] = ast.literal_eval(node.value)
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("CheckpointConfig"):
                values.update({k.arg: ast.literal_eval(k.value) for k in node.keywords})
        expected = from_yaml(PATCH_YAML, "0.3").values()
        assert {k: v for k, v in values.items() if k in expected} == expected, name
    again = run_cli("patch", "--to", "bridge", "--target", "megatron-bridge=0.3", "--config",
                    str(tmp_path / "old.yaml"), str(tmp_path), "--check")
    assert again.returncode == 0 and "0 files would be patched" in again.stderr  # idempotent
    assert (tmp_path / "untouched.py").read_text() == files["untouched.py"]


def test_patch_bridge_reports_what_it_cannot_edit(tmp_path):
    (tmp_path / "old.yaml").write_text(PATCH_YAML)
    script = tmp_path / "train.py"
    text = ("from megatron.bridge.training.config import CheckpointConfig\n"
            "ckpt = CheckpointConfig(save=SAVE_DIR, **extra)\n")
    script.write_text(text)
    proc = migrate(str(tmp_path / "old.yaml"), "--to", "bridge", "--patch", str(script))
    assert proc.returncode == 0 and "train.py:2:8: CheckpointConfig(...) not edited" in proc.stderr
    assert script.read_text() == text
    diff = migrate(str(tmp_path / "old.yaml"), "--to", "bridge", "--patch", str(tmp_path / "missing.py"), "--diff")
    assert diff.returncode == 2 and "no such file" in diff.stderr


@pytest.mark.parametrize("release", RELEASES)
def test_the_readme_example_at_every_release(release):
    from tests.conftest import PROJECT_FIXTURES

    path = PROJECT_FIXTURES / "examples" / "gpt_to_bridge.yaml"
    mapping = map_yaml(path.read_text(), path.name, TABLE, BRIDGE, target(release), Source())
    values = all_forms(mapping, f"readme-{release}")
    assert values["save"] == "/results/checkpoints" and values["async_save"] is True
    assert "most_recent_k" not in values


def test_readme_shows_the_real_output():
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    proc = migrate(str(ROOT / "fixtures" / "examples" / "gpt_to_bridge.yaml"), "--to", "bridge", "--emit-yaml")
    assert proc.returncode == 0 and proc.stdout in readme


# ================================================================================================ lint verdicts, checked by Bridge
LINT_CASES = {
    "nemo2-name": "CheckpointConfig(save_ckpt_format='torch_dist')",
    "newer-field": "CheckpointConfig(storage_writers_per_rank=2)",
    "newest-field": "CheckpointConfig(also_save_hf_checkpoint=True)",
    "typo": "CheckpointConfig(fully_paralel_load=True)",
    "pre-014-gone-in-0.3": "CheckpointConfig(dist_ckpt_save_pre_mcore_014=True)",
    "async-no-save": "CheckpointConfig(async_save=True)",
    "async-with-save": "CheckpointConfig(async_save=True, save='/tmp/ckpt')",
    "main-params": "CheckpointConfig(load='/tmp/ckpt', load_main_params_from_ckpt=True)",
    "main-params-ok": "CheckpointConfig(load='/tmp/ckpt', load_main_params_from_ckpt=True, load_optim=False)",
    "ckpt-step": "CheckpointConfig(ckpt_step=5)",
    "no-worker": "CheckpointConfig(save='/tmp/ckpt', async_save=True, use_persistent_ckpt_worker=False)",
    "reshardable": "CheckpointConfig(dist_ckpt_optim_fully_reshardable=True, "
                   "distrib_optim_fully_reshardable_mem_efficient=True)",
    "plain": "CheckpointConfig(save='/tmp/ckpt', save_interval=10, most_recent_k=2, ckpt_format='torch_dist')",
}


@pytest.mark.parametrize("name", sorted(LINT_CASES))
def test_lint_verdicts_on_bridge_0_3_calls(name):
    """Each verdict is recorded for the Bridge oracle, which confirms it in real Bridge 0.3.1: NM201/NM205 on a
    keyword = TypeError at construction, NM204 (a finalize() conflict) = finalize() fails, nothing = both pass."""
    from migrator.cli.options import resolve_lint_targets
    from migrator.engine.runner import LintOptions, check_text

    code = f"from megatron.bridge.training.config import CheckpointConfig\ncheckpoint = {LINT_CASES[name]}\n"
    nemo, bridge_target = resolve_lint_targets("megatron-bridge=0.3")
    found, _ = check_text(code, "case.py", TABLE, LintOptions(target=nemo, bridge_target=bridge_target))
    codes = {d.code for d in found}
    construct_fails = bool(codes & {"NM201", "NM205"})
    finalize_fails = any(d.code == "NM204" and "finalize()" in d.message for d in found)
    expected = {"nemo2-name": {"NM201"}, "newer-field": {"NM205"}, "newest-field": {"NM205"}, "typo": {"NM201"},
                "pre-014-gone-in-0.3": {"NM205"}, "async-no-save": {"NM204"}, "main-params": {"NM204"},
                "ckpt-step": {"NM204"}, "no-worker": {"NM204"}, "reshardable": {"NM204"}}
    assert codes == expected.get(name, set())
    call = ast.parse(LINT_CASES[name]).body[0].value
    values = {} if construct_fails else {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    from tests.bridge_snippets import record_lint_case

    record_lint_case(name, code, values, construct_fails=construct_fails, finalize_fails=finalize_fails)
