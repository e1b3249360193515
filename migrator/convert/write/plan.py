"""The conversion plan: what goes where, in which dtype, by which route, and how much disk it needs.

Two routes:
- "copy" / "link": a torch_dist source whose tensors keep their dtype. The data files are copied (or hard-linked)
  unchanged and only the index (`.metadata`) is rewritten with NeMo 2.0 keys; no tensor is decoded.
- "stream": anything else (a zarr source, or a `--dtype` cast). Every chunk is read, cast if asked, and written
  as it comes into a torch_dist checkpoint of our own; memory stays at about one chunk.
`--dry-run` prints the plan (`render_plan`) and writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from migrator.convert.formats.chunks import CAST_TARGETS, KEY_PREFIX, StoredChunk, itemsize, key_renamer, output_dtype
from migrator.convert.model.extra_state import ObjectPlan, plan_objects
from migrator.convert.model.spec import ModelSpec, TokenizerSpec
from migrator.convert.read.source import Source
from migrator.errors import MigratorError

ARCHIVE_OVERHEAD = 1600  # bytes a torch.save archive adds around each chunk's data (headers, pickle, directory)
DTYPE_CHOICES = ("keep", *CAST_TARGETS)
DESTINATIONS = ("nemo2", "bridge")


@dataclass
class ConvertOptions:
    """Everything `nemo-migrate convert` accepts (NeMo's convert_nemo1_to_nemo2.py flags, then ours)."""

    input_path: Path
    output_path: Path
    model_id: str | None = None
    tokenizer_path: str | None = None
    tokenizer_library: str | None = None
    tokenizer_vocab_file: str | None = None
    tokenizer_model_name: str | None = None
    model_config: Path | None = None
    dtype: str = "keep"
    dry_run: bool = False
    force: bool = False
    link: bool = False
    strict: bool = False
    workers: int = 1
    reset_attention_extra_state: bool = False
    to: str = "nemo2"  # "nemo2": a NeMo 2.0 checkpoint directory; "bridge": a Megatron-Bridge checkpoint root
    iteration: int = 0  # --to bridge: the iter_<N> folder and the step recorded in train_state.pt
    target: str | None = None  # --to bridge: `--target megatron-bridge=X[..Y]` (None: every known release)


@dataclass
class TensorPlan:
    key: str  # source key (NeMo 1.0 `model.*`, NeMo 2.0 `module.*`)
    new_key: str  # output key (NeMo 2.0 `module.*`, Megatron-Bridge unprefixed)
    shape: tuple[int, ...]
    source_dtype: str
    dtype: str  # output dtype
    chunks: list[StoredChunk]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)


@dataclass
class Plan:
    mode: str  # "copy" | "link" | "stream"
    tensors: list[TensorPlan]
    objects: list[ObjectPlan]
    data_files: dict[str, int] = field(default_factory=dict)  # copy/link: source member -> bytes
    spec: ModelSpec | None = None
    tokenizer: TokenizerSpec | None = None
    warnings: list[str] = field(default_factory=list)
    key_map: tuple[str, str] = ("model.", "module.")  # (source prefix, output prefix)
    bridge: Any = None  # --to bridge: the BridgeSpec (model/bridge_spec.py)

    @property
    def source_bytes(self) -> int:
        """Bytes of source data the conversion reads (the progress total)."""
        if self.mode == "merge":  # the bytes of the tensors read (replicated ones once, vocabulary padding not)
            return sum(t.numel * itemsize(t.source_dtype) for t in self.tensors)
        if self.mode != "stream":
            return sum(self.data_files.values())
        return (sum(c.byte_length for t in self.tensors for c in t.chunks)
                + sum(o.stored.byte_length for o in self.objects if o.stored is not None))

    @property
    def disk_bytes(self) -> int:
        """Bytes the output needs on disk (a little over; hard links count as nothing)."""
        small = 1 << 20  # .metadata, common.pt, metadata.json, context/ (without tokenizer files)
        small += sum(len(v) if isinstance(v, bytes) else _path_size(v)
                     for v in (self.tokenizer.files.values() if self.tokenizer else []))
        # reset or added objects are written anew on every route (a [None] archive each)
        new_objects = ARCHIVE_OVERHEAD * sum(1 for o in self.objects if o.action != "carry")
        if self.mode == "copy":
            return sum(self.data_files.values()) + small + new_objects
        if self.mode == "link":
            return small + new_objects
        if self.mode == "merge":  # one chunk per layer of a stacked tensor; objects are small archives
            return small + sum(t.nbytes + ARCHIVE_OVERHEAD * (t.shape[0] if ".layers." in t.key else 1)
                               for t in self.tensors)
        carried = sum(o.stored.byte_length + ARCHIVE_OVERHEAD for o in self.objects
                      if o.stored is not None and o.action == "carry")
        return small + new_objects + carried + sum(t.nbytes + ARCHIVE_OVERHEAD * len(t.chunks) for t in self.tensors)


