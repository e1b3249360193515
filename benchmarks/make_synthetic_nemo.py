#!/usr/bin/env python
"""Make a synthetic NeMo 1.0 checkpoint of 1 to 8 GB for the converter benchmarks: Llama-2-7B layer shapes with
fewer layers, bf16, in NeMo 1.0's layout, as torch_dist and/or zarr.

    python benchmarks/make_synthetic_nemo.py OUT_DIR --size-gb 2 [--format torch_dist|zarr|both] [--keep-folder]
    python benchmarks/make_synthetic_nemo.py OUT_DIR --size-gb 2 --format nondist --tp 4 --pp 2

Writes OUT_DIR/synthetic_<size>gb_<format>.nemo (nondist: synthetic_<size>gb_nondist_tp<T>pp<P>.nemo) (an uncompressed tar like NeMo's save_to) and, with
--keep-folder, the extracted folder OUT_DIR/synthetic_<size>gb_<format>/ (for `convert --link`).

- torch_dist: written with plain torch.distributed.checkpoint (no megatron-core): stacked `[L, ...]` keys, one
  chunk per layer, `_extra_state/shard_<l>_<L>` objects stored as megatron-core stores them (`torch.save([obj])`).
- zarr: our own small zarr v2 writer (raw C-order chunks, dtype "bfloat16", compressor null, one chunk per layer),
  objects as bare `<key>/shard_<l>_<L>.pt`.
Tensor bytes are random-looking but cheap to make (a random block, shifted per chunk); only one chunk is in memory
at a time. The SentencePiece tokenizer is the tiny Llama fixture's (../shared/fixtures), the config is written here.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import torch

HIDDEN, FFN, HEADS, GROUPS, VOCAB = 4096, 11008, 32, 32, 32000  # Llama-2-7B
KV = HIDDEN // HEADS
TOKENIZER_PIECES = 100  # the tiny Llama fixture's SentencePiece model
BYTES = 2  # bf16
REPO = Path(__file__).resolve().parents[1]
TOKENIZER_FIXTURE = REPO.parent / "shared" / "fixtures" / "nemo1" / "tiny_llama_torch_dist.nemo"
_BLOCK = os.urandom(16 << 20)


def layer_shapes() -> dict[str, tuple[int, ...]]:
    p = "model.decoder.layers."
    return {
        f"{p}self_attention.linear_qkv.layer_norm_weight": (HIDDEN,),
        f"{p}self_attention.linear_qkv.weight": ((HEADS + 2 * GROUPS) * KV, HIDDEN),
        f"{p}self_attention.linear_proj.weight": (HIDDEN, HIDDEN),
        f"{p}mlp.linear_fc1.layer_norm_weight": (HIDDEN,),
        f"{p}mlp.linear_fc1.weight": (2 * FFN, HIDDEN),
        f"{p}mlp.linear_fc2.weight": (HIDDEN, FFN),
    }


def other_shapes() -> dict[str, tuple[int, ...]]:
    return {"model.embedding.word_embeddings.weight": (VOCAB, HIDDEN), "model.decoder.final_layernorm.weight": (HIDDEN,),
            "model.output_layer.weight": (VOCAB, HIDDEN)}


def layers_for(size_gb: float) -> int:
    per_layer = sum(_numel(s) for s in layer_shapes().values()) * BYTES
    rest = sum(_numel(s) for s in other_shapes().values()) * BYTES
    return max(1, round((size_gb * 1e9 - rest) / per_layer))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def chunk_data(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A bf16 tensor of `shape` whose bytes are the random block, rotated by `seed` (fast; no RNG per element)."""
    nbytes = _numel(shape) * BYTES
    out = bytearray(nbytes)
    shift = (seed * 7919) % len(_BLOCK)
    pattern = _BLOCK[shift:] + _BLOCK[:shift]
    for start in range(0, nbytes, len(pattern)):
        piece = pattern[:nbytes - start]
        out[start:start + len(piece)] = piece
    return torch.frombuffer(out, dtype=torch.bfloat16).view(shape)


def model_config(layers: int, tokenizer: str, backend: str) -> str:
    return "\n".join([
        "mcore_gpt: true", "micro_batch_size: 1", "global_batch_size: 1", "tensor_model_parallel_size: 1",
        "pipeline_model_parallel_size: 1", "encoder_seq_length: 4096", "max_position_embeddings: 4096",
        f"num_layers: {layers}", f"hidden_size: {HIDDEN}", f"ffn_hidden_size: {FFN}",
        f"num_attention_heads: {HEADS}", f"num_query_groups: {GROUPS}", "init_method_std: 0.02",
        "hidden_dropout: 0.0", "attention_dropout: 0.0", "kv_channels: null", "normalization: rmsnorm",
        "layernorm_epsilon: 1.0e-05", "make_vocab_size_divisible_by: 128", "persist_layer_norm: false",
        "bias: false", "activation: fast-swiglu", "position_embedding_type: rope", "rotary_percentage: 1.0",
        "rotary_base: 10000", "share_embeddings_and_output_weights: false", "apply_rope_fusion: false",
        "bias_activation_fusion: false", "bias_dropout_add_fusion: false", "masked_softmax_fusion: false",
        "precision: bf16", "megatron_amp_O2: false", "transformer_engine: false", f"dist_ckpt_format: {backend}",
        "tokenizer:", "  library: sentencepiece", "  type: null", f"  model: nemo:{tokenizer}",
        "  vocab_file: null", "  merge_file: null", "  sentencepiece_legacy: false", ""])


