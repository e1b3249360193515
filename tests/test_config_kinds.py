"""Which configs the distributed-checkpoint rules are about (NM111, NM116, emit), and NeMo 2.0 YAMLs."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

GPT_NO_FLAG = ("trainer:\n  devices: 1\nmodel:\n  tensor_model_parallel_size: 1\n  num_layers: 2\n"
               "  encoder_seq_length: 512\n")


def lint(path, *args):
    proc = run_cli("lint", "--output-format", "json", *args, str(path))
    assert proc.returncode in (0, 1), proc.stderr
    return [(f["code"], f["location"]["row"], f["message"]) for f in json.loads(proc.stdout)]


@pytest.mark.parametrize("name, text", [
    ("asr", "trainer:\n  devices: 1\nmodel:\n  sample_rate: 16000\n  preprocessor:\n"
            "    _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor\n"),
    ("fsdp", "trainer:\n  devices: 1\nmodel:\n  mcore_gpt: True\n  fsdp: True\n"),
    ("vit", "trainer:\n  devices: 1\nmodel:\n  tensor_model_parallel_size: 1\n  num_layers: 2\n"
            "  encoder_seq_length: 196\n  vision_pretraining_type: classify\n  patch_dim: 16\n"),
    ("clip", "trainer:\n  devices: 1\nmodel:\n  mcore_gpt: True\n  vision:\n    num_layers: 2\n  text:\n"
             "    num_layers: 2\n"),
    ("conversion", "run:\n  name: convert\nmodel:\n  model_type: gpt\n  checkpoint_folder: /ckpt\n"
                   "  tensor_model_parallel_size: 2\n"),
])
def test_models_without_distributed_checkpoints_get_no_default_note_and_are_not_emitted(files, name, text):
    path = files(f"{name}.yaml", text)
    assert lint(path) == []
    proc = run_cli("config", str(path), "--emit-python", entry="nemo-migrate")
    assert proc.returncode == 2 and "no megatron-core distributed-checkpoint settings" in proc.stderr
    assert "MegatronStrategy(" not in proc.stdout


def test_a_missing_mcore_flag_is_read_with_nemos_default_false(files):
    found = lint(files("gpt.yaml", GPT_NO_FLAG))
    assert [(c, r) for c, r, _ in found] == [("NM116", 3)]
    assert "reads a missing mcore_gpt as False" in found[0][2]
    # and nothing distributed is emitted for it
    proc = run_cli("config", str(files("gpt.yaml", GPT_NO_FLAG)), "--output-format", "json")
    assert json.loads(proc.stdout)["arguments"] == []


def test_a_fine_tuning_config_inherits_the_flag_and_is_not_judged_on_it(files):
    text = GPT_NO_FLAG + "  restore_from_path: /models/base.nemo\nexp_manager:\n  exp_dir: null\n"
    assert [c for c, _, _ in lint(files("sft.yaml", text))] == ["NM111"]
    text = ("pretrained_checkpoint:\n  restore_from_path: /models/base.nemo\ntrainer:\n  devices: 1\n"
            "model:\n  tensor_model_parallel_size: 1\n  num_layers: 2\n  encoder_seq_length: 512\nexp_manager: {}\n")
    assert [c for c, _, _ in lint(files("rm.yaml", text))] == ["NM111"]


def test_evaluation_and_generation_configs_write_no_checkpoints(files):
    base = GPT_NO_FLAG + "  restore_from_path: /models/base.nemo\n"
    assert lint(files("e.yaml", base + "exp_manager:\n  create_checkpoint_callback: False\n")) == []
    assert lint(files("g.yaml", base + "exp_manager: {}\ninference:\n  greedy: True\n")) == []


@pytest.mark.parametrize("family, flag", [("BERT", "mcore_bert"), ("T5", "mcore_t5")])
def test_legacy_bert_and_t5_are_not_sent_to_the_gpt_converter(files, family, flag):
    found = lint(files("m.yaml", f"model:\n  {flag}: False\n  num_layers: 2\n"))
    assert [c for c, _, _ in found] == ["NM116"]
    assert "convert_gpt_nemo_to_mcore" not in found[0][2] and f"no converter for legacy {family}" in found[0][2]


NEMO2 = ("trainer:\n  devices: 1\nstrategy:\n  _target_: nemo.lightning.MegatronStrategy\n  ckpt_async_save: true\n"
         "  ckpt_load_on_device: true\nmodel:\n  mcore_gpt: True\n")


def test_a_nemo2_yaml_is_judged_on_its_strategy_block_and_not_migrated_over(files):
    path = files("nemo2.yaml", NEMO2)
    found = lint(path)
    assert [(c, r) for c, r, _ in found] == [("NM103", 6)]  # no NM111 about NeMo 1.0 defaults
    proc = run_cli("config", str(path), "--emit-python", entry="nemo-migrate")
    # emit must not write ckpt_async_save=False over the YAML's own True
    assert proc.returncode == 2 and "already a NeMo 2.0 config" in proc.stderr
    assert "ckpt_async_save=False" not in proc.stdout
