#!/usr/bin/env python
"""Oracle (Megatron-Bridge venv): start training from converted checkpoints with Bridge's own training loader, and
build their tokenizer with Bridge's own builder. Imports only Bridge, megatron-core, torch, PyYAML, sentencepiece /
transformers (never nemo-migrate).

    python bridge_train_load.py SHIM_DIR RESULTS.tsv CKPT=REFERENCE.pt=SOURCE [...]

SHIM_DIR: ../shared/oracle/bridge (bridge_cpu_shim.py). CKPT: a Bridge checkpoint root; REFERENCE.pt: NeMo 1.0's
reference (tokens, text, logits, state_dict); SOURCE: the .nemo or NeMo 2.0 directory CKPT was converted from
(only its tokenizer is read here, to compare token ids). For each checkpoint, in one process:
  finetune  cfg.checkpoint.pretrained_checkpoint=CKPT, load=None, load_optim=False ->
            megatron.bridge.training.checkpointing.load_checkpoint(state, model, None, None): Bridge's fine-tune start
            (it reads latest_train_state.pt, common.pt's content_metadata and run_config.yaml); the model is built
            from run_config.yaml's provider (local layer spec on CPU); parameters must equal the reference and the
            forward logits must be bit-equal to NeMo 1.0's; the returned iteration must be 0.
  resume    cfg.checkpoint.load=CKPT (not fine-tuning), load_optim=False: the resume path, which also reads
            run_config.yaml's checkpoint: section (save_rng/save_optim) and train_state.pt; the step must be the
            checkpoint's iteration and the parameters equal again.
  tokenizer megatron.bridge.training.model_load_save.load_tokenizer(iter_dir): ids of the reference text must be
            NeMo 1.0's reference tokens (after its BOS), and ids of more texts must equal the source tokenizer's
            (sentencepiece / transformers on the source's own tokenizer file).
Writes one line per check to RESULTS.tsv (name, check, status, max|d|, detail); exits 1 on any failure.
"""
import os
import signal
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

TEXTS = ["the quick brown fox jumps over the lazy dog", "Hello, World! 1234 ümlaut\ttab  two spaces",
         "a", "dog dog dog. The END?"]
FUSIONS = ["apply_rope_fusion", "bias_activation_fusion", "masked_softmax_fusion", "persist_layer_norm",
           "gradient_accumulation_fusion", "cross_entropy_loss_fusion", "bias_dropout_fusion"]


def source_tokenizer(source: Path, work: Path):
    """A callable text -> ids from the source checkpoint's own tokenizer file (read with yaml + tarfile)."""
    import yaml

    if source.is_dir():  # NeMo 2.0 directory: context/model.yaml's tokenizer
        tok = yaml.safe_load((source / "context" / "model.yaml").read_text())["tokenizer"]
        if "model_path" in tok:
            path = source / "context" / tok["model_path"]
        else:
            path = source / "context" / tok["pretrained_model_name"]
    else:
        with tarfile.open(source) as archive:
            members = {m.name.lstrip("./"): m for m in archive.getmembers()}
            cfg = yaml.safe_load(archive.extractfile(members["model_config.yaml"]).read())["tokenizer"]
            if str(cfg.get("library")).lower() == "huggingface":
                path = Path(cfg["type"])
                if not path.is_absolute():
                    path = source.parent / path
            else:
                name = str(cfg["model"]).split("nemo:", 1)[-1]
                path = work / name
                path.write_bytes(archive.extractfile(members[name]).read())
    if path.is_dir():
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(path))
        return lambda text: hf.encode(text, add_special_tokens=False)
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    return lambda text: sp.encode(text)


def build_model(iter_dir: Path):
    from megatron.bridge.models.gpt_provider import local_layer_spec
    from megatron.bridge.training.model_load_save import load_model_config

    provider, _ = load_model_config(str(iter_dir))
    provider.transformer_layer_spec = local_layer_spec
    for name in FUSIONS:
        if hasattr(provider, name):
            setattr(provider, name, False)
    provider.perform_initialization = True  # random init: the load must overwrite every parameter
    provider.finalize() if hasattr(provider, "finalize") else None
    model = provider.provide_distributed_model(wrap_with_ddp=False, use_cpu_initialization=True)
    return provider, (model if isinstance(model, list) else [model])


def make_state(provider, **checkpoint):
    from megatron.bridge.training.config import CheckpointConfig, LoggerConfig, RNGConfig
    from megatron.bridge.training.state import GlobalState

    ckpt = CheckpointConfig(load_optim=False, **checkpoint)
    cfg = SimpleNamespace(checkpoint=ckpt, model=provider, rng=RNGConfig(), logger=LoggerConfig(), peft=None,
                          optimizer=SimpleNamespace(use_distributed_optimizer=False),
                          train=SimpleNamespace(exit_signal_handler=False, exit_signal=signal.SIGTERM), ft=None, nvrx_straggler=None,
                          inprocess_restart=None)
    state = GlobalState()
    state.cfg = cfg
    return state


