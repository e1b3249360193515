"""Rule facts read from NeMo's code (issue: lint on real repositories), through the real CLI."""
from __future__ import annotations

import json

from tests.conftest import run_cli


def lint(path, *args):
    proc = run_cli("lint", "--output-format", "json", *args, str(path))
    assert proc.returncode in (0, 1), proc.stderr
    return [(f["code"], f["location"]["row"], f["location"]["column"], f["message"]) for f in json.loads(proc.stdout)]


def test_load_on_device_names_the_save_format_and_qlora_reads_it_anyway(files):
    text = "model:\n  mcore_gpt: True\n  dist_ckpt_format: torch_dist\n  dist_ckpt_load_on_device: false\n"
    found = [f for f in lint(files("a.yaml", text)) if f[0] == "NM110"]
    assert len(found) == 1 and "only when the save format, dist_ckpt_format, is zarr" in found[0][3]
    assert "unless an old zarr checkpoint is loaded" not in found[0][3]
    qlora = text + "  peft:\n    peft_scheme: qlora\n"
    assert not [f for f in lint(files("q.yaml", qlora)) if f[0] == "NM110"]


def test_assume_ok_unexpected_is_how_nemo_2_0_loads(files):
    path = files("s.yaml", "model:\n  mcore_gpt: True\n  dist_ckpt_load_strictness: assume_ok_unexpected\n")
    assert not [f for f in lint(path, "--target", "nemo=2.0") if f[0] == "NM109"]
    path = files("t.yaml", "model:\n  mcore_gpt: True\n  dist_ckpt_load_strictness: log_all\n")
    assert [f[0] for f in lint(path, "--target", "nemo=2.0") if f[0] == "NM109"] == ["NM109"]


def test_async_save_under_model_checkpoint_callback_params_is_misplaced(files):
    path = files("m.yaml", "model:\n  mcore_gpt: True\n  checkpoint_callback_params:\n    async_save: true\n")
    found = [f for f in lint(path) if f[0] == "NM104"]
    assert [(r, c) for _, r, c, _ in found] == [(4, 5)]
    assert "NeMo reads exp_manager.checkpoint_callback_params.async_save" in found[0][3]


def test_the_distributed_optimizer_with_the_default_format_gets_nm114(files):
    path = files("o.yaml", "model:\n  mcore_gpt: True\n  optim:\n    name: mcore_distributed_optim\n")
    assert [(r, c) for code, r, c, _ in lint(path) if code == "NM114"] == [(4, 11)]
    assert not [f for f in lint(path, "--target", "megatron-core=0.15") if f[0] == "NM114"]


def test_store_optimizer_states_is_swallowed_by_kwargs(files):
    # as NeMo's own scripts/llm/generate.py writes it (v2.0.0 to v2.4.0)
    path = files("generate.py", "from nemo import lightning as nl\n"
                                "strategy = nl.MegatronStrategy(setup_optimizers=False, store_optimizer_states=False)\n")
    found = lint(path)
    assert [(code, r, c) for code, r, c, _ in found] == [("NM103", 2, 56)]
    assert "ckpt_save_optimizer" in found[0][3]
