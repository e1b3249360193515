"""Small NeMo 1.0-style checkpoints made in tests, for shapes and cases the NeMo-made fixtures lack.

- torch_dist: written with plain `torch.distributed.checkpoint` (no megatron-core), in NeMo 1.0's layout: stacked
  `[num_layers, ...]` keys with one chunk per layer, and sharded objects stored the way megatron-core's torch
  strategy stores them (`torch.save([obj])` bytes).
- zarr: written by the small writer below (zarr v2: `.zarray` JSON, raw C-order chunks, edge chunks padded,
  dtype "bfloat16" for bf16, optional zlib compression), sharded objects as bare `<key>/shard_*.pt`.
- `.nemo`: a tar (plain or gzip) with `./model_config.yaml`, tokenizer files and `./model_weights/...`.
Helper B's tests may import these too.
"""
from __future__ import annotations

import io
import json
import math
import tarfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

ChunkFn = Callable[[str, torch.Tensor], list[tuple[tuple[int, ...], tuple[int, ...]]]]


def per_layer_chunks(key: str, tensor: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """NeMo 1.0's chunking: one chunk per layer for stacked `decoder.layers.*` tensors, else one chunk."""
    shape = tuple(tensor.shape)
    if ".layers." in key and tensor.dim() >= 2:
        return [((layer,) + (0,) * (len(shape) - 1), (1,) + shape[1:]) for layer in range(shape[0])]
    return [((0,) * len(shape), shape)]


def write_torch_dist(directory: Path, tensors: Mapping[str, torch.Tensor], objects: Mapping[str, Any] = {},
                     chunking: ChunkFn = per_layer_chunks) -> Path:
    """A torch_dist checkpoint via plain DCP (`dcp.save(..., no_dist=True)`), NeMo 1.0's layout."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
    from torch.distributed.checkpoint.planner import SavePlan, TensorWriteData, WriteItem, WriteItemType

    class LayerChunkPlanner(DefaultSavePlanner):
        def __init__(self) -> None:
            super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)

        def create_local_plan(self) -> SavePlan:
            items = []
            for fqn, obj in self.state_dict.items():
                if fqn not in objects:
                    for offsets, sizes in chunking(fqn, obj):
                        chunk = ChunkStorageMetadata(torch.Size(offsets), torch.Size(sizes))
                        items.append(WriteItem(
                            index=MetadataIndex(fqn, torch.Size(offsets)), type=WriteItemType.SHARD,
                            tensor_data=TensorWriteData(chunk=chunk, properties=TensorProperties.create_from_tensor(obj),
                                                        size=obj.size())))
                else:
                    items.append(WriteItem(index=MetadataIndex(fqn), type=WriteItemType.BYTE_IO))
            self.plan = SavePlan(items)
            return self.plan

        def resolve_data(self, write_item: WriteItem) -> Any:
            obj = self.state_dict[write_item.index.fqn]
            if write_item.type == WriteItemType.BYTE_IO:  # a sharded object (may itself be a tensor)
                data = io.BytesIO()
                torch.save([obj], data)  # megatron-core's torch strategy wraps each sharded object in a list
                data.seek(0)
                return data
            chunk = write_item.tensor_data.chunk
            return obj[tuple(slice(o, o + s) for o, s in zip(chunk.offsets, chunk.sizes))].clone()

    directory.mkdir(parents=True, exist_ok=True)
    state = {**tensors, **objects}
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(directory), thread_count=2), planner=LayerChunkPlanner(),
             no_dist=True)
    (directory / "metadata.json").write_text(json.dumps(
        {"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch",
         "common_backend_version": 1}))
    torch.save({}, directory / "common.pt")
    return directory


_ZARR_DTYPE = {torch.bfloat16: "bfloat16", torch.float16: "<f2", torch.float32: "<f4", torch.int64: "<i8"}


def write_zarr(directory: Path, tensors: Mapping[str, torch.Tensor], objects: Mapping[str, Any] = {},
               chunk_shapes: Mapping[str, tuple[int, ...]] | None = None, compressor: str | None = None) -> Path:
    """A zarr checkpoint as megatron-core's zarr strategy wrote it (our own writer; no zarr package)."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, tensor in tensors.items():
        shape = tuple(tensor.shape)
        chunks = (chunk_shapes or {}).get(key) or ((1,) + shape[1:] if ".layers." in key and len(shape) > 1 else shape)
        folder = directory / key
        folder.mkdir()
        (folder / ".zarray").write_text(json.dumps({
            "chunks": list(chunks), "compressor": None if compressor is None else {"id": compressor, "level": 1},
            "dtype": _ZARR_DTYPE[tensor.dtype], "fill_value": None, "filters": None, "order": "C",
            "shape": list(shape), "zarr_format": 2}, indent=4))
        grid = [range(math.ceil(n / c)) for n, c in zip(shape, chunks)]
        for index in _product(grid):
            padded = torch.zeros(chunks, dtype=tensor.dtype)
            region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, shape))
            valid = tuple(slice(0, r.stop - r.start) for r in region)
            padded[valid] = tensor[region]
            data = padded.contiguous().view(torch.uint8).numpy().tobytes()
            if compressor == "zlib":
                data = zlib.compress(data)
            (folder / (".".join(map(str, index)) or "0")).write_bytes(data)
    for key, obj in objects.items():
        base, shard = key.split("/", 1)
        (directory / base).mkdir(exist_ok=True)
        torch.save(obj, directory / base / f"{shard}.pt")
    (directory / "metadata.json").write_text(json.dumps(
        {"sharded_backend": "zarr", "sharded_backend_version": 1, "common_backend": "torch",
         "common_backend_version": 1}))
    torch.save({}, directory / "common.pt")
    return directory