def tensor_chunks(layers: int):
    """(key, global shape, chunk offsets, chunk shape) in NeMo 1.0's layout: one chunk per layer."""
    for key, shape in other_shapes().items():
        yield key, shape, (0,) * len(shape), shape
    for key, shape in layer_shapes().items():
        for layer in range(layers):
            yield key, (layers,) + shape, (layer,) + (0,) * len(shape), (1,) + shape


def extra_state_keys(layers: int) -> list[str]:
    modules = ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")
    return [f"model.decoder.layers.{m}._extra_state/shard_{l}_{layers}" for m in modules for l in range(layers)]


def write_torch_dist(weights: Path, layers: int) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
    from torch.distributed.checkpoint.planner import SavePlan, TensorWriteData, WriteItem, WriteItemType

    chunks = list(tensor_chunks(layers))
    objects = extra_state_keys(layers)

    class LazyLayerPlanner(DefaultSavePlanner):
        """Plans one write item per chunk and makes each chunk's data only when DCP asks for it."""

        def __init__(self) -> None:
            super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)

        def create_local_plan(self) -> SavePlan:
            properties = TensorProperties(dtype=torch.bfloat16)
            items = [WriteItem(index=MetadataIndex(key, torch.Size(offsets)), type=WriteItemType.SHARD,
                               tensor_data=TensorWriteData(chunk=ChunkStorageMetadata(torch.Size(offsets),
                                                                                      torch.Size(sizes)),
                                                           properties=properties, size=torch.Size(shape)))
                     for key, shape, offsets, sizes in chunks]
            items += [WriteItem(index=MetadataIndex(key), type=WriteItemType.BYTE_IO) for key in objects]
            self.plan = SavePlan(items)
            return self.plan

        def resolve_data(self, write_item: WriteItem):
            if write_item.type == WriteItemType.BYTE_IO:
                data = io.BytesIO()
                torch.save([None], data)
                data.seek(0)
                return data
            sizes = tuple(write_item.tensor_data.chunk.sizes)
            return chunk_data(hash((write_item.index.fqn, tuple(write_item.index.offset))) & 0xFFFF, sizes)

    # the state dict only names the keys (meta tensors hold no memory); the planner supplies the data
    state = {key: torch.empty(shape, dtype=torch.bfloat16, device="meta") for key, shape, _, _ in chunks}
    state.update({key: None for key in objects})
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(weights), thread_count=2), planner=LazyLayerPlanner(),
             no_dist=True)
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist", "sharded_backend_version": 1,
                                                       "common_backend": "torch", "common_backend_version": 1}))
    torch.save({}, weights / "common.pt")


def write_zarr(weights: Path, layers: int) -> None:
    weights.mkdir(parents=True, exist_ok=True)
    for key, shape, offsets, sizes in tensor_chunks(layers):
        folder = weights / key
        if not folder.exists():
            folder.mkdir()
            (folder / ".zarray").write_text(json.dumps({
                "chunks": list(sizes), "compressor": None, "dtype": "bfloat16", "fill_value": None, "filters": None,
                "order": "C", "shape": list(shape), "zarr_format": 2}, indent=4))
        name = ".".join(str(o // s) for o, s in zip(offsets, sizes))
        data = chunk_data(hash((key, offsets)) & 0xFFFF, sizes)
        with open(folder / name, "wb") as f:
            f.write(memoryview(data.view(torch.uint8).numpy()))
    for key in extra_state_keys(layers):
        base, shard = key.split("/")
        (weights / base).mkdir(exist_ok=True)
        torch.save(None, weights / base / f"{shard}.pt")
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "zarr", "sharded_backend_version": 1,
                                                       "common_backend": "torch", "common_backend_version": 1}))
    torch.save({}, weights / "common.pt")


