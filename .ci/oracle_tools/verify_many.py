"""Run ../shared/oracle/verify_nemo2.py, unmodified, on many converted checkpoints in one process.

Each run of verify_nemo2.py spends most of its time importing NeMo; here NeMo is imported once and the script is
executed once per checkpoint (runpy, fresh globals), with torch.distributed and megatron-core's parallel state torn
down in between so that each restore starts from scratch, as in a new process.

Usage (oracle venv): python verify_many.py VERIFY_SCRIPT RESULTS.tsv CKPT=REFERENCE.pt[=SOURCE.nemo[=own]] ...
With SOURCE.nemo, the config NeMo 2.0 builds from context/ (`load_context(..., subpath="model.config")`) is also
compared with the architecture in the .nemo's model_config.yaml, read here independently of nemo-migrate (the
forward pass alone is blind to some settings on a tiny model, e.g. rotary_base or the fusion flags).
With `=own`, the checkpoint is checked by own_check() below instead of verify_nemo2.py: the same NeMo 2.0 steps
(load_context, bit-equal raw weights, MegatronStrategy restore, CPU forward vs the NeMo 1.0 logits, same
thresholds), with a key mapping that also covers LayerNorm biases (verify_nemo2.py maps only the norm weights, so
it cannot check a LayerNorm model).
Writes one line per checkpoint to RESULTS.tsv: name, OK/FAIL, max|d| (or the error). Exit status 1 if any failed.
"""
import io
import os
import re
import runpy
import sys
import time
import traceback
from contextlib import redirect_stdout
from typing import Callable