def _product(ranges: list[range]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for r in ranges:
        out = [prefix + (i,) for prefix in out for i in r]
    return out


def pack_nemo(path: Path, model_config: str | bytes, weights: Path | None, members: Mapping[str, bytes] = {},
              compress: bool = False) -> Path:
    """A `.nemo` tar like NeMo's save_to: `./`, artifacts, `./model_config.yaml`, `./model_weights/...`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if compress else "w:") as archive:
        root = tarfile.TarInfo("./")
        root.type = tarfile.DIRTYPE
        archive.addfile(root)
        for name, content in {**members, "model_config.yaml": model_config}.items():
            _add_bytes(archive, f"./{name}", content.encode() if isinstance(content, str) else content)
        if weights is not None:
            archive.add(weights, arcname="./model_weights")
    return path


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def tiny_llama_tensors(layers: int = 2, hidden: int = 64, ffn: int = 176, heads: int = 4, groups: int = 2,
                       vocab: int = 128, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of a tiny NeMo 1.0 Llama (the fixture's shapes by default), random values."""
    g = torch.Generator().manual_seed(seed)
    kv = hidden // heads

    def rand(*shape: int, norm: bool = False) -> torch.Tensor:
        t = torch.randn(*shape, generator=g) * 0.02
        return (t + 1.0 if norm else t).to(dtype)

    p = "model.decoder.layers."
    return {
        "model.embedding.word_embeddings.weight": rand(vocab, hidden),
        f"{p}self_attention.linear_qkv.layer_norm_weight": rand(layers, hidden, norm=True),
        f"{p}self_attention.linear_qkv.weight": rand(layers, (heads + 2 * groups) * kv, hidden),
        f"{p}self_attention.linear_proj.weight": rand(layers, hidden, hidden),
        f"{p}mlp.linear_fc1.layer_norm_weight": rand(layers, hidden, norm=True),
        f"{p}mlp.linear_fc1.weight": rand(layers, 2 * ffn, hidden),
        f"{p}mlp.linear_fc2.weight": rand(layers, hidden, ffn),
        "model.decoder.final_layernorm.weight": rand(hidden, norm=True),
        "model.output_layer.weight": rand(vocab, hidden),
    }


def extra_states(layers: int = 2, modules: tuple[str, ...] = ("self_attention.linear_qkv", "self_attention.linear_proj",
                 "mlp.linear_fc1", "mlp.linear_fc2"), value: Callable[[str, int], Any] = lambda m, l: None
                 ) -> dict[str, Any]:
    """`_extra_state/shard_<l>_<L>` objects for the given modules (values from `value(module, layer)`)."""
    return {f"model.decoder.layers.{m}._extra_state/shard_{l}_{layers}": value(m, l)
            for m in modules for l in range(layers)}


def te_state(module: str, layer: int) -> torch.Tensor:
    """What Transformer Engine's get_extra_state returns with fp8 metadata: a uint8 tensor (a pickle's bytes)."""
    return torch.tensor(list(f"fp8-meta {module} {layer}".encode()), dtype=torch.uint8)


def read_dcp(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every tensor and sharded object of a torch_dist checkpoint, read with plain torch DCP (no megatron-core)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(directory))
    metadata = reader.read_metadata()
    state: dict[str, Any] = {}
    for key, entry in metadata.state_dict_metadata.items():
        if isinstance(entry, TensorStorageMetadata):
            state[key] = torch.empty(entry.size, dtype=entry.properties.dtype)
        else:
            state[key] = io.BytesIO()
    dcp.load(state, storage_reader=dcp.FileSystemReader(str(directory)), no_dist=True)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    objects = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    return tensors, objects


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """Compare bit patterns, not values (NaN == NaN)."""
    return tensor.contiguous().view(torch.uint8)


# ------------------------------------------------------------------------------ non-distributed (legacy) layouts
_LOCAL_NORMS = {"self_attention.linear_qkv.layer_norm_": "input_layernorm.",
                "mlp.linear_fc1.layer_norm_": "pre_mlp_layernorm."}
_LEGACY_MODULES = {"self_attention.linear_qkv.": "self_attention.query_key_value.",
                   "self_attention.linear_proj.": "self_attention.dense.",
                   "mlp.linear_fc2.": "mlp.dense_4h_to_h.",
                   "self_attention.linear_qkv.layer_norm_": "input_layernorm.",
                   "mlp.linear_fc1.layer_norm_": "post_attention_layernorm."}


def _rank_piece(key: str, value: torch.Tensor, tp: int, rank: int, gated: bool) -> torch.Tensor | tuple:
    """Rank `rank`'s part of a TP=1 tensor, split as NeMo's megatron_change_num_partitions.py splits it."""
    if key.endswith(("word_embeddings.weight", "output_layer.weight", "linear_qkv.weight", "linear_qkv.bias")):
        return torch.chunk(value, tp, dim=0)[rank].clone()
    if key.endswith(("linear_fc1.weight", "linear_fc1.bias")):
        if not gated:
            return torch.chunk(value, tp, dim=0)[rank].clone()
        gate, up = torch.chunk(value, 2, dim=0)
        return torch.chunk(gate, tp, dim=0)[rank].clone(), torch.chunk(up, tp, dim=0)[rank].clone()
    if key.endswith(("linear_proj.weight", "linear_fc2.weight")):
        return torch.chunk(value, tp, dim=-1)[rank].clone()
    return value.clone()


def split_nondist(tensors: Mapping[str, torch.Tensor], tp: int, pp: int, *, gated: bool = True,
                  padded_rows: int | None = None, legacy: bool = False, megatron_legacy_heads: int | None = None,
                  non_fused_glu: bool = False, o2: bool = False, extra_state: bool = True, tied: bool = False
                  ) -> dict[str, dict[str, Any]]:
    """The rank files (member name -> state dict) NeMo 1.0 saves for a TP x PP model whose TP=1 tensors (stacked
    dist-checkpoint keys) are `tensors`: per-layer keys numbered inside each pipeline stage, local-spec norm names
    (megatron-core) or `language_model` names (`legacy`), vocabulary padded to `padded_rows` (padding rows hold
    a sentinel, 7.0), `_extra_state: None` per linear layer."""
    layers = next(v.shape[0] for k, v in tensors.items() if ".layers." in k)
    per_stage = layers // pp
    prefix = "model.module." if o2 else "model."
    files: dict[str, dict[str, Any]] = {}
    for p in range(pp):
        for t in range(tp):
            state: dict[str, Any] = {}
            for key, value in tensors.items():
                rest = key[len("model."):]
                if ".layers." in key:
                    for local in range(per_stage):
                        piece = _rank_piece(key, value[p * per_stage + local], tp, t, gated)
                        module = rest[len("decoder.layers."):]
                        if legacy:
                            name = _legacy_layer_name(module, local)
                        else:
                            for new, old in _LOCAL_NORMS.items():
                                if module.startswith(new):
                                    module = old + module[len(new):]
                            name = f"decoder.layers.{local}.{module}"
                        if key.endswith("linear_qkv.weight") or key.endswith("linear_qkv.bias"):
                            if megatron_legacy_heads is not None:  # [heads_r, 3, hd] -> [3, heads_r, hd]
                                heads = megatron_legacy_heads // tp
                                shape = piece.shape
                                piece = piece.reshape(heads, 3, -1, *shape[1:]).transpose(0, 1).reshape(shape)
                        if isinstance(piece, tuple):
                            if non_fused_glu:
                                state[prefix + name] = piece[0].contiguous()
                                state[prefix + name.replace("dense_h_to_4h", "dense_h_to_4h_2")] = piece[1]
                                continue
                            piece = torch.cat(piece)
                        state[prefix + name] = piece.contiguous()
                        if extra_state and name.endswith(".weight") and ("linear_" in name or "dense" in name) \
                                and "layer_norm" not in name and "layernorm" not in name:
                            state[prefix + name[:-len("weight")] + "_extra_state"] = None
                    continue
                first, last = p == 0, p == pp - 1
                if key == "model.embedding.word_embeddings.weight" and not (first or (last and tied and pp > 1)):
                    continue
                if key != "model.embedding.word_embeddings.weight" and not last:
                    continue
                if padded_rows is not None and key.endswith(("word_embeddings.weight", "output_layer.weight")):
                    pad = torch.full((padded_rows - value.shape[0], *value.shape[1:]), 7.0, dtype=value.dtype)
                    value = torch.cat([value, pad])
                piece = _rank_piece(key, value, tp, t, gated)
                if key == "model.embedding.word_embeddings.weight" and not first:  # the last stage's tied copy
                    name = "word_embeddings.weight" if legacy else "output_layer.weight"
                elif legacy:
                    name = {"embedding.word_embeddings.weight": "language_model.embedding.word_embeddings.weight",
                            "embedding.position_embeddings.weight":
                                "language_model.embedding.position_embeddings.weight",
                            "output_layer.weight": "language_model.output_layer.weight"}.get(
                        rest, rest.replace("decoder.final_layernorm", "language_model.encoder.final_layernorm"))
                else:
                    name = rest
                state[prefix + name] = piece
            member = (f"mp_rank_{t:02d}/model_weights.ckpt" if pp == 1 else
                      f"tp_rank_{t:02d}_pp_rank_{p:03d}/model_weights.ckpt") if tp * pp > 1 else "model_weights.ckpt"
            files[member] = state
    return files


def _legacy_layer_name(module: str, layer: int) -> str:
    if module.startswith("mlp.linear_fc1.") and "layer_norm" not in module:
        module = "mlp.dense_h_to_4h." + module[len("mlp.linear_fc1."):]
    else:
        for new, old in sorted(_LEGACY_MODULES.items(), key=lambda item: -len(item[0])):
            if module.startswith(new):
                module = old + module[len(new):]
                break
    return f"language_model.encoder.layers.{layer}.{module}"


def pack_nondist(path: Path, model_config: str, rank_files: Mapping[str, Mapping[str, Any]],
                 members: Mapping[str, bytes] = {}, compress: bool = False) -> Path:
    """A `.nemo` holding non-distributed rank files (`torch.save` of each state dict), as NeMo's save_to writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if compress else "w:") as archive:
        root = tarfile.TarInfo("./")
        root.type = tarfile.DIRTYPE
        archive.addfile(root)
        for name, content in {**members, "model_config.yaml": model_config.encode()}.items():
            _add_bytes(archive, f"./{name}", content)
        for member, state in rank_files.items():
            buffer = io.BytesIO()
            torch.save(OrderedDict(state), buffer)  # what model.state_dict() is
            _add_bytes(archive, f"./{member}", buffer.getvalue())
    return path