def write_nondist(folder: Path, layers: int, tp: int, pp: int) -> list[str]:
    """NeMo <= 1.20's non-distributed layout (`torch.save(model.state_dict())` per rank): `mp_rank_XX/` or
    `tp_rank_XX_pp_rank_YYY/model_weights.ckpt`, each rank's part split as NeMo splits (column-parallel qkv and
    fc1 with [gate_r; up_r] per rank, row-parallel proj and fc2, vocabulary padded for TP, replicated norms),
    per-layer keys numbered inside each pipeline stage, local-spec norm names, `_extra_state: None`. Each rank's
    tensors are made directly in their rank shapes (random-looking bytes); one rank's state is in memory at a time."""
    from collections import OrderedDict

    # the vocabulary the tokenizer (the tiny fixture's, 100 pieces) pads to at this TP size: a larger embedding
    # would be mostly rows the merge drops (they pad beyond NeMo's TP=1 padding), which would flatter the ratio
    padded = -(-TOKENIZER_PIECES // (128 * tp)) * (128 * tp)
    per_stage = layers // pp
    local_names = {"self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
                   "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight"}
    members = []
    for p in range(pp):
        for t in range(tp):
            state: OrderedDict = OrderedDict()
            if p == 0:
                state["model.embedding.word_embeddings.weight"] = chunk_data(t, (padded // tp, HIDDEN))
            for local in range(per_stage):
                for key, shape in layer_shapes().items():
                    module = key[len("model.decoder.layers."):]
                    if module.endswith(("linear_qkv.weight", "linear_fc1.weight")):
                        shape = (shape[0] // tp, *shape[1:])
                    elif module.endswith(("linear_proj.weight", "linear_fc2.weight")):
                        shape = (shape[0], shape[1] // tp)
                    name = f"model.decoder.layers.{local}.{local_names.get(module, module)}"
                    state[name] = chunk_data(hash((name, p, t)) & 0xFFFF, shape)
                    if name.endswith("linear_qkv.weight") or name.endswith("linear_proj.weight") or \
                            name.endswith("linear_fc1.weight") or name.endswith("linear_fc2.weight"):
                        state[name[:-len("weight")] + "_extra_state"] = None
            if p == pp - 1:
                state["model.decoder.final_layernorm.weight"] = chunk_data(7, (HIDDEN,))
                state["model.output_layer.weight"] = chunk_data(100 + t, (padded // tp, HIDDEN))
            member = f"tp_rank_{t:02d}_pp_rank_{p:03d}" if pp > 1 else f"mp_rank_{t:02d}"
            (folder / member).mkdir(parents=True, exist_ok=True)
            torch.save(state, folder / member / "model_weights.ckpt")
            members.append(member)
            del state
    return members


def tokenizer_member() -> tuple[str, bytes]:
    if not TOKENIZER_FIXTURE.exists():
        sys.exit(f"make_synthetic_nemo: {TOKENIZER_FIXTURE} is needed for its SentencePiece tokenizer")
    with tarfile.open(TOKENIZER_FIXTURE) as archive:
        for info in archive.getmembers():
            if info.name.endswith("_tokenizer.model"):
                return info.name.removeprefix("./"), archive.extractfile(info).read()  # type: ignore[union-attr]
    sys.exit("make_synthetic_nemo: no tokenizer in the fixture")


def make(out_dir: Path, size_gb: float, backend: str, keep_folder: bool, tp: int = 1, pp: int = 1) -> Path:
    layers = layers_for(size_gb)
    name = f"synthetic_{size_gb:g}gb_{backend}"
    folder = out_dir / name
    if folder.exists():
        shutil.rmtree(folder)
    if backend == "nondist":  # a tiny vocabulary (see write_nondist): the size is in the layers
        per_layer = sum(_numel(s) for s in layer_shapes().values()) * BYTES
        layers = max(pp, -(-round(size_gb * 1e9 / per_layer) // pp) * pp)
        name = f"synthetic_{size_gb:g}gb_nondist_tp{tp}pp{pp}"
        folder = out_dir / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_nondist(folder, layers, tp, pp)
    else:
        weights = folder / "model_weights"
        (write_torch_dist if backend == "torch_dist" else write_zarr)(weights, layers)
    token_name, token_bytes = tokenizer_member()
    (folder / token_name).write_bytes(token_bytes)
    config = model_config(layers, token_name, "torch_dist" if backend == "nondist" else backend)
    if backend == "nondist":
        config = config.replace("tensor_model_parallel_size: 1", f"tensor_model_parallel_size: {tp}").replace(
            "pipeline_model_parallel_size: 1", f"pipeline_model_parallel_size: {pp}")
    (folder / "model_config.yaml").write_text(config)
    nemo = out_dir / f"{name}.nemo"
    with tarfile.open(nemo, "w:") as archive:
        archive.add(folder, arcname=".")
    if not keep_folder:
        shutil.rmtree(folder)
    print(f"{nemo}: {nemo.stat().st_size / 1e9:.2f} GB, {layers} layers, {backend}")
    return nemo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--format", choices=["torch_dist", "zarr", "both", "nondist"], default="both",
                        help="nondist: NeMo <= 1.20's non-distributed rank files (see --tp, --pp)")
    parser.add_argument("--tp", type=int, default=4, help="nondist: tensor-parallel ranks")
    parser.add_argument("--pp", type=int, default=2, help="nondist: pipeline stages")
    parser.add_argument("--keep-folder", action="store_true", help="keep the extracted folder next to the .nemo")
    args = parser.parse_args()
    if not 0.5 <= args.size_gb <= 16:
        parser.error("--size-gb: between 0.5 and 16")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for backend in (["torch_dist", "zarr"] if args.format == "both" else [args.format]):
        make(args.out_dir, args.size_gb, backend, args.keep_folder, args.tp, args.pp)


if __name__ == "__main__":
    main()