def _path_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def build_plan(source: Source, options: ConvertOptions, warn: Callable[[str], None]) -> Plan:
    """Decide the route and list every tensor and object with its NeMo 2.0 key and output dtype."""
    if options.dtype not in DTYPE_CHOICES:
        raise MigratorError(f"--dtype {options.dtype}: unsupported (choose from {', '.join(DTYPE_CHOICES)})")
    if options.to not in DESTINATIONS:
        raise MigratorError(f"--to {options.to}: unsupported (choose from {', '.join(DESTINATIONS)})")
    key_map = (source.key_prefix, KEY_PREFIX[options.to])
    rename = key_renamer(*key_map)
    tensors = []
    for key in sorted(source.tensors):
        info = source.tensors[key]
        new_key = rename(key)
        if not key.startswith(source.key_prefix):
            warn(f"{key}: not under '{source.key_prefix}' (a {source.key_origin} module key); carried unchanged")
        tensors.append(TensorPlan(key, new_key, info.shape, info.dtype, output_dtype(info.dtype, options.dtype),
                                  source.chunks.get(key, [])))
    casts = any(t.dtype != t.source_dtype for t in tensors)
    if source.nonsharded is not None:
        if options.link:
            warn("--link: nothing to link (a non-distributed checkpoint is merged into a new torch_dist one)")
        if options.reset_attention_extra_state:
            warn("--reset-attention-extra-state: a non-distributed checkpoint's attention state is written as "
                 "an empty placeholder anyway when it has none")
        objects = [ObjectPlan(p.key, rename(p.key), None, "carry" if p.ref is not None else "add")
                   for p in source.nonsharded.object_placements()]
        return Plan("merge", tensors, objects, {m: source.members[m] for m in source.nonsharded.members},
                    key_map=key_map)
    objects = plan_objects(source.objects, source.model_config, options.reset_attention_extra_state, warn, rename,
                           te_model=True if options.to == "bridge" else None)

    if source.backend == "torch_dist" and not casts and source.dropped_bytes:
        if options.link:
            warn(f"--link: {source.path} holds state that is not converted ({source.dropped_what}); copying only "
                 "the model's chunks")
        return Plan("stream", tensors, objects, key_map=key_map)
    if source.backend == "torch_dist" and not casts:
        mode = "copy"
        if options.link:
            if source.linkable:
                mode = "link"
            else:
                warn(f"--link: {source.path} is a {source.kind}; its members cannot be linked, copying them")
        assert source.dcp_index is not None
        data_files = {name: source.members[name] for name in source.data_members}
        return Plan(mode, tensors, objects, data_files, key_map=key_map)
    if options.link:
        why = "tensors are cast" if casts else f"the source is {source.backend}"
        warn(f"--link: nothing to link ({why}; every chunk is rewritten)")
    return Plan("stream", tensors, objects, key_map=key_map)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""  # pragma: no cover


