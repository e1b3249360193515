"""The 15 real NeMo 1.0 configs in ../shared: lint finds exactly what is there and nothing false."""
from __future__ import annotations

import json

import pytest

from tests.conftest import NEMO_CONFIGS, need_shared, run_cli

GPT_V2 = [("NM111", 65), ("NM110", 184), ("NM111", 187), ("NM110", 189), ("NM110", 190)]

# (code, row) of every finding at the default target (nemo=2.5, megatron-core=0.16)
EXPECTED = {
    "megatron_bert_config.yaml": [("NM111", 42)],
    "megatron_falcon_config.yaml": [("NM111", 41)],
    "megatron_gemma_config.yaml": [("NM111", 41)],
    "megatron_gpt_config.v1.23.0.yaml": [("NM116", 58)],  # mcore_gpt: False, no dist_ckpt keys
    "megatron_gpt_config.v2.0.0.yaml": [("NM111", 65), ("NM110", 179), ("NM111", 182), ("NM110", 184),
                                        ("NM110", 185)],
    "megatron_gpt_config.v2.3.2.yaml": GPT_V2,
    "megatron_gpt_config.yaml": GPT_V2,
    "megatron_gpt_finetuning_config.yaml": [("NM111", 46)],
    "megatron_llama_config.yaml": [("NM111", 41)],
    "megatron_llama_inference.yaml": [],  # an inference config: no model mapping, nothing to judge
    "megatron_mamba_config.yaml": [("NM111", 42), ("NM106", 90), ("NM111", 92)],
    "megatron_mamba_finetuning_config.yaml": [("NM111", 50)],
    "megatron_qwen2_config.yaml": [("NM111", 41)],
    "megatron_starcoder2_config.yaml": [("NM111", 39)],
    "megatron_t5_config.yaml": [("NM116", 47)],  # mcore_t5: False
}


def lint_json(*args: str) -> tuple[int, list[dict]]:
    proc = run_cli("lint", "--output-format", "json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_every_shared_config_is_pinned():
    need_shared(NEMO_CONFIGS)
    assert sorted(p.name for p in NEMO_CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_findings_at_default_target(name):
    path = need_shared(NEMO_CONFIGS / name)
    code, findings = lint_json(str(path))
    assert [(f["code"], f["location"]["row"]) for f in findings] == EXPECTED[name]
    # only the zarr mamba config has anything above info, so only it fails a default pre-commit hook
    assert code == (1 if name == "megatron_mamba_config.yaml" else 0)


def test_gpt_config_reports_the_whole_dist_ckpt_block_as_notes_at_their_keys():
    path = need_shared(NEMO_CONFIGS / "megatron_gpt_config.yaml")
    _, findings = lint_json(str(path))
    by_row = {f["location"]["row"]: f for f in findings}
    assert "dist_ckpt_parallel_load" in by_row[187]["message"] and "ckpt_parallel_load=False" in by_row[187]["message"]
    assert "never reads" in by_row[189]["message"]  # dist_ckpt_assume_constant_structure
    assert "mcore_distributed_optim" in by_row[190]["message"]  # dist_ckpt_parallel_dist_opt vs apex optimizer
    assert by_row[65]["location"]["column"] == 5  # exp_manager.checkpoint_callback_params.async_save
    assert all(f["severity"] == "info" for f in findings)


def test_mamba_zarr_depends_on_the_target():
    path = need_shared(NEMO_CONFIGS / "megatron_mamba_config.yaml")
    code, findings = lint_json(str(path), "--target", "megatron-core=0.15")
    zarr = [f for f in findings if f["location"]["row"] == 90]
    assert [(f["code"], f["severity"]) for f in zarr] == [("NM107", "warning")]
    assert "megatron-core=0.15" in zarr[0]["message"] and code == 1
    code, findings = lint_json(str(path), "--target", "megatron-core=0.8")
    assert not [f for f in findings if f["location"]["row"] == 90] and code == 0
    # the zarr value has a (unsafe) fix to torch_dist, and the message says how to convert existing checkpoints
    code, findings = lint_json(str(path))
    zarr = next(f for f in findings if f["code"] == "NM106")
    assert zarr["fix"]["applicability"] == "unsafe" and zarr["fix"]["edits"][0]["content"] == "'torch_dist'"
    assert "nemo-migrate convert" in zarr["message"]


def test_mamba_finetuning_strictness_needs_nemo_2_1():
    path = need_shared(NEMO_CONFIGS / "megatron_mamba_finetuning_config.yaml")
    code, findings = lint_json(str(path), "--target", "nemo=2.0")
    assert ("NM109", 85) in [(f["code"], f["location"]["row"]) for f in findings]
    assert "2.1.0" in next(f for f in findings if f["code"] == "NM109")["message"] and code == 1


def test_source_release_changes_the_default_format_note():
    path = need_shared(NEMO_CONFIGS / "megatron_llama_config.yaml")
    code, findings = lint_json(str(path), "--source", "nemo=1.23")
    note = next(f for f in findings if f["code"] == "NM111")
    assert "dist_ckpt_format ('zarr'" in note["message"] and "source nemo=1.23" in note["message"]
    # zarr, the default before NeMo 2.0.0, is gone from megatron-core 0.16: an error, where migrate-config refuses
    error = next(f for f in findings if f["code"] == "NM106")
    assert error["severity"] == "error" and "defaulted it to zarr" in error["message"] and code == 1
    code, findings = lint_json(str(path))
    assert [f["code"] for f in findings] == ["NM111"] and "dist_ckpt_format" not in findings[0]["message"]
    assert code == 0
