"""`nemo-migrate verify OUT [--against IN]`: is a converted NeMo 2.0 or Megatron-Bridge checkpoint complete and faithful?

Checks, in order: the layout (NeMo 2.0: weights/ with metadata.json, .metadata, common.pt and data files; context/
with io.json and model.yaml. Megatron-Bridge: the trackers, iter_<N>/ with the same torch_dist files, common.pt,
run_config.yaml with a model provider, train_state.pt at step N, the tokenizer run_config.yaml names); the index (every chunk's byte range inside its data file, chunks covering each tensor);
every tensor chunk and sharded object read back with torch (`weights_only=True`) with the shape and dtype the
index gives. With `--against`, every source tensor is compared with the output: bit-equal when the dtype is
the same, and equal to the source cast to the output dtype otherwise; every sharded object is compared too.
Reading is chunk by chunk (memory about one chunk), except where the two sides chunk a tensor differently.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from migrator.convert.formats.chunks import KEY_PREFIX, StoredChunk, StoredObject, key_renamer
from migrator.convert.formats.json_data import json_object
from migrator.convert.model.extra_state import is_core_attention
from migrator.convert.read.source import MAX_INDEX_BYTES, Source, open_source
from migrator.convert.read.torch_dist import DcpIndex, parse_dcp_metadata, view_torch_chunk
from migrator.convert.storage.fileops import FileSlice, read_exactly, skip
from migrator.convert.write.dcp import BACKEND_MARKER
from migrator.errors import MigratorError


@dataclass
class VerifyReport:
    output: Path
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def lines(self) -> list[str]:
        out = [f"verify: {self.output}"]
        out += [f"  ok: {c}" for c in self.checks]
        out += [f"  note: {n}" for n in self.notes]
        shown = self.problems[:20]
        out += [f"  FAIL: {p}" for p in shown]
        if len(self.problems) > len(shown):
            out.append(f"  FAIL: ... and {len(self.problems) - len(shown)} more")
        out.append("OK" if self.ok else f"FAILED ({len(self.problems)} problems)")
        return out


def _torch():
    import torch

    return torch


def _load(path: Path, offset: int, length: int) -> Any:
    torch = _torch()
    with FileSlice(path, offset, length) as stream:
        with torch.serialization.safe_globals([io.BytesIO]):  # older Transformer Engine extra state is a BytesIO
            return torch.load(stream, map_location="cpu", weights_only=True)


def _bits(tensor: Any) -> Any:
    """A view that compares bit patterns (NaN == NaN, -0.0 != 0.0)."""
    torch = _torch()
    tensor = tensor.contiguous()
    return tensor.view(torch.uint8) if tensor.dtype != torch.bool else tensor


def _same_object(a: Any, b: Any) -> bool:
    torch = _torch()
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(_bits(a), _bits(b)))
    if isinstance(a, io.BytesIO) or isinstance(b, io.BytesIO):
        return isinstance(a, io.BytesIO) and isinstance(b, io.BytesIO) and a.getvalue() == b.getvalue()
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_object(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_object(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def output_kind(output: Path) -> tuple[str, Path]:
    """("nemo2", OUT/weights) or ("bridge", OUT/iter_<N>) for a converted checkpoint (or an iter_<N> folder)."""
    from migrator.convert.write.bridge import TRACKER, iter_dir_name

    if (output / "weights").is_dir() and not (output / TRACKER).exists():
        return "nemo2", output / "weights"
    if (output / TRACKER).is_file():
        text = (output / TRACKER).read_text(encoding="utf-8", errors="replace").strip()
        if not text.isdigit():
            raise MigratorError(f"{output / TRACKER}: {text[:40]!r} is not an iteration number")
        return "bridge", output / iter_dir_name(int(text))
    if output.name.startswith("iter_") and (output / "run_config.yaml").is_file():
        return "bridge", output
    raise MigratorError(f"{output}: not a NeMo 2.0 checkpoint (no weights/ folder) nor a Megatron-Bridge checkpoint "
                        "(no latest_checkpointed_iteration.txt)")


def _check_bridge_files(output: Path, weights: Path, report: VerifyReport) -> None:
    """common.pt, run_config.yaml, train_state.pt and the trackers of a Megatron-Bridge checkpoint."""
    from migrator.convert.read.model_config import load_yaml11
    from migrator.convert.write.bridge import CONTENT_METADATA, LATEST_TRAIN_STATE, RUN_CONFIG, TRAIN_STATE

    iteration = int(weights.name[len("iter_"):]) if weights.name[len("iter_"):].isdigit() else None
    common = weights / "common.pt"
    if common.is_file():
        try:
            state = _load(common, 0, common.stat().st_size)
            if not isinstance(state, dict) or state.get("iteration") != iteration or "checkpoint_version" not in state:
                report.problem(f"{common}: {state!r:.200} (expected checkpoint_version and iteration {iteration})")
            elif not isinstance(state.get("content_metadata"), dict):
                report.problem(f"{common}: no content_metadata (Megatron-Bridge's training loader needs it, e.g. "
                               f"{CONTENT_METADATA})")
        except Exception as error:  # noqa: BLE001 - reported
            report.problem(f"{common}: unreadable ({type(error).__name__}: {error})")
    steps = {}
    for path in (weights / TRAIN_STATE, output / LATEST_TRAIN_STATE if output != weights else None):
        if path is None:
            continue
        if not path.is_file():
            report.problem(f"{path}: missing")
            continue
        try:
            state = _load(path, 0, path.stat().st_size)
            steps[path.name] = int(state["step"])
        except Exception as error:  # noqa: BLE001 - reported
            report.problem(f"{path}: unreadable ({type(error).__name__}: {error})")
    for name, step in steps.items():
        if step != iteration:
            report.problem(f"{name}: step {step}, but the checkpoint is {weights.name} (Bridge's training loader "
                           "opens the folder of that step)")
    config_path = weights / RUN_CONFIG
    if not config_path.is_file():
        report.problem(f"{config_path}: missing (Megatron-Bridge builds the model from it)")
        return
    try:
        config = load_yaml11(config_path.read_bytes(), str(config_path))  # Bridge's run_config, not NeMo 1.0's
    except MigratorError as error:
        report.problem(str(error))
        return
    model = config.get("model")
    if not isinstance(model, dict) or not str(model.get("_target_", "")).startswith("megatron.bridge."):
        report.problem(f"{config_path}: model: has no Megatron-Bridge provider `_target_`")
    checkpoint = config.get("checkpoint") or {}
    for key in ("save_optim", "save_rng"):
        if checkpoint.get(key) is not False:
            report.problem(f"{config_path}: checkpoint.{key} is {checkpoint.get(key)!r}; a converted checkpoint "
                           "holds no optimizer or RNG state (False), or Bridge's resume tries to load it")
    tokenizer = config.get("tokenizer")
    if isinstance(tokenizer, dict) and tokenizer.get("tokenizer_model"):
        path = Path(str(tokenizer["tokenizer_model"]))
        here = weights / "tokenizer" / (path.name if path.suffix else "")
        if not path.exists():
            report.notes.append(f"{config_path}: tokenizer_model {path} does not exist (the checkpoint was moved? "
                                f"the files are in {weights / 'tokenizer'}; pass tokenizer_model= to Bridge's "
                                "load_tokenizer)")
        if not here.exists():
            report.problem(f"{here}: missing (the tokenizer run_config.yaml names)")


def _check_layout(output: Path, report: VerifyReport) -> DcpIndex:
    kind, weights = output_kind(output)
    if kind == "nemo2" and not weights.is_dir():
        raise MigratorError(f"{output}: not a NeMo 2.0 checkpoint (no weights/ folder)")
    if kind == "bridge" and not weights.is_dir():
        raise MigratorError(f"{weights}: missing (the tracker names it)")
    marker = weights / "metadata.json"
    if not marker.is_file():
        report.problem(f"{marker}: missing (an incomplete checkpoint)")
    else:
        try:
            content = json_object(marker.read_bytes(), str(marker))
        except MigratorError as error:
            content = None
            report.problem(str(error))
        if content is not None and content != BACKEND_MARKER:
            report.problem(f"{marker}: {content} (expected {BACKEND_MARKER})")
    index_file = weights / ".metadata"
    if not index_file.is_file():
        raise MigratorError(f"{index_file}: missing (no torch_dist index)")
    if index_file.stat().st_size > MAX_INDEX_BYTES:
        raise MigratorError(f"{index_file}: {index_file.stat().st_size} bytes, more than the {MAX_INDEX_BYTES} an "
                            "index may have")
    index = parse_dcp_metadata(index_file.read_bytes(), str(index_file), member_dir="")
    common = weights / "common.pt"
    if not common.is_file():
        report.problem(f"{common}: missing")
    else:
        try:
            state = _load(common, 0, common.stat().st_size)
            if not isinstance(state, dict):
                report.problem(f"{common}: holds {type(state).__name__}, not a dict")
        except Exception as error:  # noqa: BLE001 - reported
            report.problem(f"{common}: unreadable ({type(error).__name__}: {error})")
    context = output / "context"
    if kind == "bridge":
        _check_bridge_files(output, weights, report)
    for name in ("io.json", "model.yaml") if kind == "nemo2" else ():
        if not (context / name).is_file():
            report.problem(f"{context / name}: missing")
    if kind == "nemo2" and (context / "io.json").is_file():
        try:
            graph = json_object((context / "io.json").read_bytes(), str(context / "io.json"), 64 << 20)
            if not {"root", "objects"} <= graph.keys():
                report.problem(f"{context / 'io.json'}: not a fiddle JSON graph (no root/objects)")
        except MigratorError as error:
            report.problem(str(error))
    sizes = {p.name: p.stat().st_size for p in weights.glob("*.distcp")}
    for key, chunks in index.chunks.items():
        for c in chunks:
            if c.member not in sizes:
                report.problem(f"{key}: chunk at {list(c.offsets)} is in {c.member}, which is missing")
            elif c.byte_offset + c.byte_length > sizes[c.member]:
                report.problem(f"{weights / c.member}: truncated ({key} needs bytes up to "
                               f"{c.byte_offset + c.byte_length}, the file has {sizes[c.member]})")
    for key, o in index.objects.items():
        if o.member not in sizes:
            report.problem(f"{key}: stored outside the data files ({o.member})")
        elif o.byte_offset + o.byte_length > sizes[o.member]:
            report.problem(f"{weights / o.member}: truncated (sharded object {key} needs bytes up to "
                           f"{o.byte_offset + o.byte_length}, the file has {sizes[o.member]})")
    if kind == "nemo2":
        not_renamed = [k for k in list(index.tensors) + list(index.objects) if not k.startswith("module.")]
        if not_renamed:
            report.notes.append(f"{len(not_renamed)} keys are not under 'module.' (e.g. {not_renamed[0]})")
    else:
        prefixed = [k for k in list(index.tensors) + list(index.objects) if k.startswith(("module.", "model."))]
        if prefixed:
            report.problem(f"{len(prefixed)} keys keep a NeMo prefix (e.g. {prefixed[0]}); Megatron-Bridge's keys "
                           "are megatron-core's, unprefixed")
    if not report.problems and kind == "nemo2":
        report.checks.append(f"layout: weights/ ({len(sizes)} data files, index, common.pt, metadata.json), "
                             "context/ (io.json, model.yaml)")
    if not report.problems and kind == "bridge":
        report.checks.append(f"layout: {weights.name}/ ({len(sizes)} data files, index, common.pt, metadata.json, "
                             "run_config.yaml, train_state.pt, tokenizer), trackers at the same step")
        report.checks.append(f"index: {len(index.tensors)} tensors in "
                             f"{sum(len(c) for c in index.chunks.values())} chunks, {len(index.objects)} sharded "
                             "objects, every byte range inside its data file")
    return index


def _read_output_chunk(weights: Path, chunk: StoredChunk) -> Any:
    return _load(weights / chunk.member, chunk.byte_offset, chunk.byte_length)


def _read_output_object(weights: Path, obj: StoredObject) -> Any:
    return _load(weights / obj.member, obj.byte_offset, obj.byte_length)


def _iter_source_items(source: Source) -> Iterator[tuple[StoredChunk | StoredObject, bytearray]]:
    """Every stored chunk and object of the source with its bytes, member by member (works for streams too)."""
    items: dict[str, list[StoredChunk | StoredObject]] = {}
    for chunks in source.chunks.values():
        for c in chunks:
            items.setdefault(c.member, []).append(c)
    for o in source.objects.values():
        items.setdefault(o.member, []).append(o)
    for member, stream in source.iter_members(sorted(items)):
        position = 0
        for item in sorted(items[member], key=lambda i: i.byte_offset):
            try:
                if source.random_access:
                    stream.seek(item.byte_offset)
                else:
                    skip(stream, item.byte_offset - position)
                data = read_exactly(stream, item.byte_length)
            except EOFError:
                raise MigratorError(f"{source.describe(member)}: truncated") from None
            position = item.byte_offset + len(data)
            yield item, data


def _decode_source(item: StoredChunk | StoredObject, data: bytearray, what: str) -> Any:
    torch = _torch()
    if isinstance(item, StoredChunk):
        if item.encoding == "raw":
            from migrator.convert.read.zarr import decode_chunk

            return decode_chunk(item, data)
        return view_torch_chunk(data, item, what)  # a view of `data`, not a second copy
    with torch.serialization.safe_globals([io.BytesIO]):
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return obj if item.wrapped else [obj]


def _read_rank_tensor(stream: Any, ref: Any, what: str) -> Any:
    torch = _torch()
    stream.seek(ref.offset)
    try:
        data = read_exactly(stream, ref.nbytes)
    except EOFError:
        raise MigratorError(f"{what}: truncated ({ref.key})") from None
    if not ref.nbytes:
        return torch.empty(ref.shape, dtype=getattr(torch, ref.dtype))
    return torch.frombuffer(data, dtype=getattr(torch, ref.dtype)).reshape(ref.shape)


def _rank_piece(full: Any, kind: str, tp: int, rank: int, ref: Any, part: str, legacy_qkv_heads: int | None
                ) -> tuple[Any, int]:
    """What rank `rank` held of the merged tensor `full`, split the way NeMo splits a TP=1 weight
    (`megatron_change_num_partitions.compute_tp_splits`); also the rows of that piece past the end of `full`
    (vocabulary padding of the TP>1 layout that the merge dropped)."""
    from migrator.convert.model.tp_merge import GATED, REPLICATED, ROW, VOCAB

    if kind == REPLICATED:
        return full, 0
    if kind == ROW:
        cols = ref.shape[1]
        return full[:, rank * cols:(rank + 1) * cols], 0
    if kind == GATED:
        half = full.shape[0] // 2
        gate, up = full[:half], full[half:]
        if part in ("gate", "up"):
            rows = ref.rows
            source = gate if part == "gate" else up
            return source[rank * rows:(rank + 1) * rows], 0
        h = ref.rows // 2
        return _torch().cat([gate[rank * h:(rank + 1) * h], up[rank * h:(rank + 1) * h]]), 0
    rows = ref.rows
    piece = full[rank * rows:(rank + 1) * rows]
    if legacy_qkv_heads is not None and kind != VOCAB and (".linear_qkv." in ref.key or "query_key_value" in ref.key):
        heads = legacy_qkv_heads // tp
        rest = tuple(piece.shape[1:])
        piece = piece.reshape(heads, 3, -1, *rest).transpose(0, 1).reshape(piece.shape)
    return piece, rows - piece.shape[0]


def _compare_merged(source: Source, index: DcpIndex, weights: Path, report: VerifyReport, kind: str) -> None:
    """A non-distributed source: every rank's tensor against its part of the merged output tensor."""
    from migrator.convert.model.tp_merge import VOCAB, partition_kind
    from migrator.convert.read.nonsharded import object_blob

    torch = _torch()
    ns = source.nonsharded
    assert ns is not None
    rename_key = key_renamer(source.key_prefix, KEY_PREFIX[kind])
    expected = {rename_key(name) for name, _ in ns.params}
    for key in sorted(expected - set(index.tensors)):
        report.problem(f"{key}: merged from {source.path} but not in the output")
    for key in sorted(set(index.tensors) - expected):
        report.problem(f"{key}: in the output but not in {source.path}")
    placements = {rename_key(p.key): p for p in ns.object_placements()}
    for key in sorted(set(placements) - set(index.objects)):
        report.problem(f"{key}: sharded object missing in the output")
    for key in sorted(set(index.objects) - set(placements)):
        report.problem(f"{key}: sharded object in the output but not in {source.path}")
    streams: dict[str, Any] = {}

    def stream(member: str) -> Any:
        if member not in streams:
            streams[member] = source.open_member(member)
        return streams[member]

    compared, dropped, objects_equal, placeholders = 0, 0, 0, 0
    try:
        for (name, layer), ranks in sorted(ns.params.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
            new_key = rename_key(name)
            if new_key not in index.tensors:
                continue
            out_dtype = getattr(torch, index.tensors[new_key].dtype)
            chunks = index.chunks[new_key]
            if layer is not None:
                chunks = [c for c in chunks if c.offsets[0] <= layer < c.offsets[0] + c.sizes[0]]
            if len(chunks) != 1:
                report.problem(f"{new_key}: layer {layer} is not one chunk of the output")
                continue
            try:
                full = _read_output_chunk(weights, chunks[0])
            except Exception as error:  # noqa: BLE001 - reported
                report.problem(f"{new_key}: chunk at {list(chunks[0].offsets)} unreadable ({type(error).__name__})")
                continue
            if layer is not None:
                full = full[layer - chunks[0].offsets[0]]
            partition = partition_kind(name, ns.gated)
            for rank, parts in enumerate(ranks):
                for part, ref in parts.items():
                    what = f"{source.describe(ref.member)} ({ref.key})"
                    original = _read_rank_tensor(stream(ref.member), ref, what)
                    if original.dtype != out_dtype:
                        original = original.to(out_dtype)
                    piece, past = _rank_piece(full, partition, len(ranks), rank, ref,
                                              part if len(parts) == 2 else "all", ns.legacy_qkv_heads)
                    if partition == VOCAB and past:
                        dropped += past
                        original = original[:max(0, original.shape[0] - past)]
                    if tuple(piece.shape) != tuple(original.shape) or not torch.equal(_bits(piece), _bits(original)):
                        report.problem(f"{new_key}" + (f" layer {layer}" if layer is not None else "")
                                       + f": tensor-parallel rank {rank}'s part differs from {what}")
                    else:
                        compared += 1
        for key, placement in sorted(placements.items()):
            out = index.objects.get(key)
            if out is None:
                continue
            got = _read_output_object(weights, out)
            ref = placement.ref
            if ref is None or ref.value is None:
                if _same_object(got, [None]):
                    placeholders += ref is None
                    objects_equal += ref is not None
                else:
                    report.problem(f"{key}: expected [None], the output holds {type(got).__name__}")
                continue
            what = f"{source.describe(ref.member)} ({ref.key})"
            with torch.serialization.safe_globals([io.BytesIO]):
                want = torch.load(io.BytesIO(object_blob(ref, stream(ref.member), what)), map_location="cpu",
                                  weights_only=True)
            if _same_object(got, want):
                objects_equal += 1
            else:
                report.problem(f"{key}: sharded object differs from {what}")
    finally:
        for s in streams.values():
            s.close()
    if placeholders:
        report.notes.append(f"{placeholders} sharded objects are [None] placeholders (the rank files have no "
                            "_extra_state for them)")
    if dropped:
        report.notes.append(f"{dropped} vocabulary padding rows of the TP={ns.tp} layout are not in the output "
                            "(padded for TP=1, as NeMo's merge does)")
    if not report.problems:
        report.checks.append(f"against {source.path}: {compared} rank tensors (TP={ns.tp}, PP={ns.pp}) bit-equal "
                             f"to their part of the merged output, {objects_equal} sharded objects equal")


def _compare(source: Source, index: DcpIndex, weights: Path, report: VerifyReport, kind: str = "nemo2") -> None:
    if source.nonsharded is not None:
        _compare_merged(source, index, weights, report, kind)
        return
    torch = _torch()
    rename_key = key_renamer(source.key_prefix, KEY_PREFIX[kind])
    out_chunks = {(k, c.offsets, c.sizes): c for k, cs in index.chunks.items() for c in cs}
    expected_tensors = {rename_key(k): k for k in source.tensors}
    expected_objects = {rename_key(k): k for k in source.objects}
    for key in sorted(set(expected_tensors) - set(index.tensors)):
        report.problem(f"{key}: in {source.path} ({expected_tensors[key]}) but not in the output")
    for key in sorted(set(index.tensors) - set(expected_tensors)):
        report.problem(f"{key}: in the output but not in {source.path}")
    for key in sorted(set(expected_objects) - set(index.objects)):
        report.problem(f"{key}: sharded object of {source.path} missing in the output")
    added = sorted(set(index.objects) - set(expected_objects))
    for key in added:
        if is_core_attention(key):
            report.notes.append(f"{key}: added placeholder (not in {source.path})")
        else:
            report.problem(f"{key}: sharded object in the output but not in {source.path}")

    assembled: dict[str, tuple[Any, Any]] = {}  # key -> (source full tensor, filled mask) when chunkings differ
    equal_tensors: dict[str, bool] = {}
    cast_keys: set[str] = set()
    objects_equal = 0
    for item, data in _iter_source_items(source):
        what = f"{source.describe(item.member)} ({item.key})"
        new_key = rename_key(item.key)
        if isinstance(item, StoredObject):
            out = index.objects.get(new_key)
            if out is None:
                continue
            if item.wrapped:
                with open(weights / out.member, "rb") as f:
                    f.seek(out.byte_offset)
                    same = f.read(out.byte_length) == data
                if not same:
                    same = _same_object(_decode_source(item, data, what), _read_output_object(weights, out))
            else:
                same = _same_object(_decode_source(item, data, what), _read_output_object(weights, out))
            if same:
                objects_equal += 1
            elif is_core_attention(new_key) and _same_object(_read_output_object(weights, out), [None]):
                report.notes.append(f"{new_key}: reset to an empty state (--reset-attention-extra-state)")
            else:
                report.problem(f"{new_key}: sharded object differs from {what}")
            continue
        if new_key not in index.tensors:
            continue
        source_tensor = _decode_source(item, data, what)
        del data
        out_info = index.tensors[new_key]
        target_dtype = getattr(torch, out_info.dtype)
        if source_tensor.dtype != target_dtype:
            cast_keys.add(new_key)
            source_tensor = source_tensor.to(target_dtype)
        out = out_chunks.get((new_key, item.offsets, item.sizes))
        if out is not None:
            same = torch.equal(_bits(source_tensor), _bits(_read_output_chunk(weights, out)))
            equal_tensors[new_key] = equal_tensors.get(new_key, True) and same
            if not same:
                report.problem(f"{new_key}: chunk at {list(item.offsets)} differs from {what}")
            continue
        full, _ = assembled.setdefault(new_key, (torch.empty(out_info.shape, dtype=target_dtype), None))
        region = tuple(slice(o, o + s) for o, s in zip(item.offsets, item.sizes))
        full[region] = source_tensor
    for new_key, (full, _) in assembled.items():
        out_full = torch.empty_like(full)
        for c in index.chunks[new_key]:
            out_full[tuple(slice(o, o + s) for o, s in zip(c.offsets, c.sizes))] = _read_output_chunk(weights, c)
        same = torch.equal(_bits(full), _bits(out_full))
        equal_tensors[new_key] = same
        if not same:
            report.problem(f"{new_key}: differs from {source.path} ({expected_tensors[new_key]})")
    if not report.problems:
        how = "bit-equal" if not cast_keys else f"equal ({len(cast_keys)} after the cast to the output dtype)"
        report.checks.append(f"against {source.path}: {sum(equal_tensors.values())} tensors {how}, "
                             f"{objects_equal} sharded objects equal")


def verify_checkpoint(output: Path, against: Path | None = None, model_config: Path | None = None,
                      load: bool = False, tokens: list[int] | None = None) -> VerifyReport:
    """Run every check; problems are collected in the report (exit 1), unusable input raises MigratorError.
    `load`: also build the model with megatron-core and load the checkpoint into it (load_check.py), and with
    `tokens` run a forward pass (NeMo 2.0 and Megatron-Bridge outputs alike)."""
    report = VerifyReport(output)
    index = _check_layout(output, report)
    kind, weights = output_kind(output)
    torch = _torch()
    read_bytes = 0
    bad = len(report.problems)
    skipped = 0
    sizes = {p.name: p.stat().st_size for p in weights.glob("*.distcp")}
    for key, chunks in index.chunks.items():
        info = index.tensors[key]
        for c in chunks:
            if c.byte_offset + c.byte_length > sizes.get(c.member, -1):
                skipped += 1
                continue  # reported by the layout check (a missing or truncated data file)
            try:
                tensor = _read_output_chunk(weights, c)
            except Exception as error:  # noqa: BLE001 - reported
                report.problem(f"{weights / c.member}: {key} chunk at {list(c.offsets)} unreadable "
                               f"({type(error).__name__}: {error})")
                continue
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != c.sizes \
                    or tensor.dtype != getattr(torch, info.dtype):
                got = (f"{list(tensor.shape)} {tensor.dtype}" if isinstance(tensor, torch.Tensor)
                       else type(tensor).__name__)
                report.problem(f"{key}: chunk at {list(c.offsets)} holds {got}, the index says {list(c.sizes)} "
                               f"{info.dtype}")
            read_bytes += tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else 0
    for key, o in index.objects.items():
        if o.byte_offset + o.byte_length > sizes.get(o.member, -1):
            skipped += 1
            continue  # reported by the layout check (outside the data files, or a truncated one)
        try:
            value = _read_output_object(weights, o)
            if not (isinstance(value, list) and len(value) == 1):
                report.problem(f"{key}: sharded object is not a one-element list (megatron-core's torch_dist form)")
        except Exception as error:  # noqa: BLE001 - reported
            report.problem(f"{weights / o.member}: sharded object {key} unreadable ({type(error).__name__}: {error})")
    if len(report.problems) == bad and not skipped:
        report.checks.append(f"read back: {len(index.tensors)} tensors ({read_bytes} bytes) and {len(index.objects)} "
                             "sharded objects with torch.load(weights_only=True); shapes and dtypes match the index")
    if against is not None:
        with open_source(against, model_config, spill_parent=Path(output).resolve().parent) as source:
            _compare(source, index, weights, report, kind)
    if load:
        if report.problems:
            report.notes.append("load: not run (the checks above found problems)")
        else:
            _add_load_check(output, tokens, report)
    return report


def _add_load_check(output: Path, tokens: list[int] | None, report: VerifyReport) -> None:
    from migrator.convert.load_check import check_load

    result = check_load(output, tokens)
    report.checks += result.checks
    report.notes += result.notes
    report.problems += result.problems