def _merge_route(source: Source, options: ConvertOptions) -> str:
    index = source.nonsharded
    assert index is not None
    generation = "pre-megatron-core (mcore_gpt: false) keys mapped to megatron-core, " if index.legacy else ""
    return (f"merge {len(index.members)} non-distributed rank file(s) (TP={index.tp}, PP={index.pp}) tensor by "
            f"tensor into a new torch_dist checkpoint ({generation}one layer's tensor at a time, streamed)"
            + (f", cast to {options.dtype}" if options.dtype != "keep" else ""))


def render_plan(plan: Plan, source: Source, options: ConvertOptions, free_bytes: int | None) -> str:
    """The `--dry-run` report."""
    lines = [f"nemo-migrate convert (dry run): {options.input_path} -> {options.output_path}"]
    lines.append(f"source: {source.kind}, {source.backend} checkpoint, {len(plan.tensors)} tensors "
                 f"({_human(sum(t.numel * itemsize(t.source_dtype) for t in plan.tensors))}), "
                 f"{len(plan.objects)} sharded objects; model config from {source.model_config_origin}")
    route = {"copy": "copy the data files unchanged and rewrite the index (no tensor decoding)",
             "link": "hard-link the data files and rewrite the index (no tensor decoding)",
             "stream": "stream every chunk into a new torch_dist checkpoint"
                       + (f" (cast to {options.dtype})" if options.dtype != "keep" else "")}.get(plan.mode)
    if plan.mode == "merge":
        route = _merge_route(source, options)
    lines.append(f"route: {route}")
    if plan.spec is not None:
        spec = plan.spec
        lines.append(f"model: {spec.model_class} with {spec.config_class}"
                     + (f" (from {spec.model_id})" if spec.model_id else ""))
        lines.append("config: " + ", ".join(f"{k}={v!r}" for k, v in spec.config_kwargs.items()))
    if plan.bridge is not None:
        bridge = plan.bridge
        releases = bridge.releases[0] if len(bridge.releases) == 1 else f"{bridge.releases[0]}..{bridge.releases[-1]}"
        lines.append(f"model: {bridge.provider} for Megatron-Bridge {releases} (architecture from {bridge.origin}); "
                     f"output: {options.output_path}/iter_{options.iteration:07d}/")
        lines.append("config: " + ", ".join(f"{k}={v!r}" for k, v in bridge.model.items() if k != "_target_"))
    if plan.tokenizer is not None:
        files = ", ".join(sorted(plan.tokenizer.files)) or "none"
        lines.append(f"tokenizer: {plan.tokenizer.class_path} (files: {files})")
    if plan.bridge is None:
        lines.append("tensors (NeMo 1.0 key -> NeMo 2.0 key, shape, dtype, bytes, chunks):")
    else:
        lines.append("tensors (Megatron-Bridge key, shape, dtype, bytes, chunks):")
    width = max((len(t.new_key) for t in plan.tensors), default=0)
    for t in plan.tensors:
        dtype = t.dtype if t.dtype == t.source_dtype else f"{t.source_dtype} -> {t.dtype}"
        lines.append(f"  {t.new_key:<{width}}  {list(t.shape)}  {dtype}  {_human(t.nbytes)}  {len(t.chunks)}")
    actions: dict[str, int] = {}
    for o in plan.objects:
        actions[o.action] = actions.get(o.action, 0) + 1
    lines.append("sharded objects: " + (", ".join(f"{n} {a}" for a, n in sorted(actions.items())) or "none"))
    free = f" (free: {_human(free_bytes)})" if free_bytes is not None else ""
    lines.append(f"output: {_human(plan.disk_bytes)} on disk{free}")
    for message in plan.warnings:
        lines.append(f"warning: {message}")
    lines.append("nothing written (--dry-run)")
    return "\n".join(lines)
