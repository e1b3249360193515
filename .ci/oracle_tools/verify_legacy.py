"""The legacy oracle's checks, in one NeMo 2.0 process (see .ci/oracle_legacy).

For each converted legacy fixture:
1. ../shared/oracle/legacy/verify_nemo2.py, unmodified, with `--cast fp32 --tol 1e-4`: NeMo 2.0's load_context,
   the raw weights bit-equal to the megatron-core reference's state_dict (TP=1), the MegatronStrategy restore and
   an fp32 CPU forward against that reference's fp32 logits;
2. the config NeMo 2.0 builds from context/ against the source .nemo's model_config.yaml (verify_many.py);
3. our output's fp32 logits against NeMo 1.0's own fp32 logits (the legacy model's reference.pt for `c_*`), and,
   where NeMo's own chain output exists (legacy -> mcore -> NeMo 2.0, the fixtures' nemo2/), the same for it:
   ours must be at least as close.

Usage (oracle venv, PYTHONPATH holding ../shared/oracle for cpu_shim):
    python verify_legacy.py VERIFY_SCRIPT RESULTS.tsv NAME=OURS=REF=NEMO1_REF=SOURCE.nemo[=CHAIN_DIR] ...
RESULTS.tsv: name, OK/FAIL, verify_nemo2 max|d|, ours vs NeMo 1.0 and chain vs NeMo 1.0 (max|d| of the fp32 /
bf16 logits), seconds, detail.
"""
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_many import check_architecture, run_checked, teardown  # noqa: E402


def logits(ckpt: str, tokens):
    """NeMo 2.0's restore of `ckpt` and CPU forwards in bf16 and in fp32 (verify_nemo2.py's --cast bf16 / fp32:
    the weights hold bf16 values, so both casts are lossless)."""
    from pathlib import Path

    import torch
    from nemo import lightning as nl
    from nemo.collections.llm.inference.base import _setup_trainer_and_restore_model
    from nemo.collections.llm.recipes.precision.mixed_precision import bf16_mixed
    from nemo.lightning import io as nemo_io

    trainer = nl.Trainer(devices=1, accelerator="cpu",
                         strategy=nl.MegatronStrategy(ddp="pytorch", setup_optimizers=False, plugins=bf16_mixed()))
    model = nemo_io.load_context(Path(ckpt) / "context", subpath="model")
    _setup_trainer_and_restore_model(path=Path(ckpt), trainer=trainer, model=model)
    gpt = trainer.strategy.megatron_parallel[0]
    while hasattr(gpt, "module"):
        gpt = gpt.module
    gpt.eval()
    pos = torch.arange(tokens.shape[1]).unsqueeze(0)
    mask = torch.triu(torch.ones(1, 1, tokens.shape[1], tokens.shape[1], dtype=torch.bool), diagonal=1)
    out = {}
    with torch.no_grad():
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            gpt.to(dtype)
            out[name] = gpt(tokens, pos, mask).float()
    return out


def main() -> int:
    import torch

    script, results_path, entries = sys.argv[1], sys.argv[2], sys.argv[3:]
    import cpu_shim  # noqa: F401  (the oracle's CPU patches; verify_nemo2.py imports it too)

    failed = 0
    port = 29650
    with open(results_path, "w") as results:
        for entry in entries:
            name, ours, ref, nemo1_ref, source, chain = (entry.split("=", 5) + [""])[:6]

            def check(columns: list[str], ours=ours, ref=ref, nemo1_ref=nemo1_ref, source=source,
                      chain=chain) -> str:
                nonlocal port
                port += 1
                os.environ["MASTER_PORT"] = str(port)
                sys.argv = [script, ours, ref, "--cast", "fp32", "--tol", "1e-4"]
                runpy.run_path(script, run_name="__main__")
                teardown()
                detail = check_architecture(ours, source)
                if detail:
                    raise AssertionError(detail)
                nemo1 = torch.load(nemo1_ref, weights_only=False)
                expected = {"fp32": nemo1["ref_logits_fp32"], "bf16": nemo1["logits"]}

                def distances(ckpt: str) -> dict:
                    nonlocal port
                    port += 1
                    os.environ["MASTER_PORT"] = str(port)
                    got = logits(ckpt, nemo1["tokens"])
                    teardown()
                    return {k: (got[k] - expected[k]).abs().max().item() for k in expected}

                mine = distances(ours)
                columns[0] = f"{mine['fp32']:.3g} / {mine['bf16']:.3g}"
                if chain:
                    theirs = distances(chain)
                    columns[1] = f"{theirs['fp32']:.3g} / {theirs['bf16']:.3g}"
                    for k in ("fp32", "bf16"):
                        if mine[k] > theirs[k]:
                            raise AssertionError(f"{k}: ours is further from NeMo 1.0 ({mine[k]:.3g}) than "
                                                 f"NeMo's chain ({theirs[k]:.3g})")
                if mine["fp32"] > 1e-4:
                    raise AssertionError(f"our fp32 logits differ from NeMo 1.0's by {mine['fp32']:.3g}")
                return "architecture == model_config.yaml"

            # columns: ours vs NeMo 1.0, NeMo's chain vs NeMo 1.0
            failed += not run_checked(name, results, check, ["-", "-"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