def yaml_architecture(nemo_path: str) -> dict:
    """What NeMo 1.0 built from model_config.yaml (its own defaults for absent keys), in NeMo 2.0 field names."""
    import tarfile

    import yaml

    with tarfile.open(nemo_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "model_config.yaml")
        cfg = yaml.safe_load(tar.extractfile(member).read())
    norm = str(cfg.get("normalization", "layernorm")).lower()
    activation = cfg.get("activation", "gelu")
    expected = {
        "num_layers": cfg["num_layers"], "hidden_size": cfg["hidden_size"],
        "ffn_hidden_size": cfg["ffn_hidden_size"], "num_attention_heads": cfg["num_attention_heads"],
        "num_query_groups": cfg.get("num_query_groups") or cfg["num_attention_heads"],
        "kv_channels": cfg.get("kv_channels") or cfg["hidden_size"] // cfg["num_attention_heads"],
        "seq_length": cfg["encoder_seq_length"], "position_embedding_type": cfg.get("position_embedding_type"),
        "rotary_base": cfg.get("rotary_base", 10000), "rotary_percent": cfg.get("rotary_percentage", 1.0),
        "normalization": {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm", "layernorm1p": "LayerNorm"}[norm],
        "layernorm_zero_centered_gamma": norm == "layernorm1p", "layernorm_epsilon": cfg.get("layernorm_epsilon"),
        "gated_linear_unit": activation.endswith("glu"), "add_bias_linear": cfg.get("bias", True),
        "share_embeddings_and_output_weights": cfg.get("share_embeddings_and_output_weights", True),
        "make_vocab_size_divisible_by": cfg.get("make_vocab_size_divisible_by", 128),
        "window_size": cfg.get("window_size"), "apply_rope_fusion": cfg.get("apply_rope_fusion", False),
        "persist_layer_norm": cfg.get("persist_layer_norm", False),
        "masked_softmax_fusion": cfg.get("masked_softmax_fusion", False),
        "bias_activation_fusion": cfg.get("bias_activation_fusion", True),
        "bias_dropout_fusion": cfg.get("bias_dropout_add_fusion", True),
        "num_moe_experts": cfg.get("num_moe_experts"),
    }
    if cfg.get("num_moe_experts"):
        expected.update({"moe_router_topk": cfg.get("moe_router_topk", 2),
                         "moe_router_pre_softmax": cfg.get("moe_router_pre_softmax", False),
                         "moe_token_dispatcher_type": cfg.get("moe_token_dispatcher_type", "allgather")})
    return expected


def check_architecture(ckpt: str, nemo_path: str) -> str:
    """'' if NeMo 2.0's config built from context/ has the YAML's architecture, else the differences."""
    from nemo.lightning import io

    config = io.load_context(os.path.join(ckpt, "context"), subpath="model.config")
    diffs = []
    for field, want in yaml_architecture(nemo_path).items():
        got = getattr(config, field)
        if isinstance(want, float) or isinstance(got, float):
            same = got is not None and want is not None and float(got) == float(want)
        else:
            same = got == want
        if not same:
            diffs.append(f"{field}: NeMo 2.0 {got!r} != model_config.yaml {want!r}")
    return "; ".join(diffs)


_NORMS = {"self_attention.linear_qkv.layer_norm_": "input_layernorm.",
          "mlp.linear_fc1.layer_norm_": "pre_mlp_layernorm."}


def own_check(ckpt: str, ref_path: str) -> None:
    """verify_nemo2.py's three steps for any dense GPT layout; prints the same OK/max|d| lines, raises on failure."""
    from pathlib import Path

    import torch
    import torch.distributed.checkpoint as dcp
    from nemo import lightning as nl
    from nemo.collections.llm.inference.base import _setup_trainer_and_restore_model
    from nemo.lightning import io

    t0 = time.time()
    ck = Path(ckpt)
    ref = torch.load(ref_path, weights_only=False)  # the shared reference file, as verify_nemo2.py loads it
    ref_sd = ref["state_dict"]
    ctx = io.load_context(ck / "context")
    ids = list(ctx.model.tokenizer.text_to_ids(ref["text"]))
    assert ids == ref["tokens"][0, -len(ids):].tolist(), "tokenizer ids differ from NeMo 1.0"
    print("[1] load_context ->", type(ctx).__name__, "| model:", type(ctx.model).__name__, "| config:",
          type(ctx.model.config).__name__)

    md = dcp.FileSystemReader(str(ck / "weights")).read_metadata()
    metas = {k: v for k, v in md.state_dict_metadata.items() if hasattr(v, "size") and "_extra_state" not in k}
    buf = {k: torch.empty(v.size, dtype=v.properties.dtype) for k, v in metas.items()}
    dcp.load(buf, storage_reader=dcp.FileSystemReader(str(ck / "weights")), no_dist=True)
    seen = set()
    for key, value in buf.items():
        base = key.split(".", 1)[1]
        if ".layers." not in base:
            rk = "embedding.word_embeddings.weight" if base not in ref_sd and base == "output_layer.weight" else base
            assert torch.equal(value.float(), ref_sd[rk].float()), key
            seen.add(rk)
            continue
        pre, post = base.split(".layers.", 1)
        for old, new in _NORMS.items():
            if post.startswith(old):
                post = new + post[len(old):]
        for i in range(value.shape[0]):
            rk = f"{pre}.layers.{i}.{post}"
            assert torch.equal(value[i].float(), ref_sd[rk].float()), (key, i)
            seen.add(rk)
    assert seen == set(ref_sd), f"NeMo 1.0 tensors not in weights/: {sorted(set(ref_sd) - seen)[:5]}"
    print(f"[2] raw DCP weights == NeMo1 tensors: {len(seen)} tensors bit-equal")

    trainer = nl.Trainer(devices=1, accelerator="cpu",
                         strategy=nl.MegatronStrategy(ddp="pytorch", setup_optimizers=False))
    model = io.load_context(ck / "context", subpath="model")
    _setup_trainer_and_restore_model(path=ck, trainer=trainer, model=model)
    core = trainer.strategy.megatron_parallel[0]
    restored = {}
    for key, value in core.state_dict().items():
        if "_extra_state" in key:
            continue
        while key.startswith("module."):
            key = key[len("module."):]
        restored[key] = value
    assert set(restored) == set(ref_sd), sorted(set(restored) ^ set(ref_sd))[:5]
    for key, value in restored.items():
        assert torch.equal(value.float(), ref_sd[key].float()), key
    print(f"[3] MegatronStrategy restore: {len(restored)} params equal to NeMo1")
    gpt = core
    while hasattr(gpt, "module"):
        gpt = gpt.module
    tokens = ref["tokens"]
    pos = torch.arange(tokens.shape[1]).unsqueeze(0)
    mask = torch.triu(torch.ones(1, 1, tokens.shape[1], tokens.shape[1], dtype=torch.bool), diagonal=1)
    gpt.eval()
    # megatron-core's CPU (local) spec builds torch LayerNorm in fp32 whatever params_dtype says (RMSNorm too, but
    # its output keeps the input dtype); a LayerNorm output in fp32 then meets bf16 linear weights. NeMo's
    # mixed-precision module wrapper casts the whole module on a real run, and NeMo 1.0 ran it all in bf16 here, so
    # the model is cast to the config's dtype (lossless: the norm weights hold bf16 values).
    dtype = {True: torch.bfloat16}.get(bool(model.config.bf16), torch.float16 if model.config.fp16 else None)
    if dtype is not None:
        gpt.to(dtype)
    with torch.no_grad():
        logits = gpt(tokens, pos, mask).float()
    d = (logits - ref["logits"]).abs().max().item()
    agree = (logits.argmax(-1) == ref["logits"].argmax(-1)).float().mean().item()
    print(f"    forward on CPU: logits {tuple(logits.shape)}, max|NeMo2 - NeMo1| = {d:.3g}")
    if not d <= 0.02 or agree < 0.8:
        raise SystemExit(f"FAIL: forward differs from NeMo 1.0 (max|d| = {d:.3g}, argmax agreement {agree:.2f})")
    print(f"OK: NeMo 2.0 loads {ck} and reproduces NeMo 1.0 (max|d| = {d:.3g}; {time.time() - t0:.1f}s)")


def teardown() -> None:
    import torch

    try:
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
    except Exception:
        pass
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class Failed(Exception):
    """A check's verdict: its message is the FAIL line's detail, as it stands (no traceback)."""


def run_checked(name: str, results, check: Callable[[list[str]], str], columns: list[str] | None = None) -> bool:
    """One checkpoint's checks, its stdout captured, then its line in RESULTS.tsv (and on stderr): name, OK/FAIL,
    verify_nemo2.py's max|d| (from the captured output), `columns` (which `check` may fill in), seconds, detail.
    `check(columns)` returns the detail of an OK, or raises: Failed (its message is the detail), SystemExit
    (verify_nemo2.py on a logits mismatch), anything else (the error, and a traceback). An OK also needs
    verify_nemo2.py's "OK: NeMo 2.0 loads" line. torch.distributed is torn down after each checkpoint."""
    columns = columns if columns is not None else []
    buffer = io.StringIO()
    t0 = time.time()
    status, detail = "FAIL", ""
    try:
        with redirect_stdout(buffer):
            detail = check(columns)
        status = "OK"
    except Failed as e:
        detail = str(e)
    except SystemExit as e:  # verify_nemo2.py exits with a message on a logits mismatch
        detail = str(e.code)
    except BaseException as e:  # noqa: BLE001 - any failure is a FAIL line, then the next checkpoint
        detail = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
        traceback.print_exc()
    finally:
        teardown()
    out = buffer.getvalue()
    sys.stdout.write(out)
    m = re.search(r"max\|NeMo2 - NeMo1\| = ([0-9.e+-]+)", out)
    maxd = m.group(1) if m else "-"
    if status == "OK" and "OK: NeMo 2.0 loads" not in out:
        status, detail = "FAIL", "verify_nemo2.py did not report OK"
    line = "\t".join([name, status, maxd, *columns, f"{time.time() - t0:.1f}s", detail])
    results.write(line + "\n")
    results.flush()
    print(f"[verify] {line}", file=sys.stderr, flush=True)
    return status == "OK"


def main() -> int:
    script, results_path, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    import cpu_shim  # noqa: F401  (the oracle's CPU patches; verify_nemo2.py imports it too)
    failed = 0
    with open(results_path, "w") as results:
        for i, pair in enumerate(pairs):
            ckpt, ref, nemo_path, mode = (pair.split("=", 3) + ["", ""])[:4]
            os.environ["MASTER_PORT"] = str(29600 + i)  # a fresh rendezvous port per run
            sys.argv = [script, ckpt, ref]

            def check(columns: list[str], ckpt=ckpt, ref=ref, nemo_path=nemo_path, mode=mode) -> str:
                if mode == "own":
                    own_check(ckpt, ref)
                else:
                    runpy.run_path(script, run_name="__main__")
                if not nemo_path:
                    return ""
                differences = check_architecture(ckpt, nemo_path)
                if differences:
                    raise Failed(differences)
                return "architecture == model_config.yaml"

            failed += not run_checked(os.path.basename(ckpt.rstrip("/")), results, check)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