def compare(model, ref, provider):
    import torch

    gpt = model[0]
    while hasattr(gpt, "module"):
        gpt = gpt.module
    sd = {k: v for k, v in gpt.state_dict().items() if "_extra_state" not in k}
    bad = []
    for k, v in sd.items():
        r = ref["state_dict"].get(k)
        if r is None and k == "output_layer.weight" and provider.share_embeddings_and_output_weights:
            continue
        if r is None or not torch.equal(v.float(), r.float()):
            bad.append(k)
    tokens = ref["tokens"]
    pos = torch.arange(tokens.shape[1]).unsqueeze(0)
    mask = torch.triu(torch.ones(1, 1, tokens.shape[1], tokens.shape[1], dtype=torch.bool), diagonal=1)
    gpt.eval()
    with torch.no_grad():
        logits = gpt(tokens, pos, mask).float()
    d = (logits - ref["logits"].float()).abs().max().item()
    return bad, d


def check_one(ckpt: Path, ref_path: Path, source: Path, work: Path, results: list):
    import torch
    from megatron.bridge.training import checkpointing
    from megatron.bridge.training.model_load_save import load_tokenizer

    name = ckpt.name
    iteration = int((ckpt / "latest_checkpointed_iteration.txt").read_text())
    iter_dir = ckpt / f"iter_{iteration:07d}"
    ref = torch.load(ref_path, weights_only=False)

    for mode in ("finetune", "resume"):
        t = time.time()
        try:
            provider, model = build_model(iter_dir)
            if mode == "finetune":
                state = make_state(provider, pretrained_checkpoint=str(ckpt), load=None)
            else:
                state = make_state(provider, load=str(ckpt), load_rng=False)
            step, _ = checkpointing.load_checkpoint(state, model, None, None)
            want = 0 if mode == "finetune" else iteration
            bad, d = compare(model, ref, provider)
            ok = not bad and d == 0 and step == want and state.train_state.step == want
            detail = f"step {step} (want {want}); params differing: {bad[:3]}; {time.time() - t:.1f}s"
            results.append((name, mode, "ok" if ok else "FAIL", f"{d:.3g}", detail))
        except Exception as error:  # noqa: BLE001 - reported per checkpoint
            traceback.print_exc()
            results.append((name, mode, "FAIL", "-", f"{type(error).__name__}: {str(error)[:300]}"))

    t = time.time()
    try:
        tok = load_tokenizer(str(iter_dir))
        theirs = source_tokenizer(source, work)
        ids = list(tok.tokenize(ref["text"]))
        want = ref["tokens"][0].tolist()
        problems = []
        if ids != want[1:] and ids != want:
            problems.append(f"reference text: {ids} != NeMo 1.0 {want}")
        for text in TEXTS:
            a, b = list(tok.tokenize(text)), list(theirs(text))
            if a != b:
                problems.append(f"{text!r}: Bridge {a} != source {b}")
        detail = "; ".join(problems) or (f"{type(tok).__name__}: {len(TEXTS) + 1} texts equal to the source "
                                         f"tokenizer and NeMo 1.0's reference ids; {time.time() - t:.1f}s")
        results.append((name, "tokenizer", "FAIL" if problems else "ok", "-", detail))
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        results.append((name, "tokenizer", "FAIL", "-", f"{type(error).__name__}: {str(error)[:300]}"))


def main():
    shim_dir, out = sys.argv[1], Path(sys.argv[2])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29613")
    sys.path.insert(0, shim_dir)
    import bridge_cpu_shim  # noqa: F401
    import torch
    from megatron.core import parallel_state

    torch.distributed.init_process_group("gloo", world_size=1, rank=0)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=1)
    from megatron.core.tensor_parallel import random as mrandom

    mrandom.model_parallel_cuda_manual_seed = lambda *a, **k: None
    from megatron.core.num_microbatches_calculator import init_num_microbatches_calculator

    # what Bridge's training setup does before it loads a checkpoint to resume (1 GPU, batch 1)
    init_num_microbatches_calculator(rank=0, rampup_batch_size=None, global_batch_size=1, micro_batch_size=1,
                                     data_parallel_size=1)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for item in sys.argv[3:]:
            ckpt, ref, source = item.split("=")
            check_one(Path(ckpt), Path(ref), Path(source), Path(work), results)
    with open(out, "w") as f:
        for row in results:
            f.write("\t".join(str(x).replace("\t", " ") for x in row) + "\n")
    failed = [r for r in results if r[2] != "ok"]
    print(f"{len(results) - len(failed)}/{len(results)} checks ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
