"""Read NeMo 1.0 non-distributed checkpoints: `model_weights.ckpt` (TP=1), `mp_rank_XX/model_weights.ckpt`
(TP>1) and `tp_rank_XX_pp_rank_YYY/model_weights.ckpt` (PP>1), each a `torch.save(model.state_dict())`.

Nothing is loaded as a whole. A rank file is a stored (uncompressed) zip: its central directory and `data.pkl`
are read from the file, `data.pkl` is unpickled with the allowlisted unpickler (`safe_pickle`: nothing is
imported or run; tensors become references to their storage records), and each tensor is then a byte range of
the rank file that the merge reads in pieces when it writes that tensor. A compressed `.nemo` cannot be read at
random, so its rank files are first spilled to a temporary folder beside the output (disk, not memory).
"""
from __future__ import annotations

import io
import pickle
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator

from migrator.convert.formats.safe_pickle import PersistentRef, PickledObject, brief, is_instance_of, make_object, stand_in
from migrator.convert.formats.torch_save_format import (
    _CENTRAL_HEADER, _END, _LOCAL_HEADER, _U32, _ZIP64_END, _ZIP64_LOCATOR, OBJECT_GLOBALS, STORAGE_TYPES,
    contiguous_strides,
)
from migrator.convert.formats.chunks import itemsize
from migrator.errors import MigratorError

CKPT_NAME = "model_weights.ckpt"
_RANK_MEMBER = re.compile(r"^(?:mp_rank_(\d+)|tp_rank_(\d+)_pp_rank_(\d+))/model_weights\.ckpt$")
_STORAGE_DTYPES = {v: k for k, v in STORAGE_TYPES.items()}
# what a state_dict pickle may name, besides OBJECT_GLOBALS (tensors, storages, BytesIO, OrderedDict)
_STATE_GLOBALS = OBJECT_GLOBALS | {("torch._utils", "_rebuild_parameter")}

Opener = Callable[[str], BinaryIO]  # member name -> seekable stream over the member


def rank_of_member(name: str) -> tuple[int, int, str] | None:
    """(tp rank, pp rank, layout) of a non-distributed weights member, or None for any other member."""
    if name == CKPT_NAME:
        return 0, 0, "single"
    match = _RANK_MEMBER.match(name)
    if match is None:
        return None
    if match.group(1) is not None:
        return int(match.group(1)), 0, "mp_rank"
    return int(match.group(2)), int(match.group(3)), "tp_pp_rank"


def is_nonsharded_member(name: str) -> bool:
    return rank_of_member(name) is not None


@dataclass(frozen=True)
class TensorRef:
    """One tensor of one rank file: where its bytes are (a contiguous byte range of the member)."""

    member: str
    key: str  # the key as saved
    dtype: str
    shape: tuple[int, ...]
    offset: int  # byte offset inside the member
    nbytes: int

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_bytes(self) -> int:
        n = itemsize(self.dtype)
        for d in self.shape[1:]:
            n *= d
        return n


@dataclass(frozen=True)
class ObjectRef:
    """A non-tensor state entry (`_extra_state`: None, a BytesIO, a dict, or a tensor) of one rank file."""

    member: str
    key: str
    value: Any  # plain values and stand-ins; storages as PersistentRef
    storages: dict[str, tuple[int, int]] = field(default_factory=dict)  # storage record -> (offset, length)


@dataclass
class RankFile:
    member: str
    tp: int
    pp: int
    entries: dict[str, TensorRef | ObjectRef]


class _StateUnpickler(pickle.Unpickler):
    """Allowlisted unpickling of a state_dict: OrderedDict is the real class (it only holds items), every other
    global a stand-in (`safe_pickle`), storages come back as PersistentRef."""

    def __init__(self, file: BinaryIO, what: str) -> None:
        super().__init__(file)
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) in _STATE_GLOBALS:
            return stand_in(module, name)
        raise MigratorError(f"{self._what}: refers to {module}.{name}, which is not on the allowlist of classes a "
                            "checkpoint may name; refusing to load it")

    def persistent_load(self, pid: Any) -> Any:
        return PersistentRef(pid)


def _read_at(stream: BinaryIO, offset: int, length: int, what: str) -> bytes:
    stream.seek(offset)
    data = stream.read(length)
    if len(data) != length:
        raise MigratorError(f"{what}: truncated (needs bytes up to {offset + length})")
    return data


def zip_records(stream: BinaryIO, size: int, what: str) -> dict[str, tuple[int, int]]:
    """{record name without the archive prefix: (data offset, length)} of a stored zip (torch.save), read from
    the stream's central directory (the data itself is not read)."""
    tail_length = min(size, 65557 + _ZIP64_LOCATOR.size + _ZIP64_END.size)
    tail = _read_at(stream, size - tail_length, tail_length, what)
    end = tail.rfind(b"PK\x05\x06")
    if end < 0:
        if size < 2 or _read_at(stream, 0, 2, what) != b"PK":
            raise MigratorError(f"{what}: not a zip-format torch.save file (torch < 1.6 legacy format is not "
                                "supported; re-save it with torch >= 1.6)")
        raise MigratorError(f"{what}: not a torch.save archive (no zip end record)")
    _, _, _, _, count, directory_size, directory_offset, _ = _END.unpack_from(tail, end)
    if directory_offset == _U32 or count == 0xFFFF or directory_size == _U32:
        locator = end - _ZIP64_LOCATOR.size
        _, _, zip64_end, _ = _ZIP64_LOCATOR.unpack_from(tail, locator)
        record = _read_at(stream, zip64_end, _ZIP64_END.size, what)
        _, _, _, _, _, _, _, count, directory_size, directory_offset = _ZIP64_END.unpack(record)
    directory = _read_at(stream, directory_offset, directory_size, what)
    records: dict[str, tuple[int, int]] = {}
    position = 0
    for _ in range(count):
        try:
            (signature, _, _, _, method, _, _, _, compressed, length, name_length, extra_length, comment_length, _, _,
             _, header_offset) = _CENTRAL_HEADER.unpack_from(directory, position)
        except struct.error:
            raise MigratorError(f"{what}: truncated zip directory") from None
        if signature != 0x02014B50 or method != 0:
            raise MigratorError(f"{what}: not a stored (uncompressed) torch.save archive")
        start = position + _CENTRAL_HEADER.size
        name = directory[start:start + name_length].decode("utf-8")
        extra = directory[start + name_length:start + name_length + extra_length]
        values = [length, compressed, header_offset]
        i = 0
        while i + 4 <= len(extra):
            tag, field_length = struct.unpack_from("<HH", extra, i)
            if tag == 1:
                wide = list(struct.unpack_from("<" + "Q" * (field_length // 8), extra, i + 4))
                for index in range(3):
                    if values[index] == _U32 and wide:
                        values[index] = wide.pop(0)
            i += 4 + field_length
        length, _, header_offset = values
        local = _read_at(stream, header_offset, _LOCAL_HEADER.size, what)
        local_name, local_extra = struct.unpack_from("<HH", local, 26)
        data_offset = header_offset + _LOCAL_HEADER.size + local_name + local_extra
        if data_offset + length > size:
            raise MigratorError(f"{what}: truncated (record {name} needs bytes up to {data_offset + length})")
        records[name.split("/", 1)[-1]] = (data_offset, length)
        position = start + name_length + extra_length + comment_length
    return records


def _storage_refs(value: Any, what: str) -> Iterator[PersistentRef]:
    """The storage references inside an object's value, walked without recursion and bounded: at most MAX_DEPTH
    levels (the value is pickled again later, recursively) and MAX_WALK values (shared references walked once)."""
    pending, seen, walked = [(value, 0)], set(), 0
    while pending:
        item, depth = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        walked += 1
        if walked > MAX_WALK or depth > MAX_DEPTH:
            raise MigratorError(f"{what}: an _extra_state of more than {MAX_WALK} values or {MAX_DEPTH} levels")
        if isinstance(item, PersistentRef):
            pid = item.pid
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[2], str)):
                raise MigratorError(f"{what}: unexpected storage reference {brief(pid)}")
            yield item
        elif isinstance(item, PickledObject):
            pending.extend((child, depth + 1) for child in (*item.args, item.state))
        elif isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend((child, depth + 1) for child in item)


MAX_WALK = 1_000_000
MAX_DEPTH = 100


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 48


def _tensor_ref(member: str, key: str, value: PickledObject, records: dict[str, tuple[int, int]],
                what: str) -> TensorRef:
    if value.pickle_name == "_rebuild_parameter":  # nn.Parameter(tensor, requires_grad, hooks)
        value = value.args[0] if value.args else None
        if not isinstance(value, PickledObject) or value.pickle_name != "_rebuild_tensor_v2":
            raise MigratorError(f"{what}: {key} is a parameter without a plain tensor")
    args = value.args
    if len(args) < 4 or not isinstance(args[0], PersistentRef):
        raise MigratorError(f"{what}: {key} is not a plain tensor")
    pid = args[0].pid
    storage_class = getattr(pid[1], "pickle_name", None) if isinstance(pid, tuple) and len(pid) == 5 else None
    if pid[0] != "storage" or storage_class not in _STORAGE_DTYPES or f"data/{pid[2]}" not in records:
        raise MigratorError(f"{what}: {key} has an unexpected storage reference {brief(pid)}")
    dtype = _STORAGE_DTYPES[storage_class]
    storage_offset, shape, stride = args[1], args[2], args[3]
    if is_instance_of(shape, "torch", "Size") and len(shape.args) == 1:
        shape = shape.args[0]
    if not (isinstance(shape, tuple) and isinstance(stride, tuple) and len(shape) == len(stride) <= 64
            and all(_natural(n) for n in (storage_offset, *shape, *stride))):
        raise MigratorError(f"{what}: {key} has size {brief(shape, 60)}, stride {brief(stride, 60)}, offset "
                            f"{brief(storage_offset, 20)}")
    numel = 1
    for d in shape:
        numel *= d
    if numel and any(st != c for st, c, n in zip(stride, contiguous_strides(shape), shape) if n > 1):
        raise MigratorError(f"{what}: {key} is stored non-contiguous (stride {list(stride)}); re-save the "
                            "checkpoint with contiguous tensors")
    data_offset, data_length = records[f"data/{pid[2]}"]
    start = storage_offset * itemsize(dtype)
    nbytes = numel * itemsize(dtype)
    if start + nbytes > data_length:
        raise MigratorError(f"{what}: {key} is truncated (its storage has {data_length} bytes, the tensor needs "
                            f"{start + nbytes})")
    return TensorRef(member, key, dtype, shape, data_offset + start, nbytes)


def index_rank_file(member: str, stream: BinaryIO, size: int, what: str, tp: int = 0, pp: int = 0) -> RankFile:
    """Index one rank file: every state entry as a TensorRef (bytes of the member) or an ObjectRef. Whatever the
    file holds, the outcome is a RankFile or one MigratorError naming it."""
    try:
        return _index_rank_file(member, stream, size, what, tp, pp)
    except (struct.error, UnicodeDecodeError, ValueError, TypeError, IndexError, KeyError, OverflowError,
            RecursionError) as error:
        raise MigratorError(f"{what}: malformed torch.save file ({type(error).__name__})") from None


def _index_rank_file(member: str, stream: BinaryIO, size: int, what: str, tp: int, pp: int) -> RankFile:
    records = zip_records(stream, size, what)
    if "data.pkl" not in records:
        raise MigratorError(f"{what}: torch.save archive without data.pkl")
    offset, length = records["data.pkl"]
    try:
        state = _StateUnpickler(io.BytesIO(_read_at(stream, offset, length, what)), what).load()
    except MigratorError:
        raise
    except Exception as error:  # truncated or corrupt pickles raise many types
        raise MigratorError(f"{what}: not a readable pickle ({type(error).__name__}: {error})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a Lightning-style checkpoint dict
    if not isinstance(state, dict):
        raise MigratorError(f"{what}: holds {type(state).__name__}, not a state_dict")
    entries: dict[str, TensorRef | ObjectRef] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not key.isprintable():
            raise MigratorError(f"{what}: state_dict key {brief(key, 80)} is not a printable string")
        if isinstance(value, PickledObject) and value.pickle_name in ("_rebuild_tensor_v2", "_rebuild_parameter") \
                and not key.endswith("_extra_state"):
            entries[key] = _tensor_ref(member, key, value, records, what)
            continue
        if not key.endswith("_extra_state"):
            raise MigratorError(f"{what}: {key} holds {type(value).__name__}, not a tensor")
        storages = {}
        for ref in _storage_refs(value, f"{what}: {key}"):
            name = f"data/{ref.pid[2]}"
            if name not in records:
                raise MigratorError(f"{what}: {key} refers to a missing storage record {ref.pid[2]!r}")
            storages[str(ref.pid[2])] = records[name]
        entries[key] = ObjectRef(member, key, value, storages)
    return RankFile(member, tp, pp, entries)


def _plain_stand_ins(value: Any) -> Any:
    """Real OrderedDicts (tensor hooks) -> stand-ins, so that the value can be pickled again."""
    if isinstance(value, OrderedDict):
        if value:
            raise MigratorError("an _extra_state holding an OrderedDict with items is not supported")
        return make_object("collections", "OrderedDict", via="reduce")
    if isinstance(value, PickledObject):
        value.args = tuple(_plain_stand_ins(a) for a in value.args)
        value.state = _plain_stand_ins(value.state)
        return value
    if isinstance(value, list):
        return [_plain_stand_ins(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain_stand_ins(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain_stand_ins(v) for k, v in value.items()}
    return value


def object_blob(ref: ObjectRef, stream: BinaryIO, what: str) -> bytes:
    """`torch.save([value])`: the form torch_dist keeps a sharded object in (storage records copied as they are)."""
    from migrator.convert.formats.safe_pickle import dump_stand_ins
    from migrator.convert.formats.torch_save_format import write_archive

    storages = [(name, length, [_read_at(stream, offset, length, what)])
                for name, (offset, length) in ref.storages.items()]
    out = io.BytesIO()
    write_archive(out, dump_stand_ins([_plain_stand_ins(ref.value)], protocol=2), storages)
    return out.getvalue()


# ------------------------------------------------------------------------------------------------ the whole set
# per-layer linear modules whose `_extra_state` a dist checkpoint holds (megatron-core saves one object per layer;
# NeMo 2.0 asks for each of them); a file without them (2023-era) gets `[None]` placeholders
LINEAR_EXTRA_STATES = (
    "model.decoder.layers.self_attention.linear_qkv._extra_state",
    "model.decoder.layers.self_attention.linear_proj._extra_state",
    "model.decoder.layers.mlp.linear_fc1._extra_state",
    "model.decoder.layers.mlp.linear_fc2._extra_state",
)
CORE_ATTENTION_EXTRA_STATE = "model.decoder.layers.self_attention.core_attention._extra_state"
GATED_ACTIVATIONS = {"geglu", "fast-geglu", "reglu", "fast-reglu", "swiglu", "fast-swiglu"}


@dataclass
class ObjectPlacement:
    key: str  # dist-checkpoint key with its shard suffix
    ref: ObjectRef | None  # None: a `[None]` placeholder


class NonShardedIndex:
    """Every rank file of a non-distributed checkpoint, grouped per megatron-core parameter and global layer.

    `tensors()` describes the merged (TP=1, PP=1) checkpoint in dist-checkpoint form (layers stacked on dim 0),
    which is what the architecture checks and the plan read; `merged()` gives one layer's merged tensor as byte
    ranges of the rank files.
    """

    def __init__(self, ranks: list[RankFile], model_config: dict, describe: Callable[[str], str]) -> None:
        from migrator.convert.model.legacy_keys import check_legacy_config, map_legacy_key, map_mcore_key

        self.describe = describe
        self.legacy = model_config.get("mcore_gpt") is False
        if self.legacy:
            check_legacy_config(model_config)
        self.gated = str(model_config.get("activation", "gelu")).lower() in GATED_ACTIVATIONS
        self.legacy_qkv_heads = (int(model_config["num_attention_heads"])
                                 if self.legacy and model_config.get("megatron_legacy", False) else None)
        self.tied = bool(model_config.get("share_embeddings_and_output_weights", True))
        self.transformer_engine = bool(model_config.get("transformer_engine", False))
        self.vocab_rows: int | None = None
        self.members = sorted(r.member for r in ranks)
        grid = {(r.tp, r.pp): r for r in ranks}
        self.tp = 1 + max(t for t, _ in grid)
        self.pp = 1 + max(p for _, p in grid)
        for t in range(self.tp):
            for p in range(self.pp):
                if (t, p) not in grid:
                    raise MigratorError(f"{describe(ranks[0].member)}: tensor-parallel rank {t}, pipeline stage {p} "
                                        "is missing (an incomplete set of rank folders)")
        last = grid[(self.tp - 1, self.pp - 1)]
        for key, found, what in (("tensor_model_parallel_size", self.tp, "tensor-parallel ranks"),
                                 ("pipeline_model_parallel_size", self.pp, "pipeline stages")):
            said = model_config.get(key, 1)
            if said != found:
                raise MigratorError(f"{describe(last.member)}: {found} {what} in the checkpoint, but "
                                    f"model_config.yaml says {key}: {said}")
        mapper = (lambda k, m: map_legacy_key(k, describe(m))) if self.legacy else (lambda k, m: map_mcore_key(k))
        # params[(name, global layer)][tp] = {part: TensorRef}
        self.params: dict[tuple[str, int | None], list[dict[str, TensorRef]]] = {}
        self.objects: dict[tuple[str, int], ObjectRef] = {}
        first_stage: dict[tuple[str, int | None], int] = {}
        offset = 0
        for p in range(self.pp):
            stage_layers = 0
            stage_keys: dict[tuple[str, int | None, str], str] | None = None
            for t in range(self.tp):
                rank = grid[(t, p)]
                keys: dict[tuple[str, int | None, str], str] = {}
                for key, entry in rank.entries.items():
                    mapped = mapper(key, rank.member)
                    if mapped is None:
                        continue
                    if mapped.name == "model.output_layer.weight" and self.tied:
                        continue  # the last stage's copy of tied embeddings
                    where = (mapped.name, mapped.layer, mapped.part)
                    if where in keys:
                        raise MigratorError(f"{describe(rank.member)}: {key} and {keys[where]} are the same "
                                            f"parameter ({mapped.name})")
                    keys[where] = key
                    if mapped.layer is not None:
                        stage_layers = max(stage_layers, mapped.layer + 1)
                    layer = None if mapped.layer is None else offset + mapped.layer
                    if isinstance(entry, ObjectRef):
                        if t == 0 and mapped.layer is not None and mapped.part != "up":
                            self.objects[(mapped.name, layer)] = entry
                        continue
                    stage = first_stage.setdefault((mapped.name, layer), p)
                    if stage != p:
                        continue  # a non-layer tensor an earlier stage already holds (tied embeddings)
                    slot = self.params.setdefault((mapped.name, layer), [{} for _ in range(self.tp)])
                    slot[t][mapped.part] = entry
                if stage_keys is None:
                    stage_keys = keys
                elif set(keys) != set(stage_keys):
                    extra = sorted(set(keys) ^ set(stage_keys), key=str)[0]
                    raise MigratorError(f"{describe(rank.member)}: {extra[0]} (layer {extra[1]}) is in one "
                                        f"tensor-parallel rank of pipeline stage {p} but not in another")
            offset += stage_layers
        self.num_layers = offset
        said_layers = model_config.get("num_layers")
        if said_layers is not None and said_layers != self.num_layers:
            raise MigratorError(f"{describe(grid[(0, self.pp - 1)].member)}: the rank files hold {self.num_layers} "
                                f"layers, model_config.yaml says num_layers: {said_layers}")
        for (name, layer), slot in self.params.items():
            if any(not pieces for pieces in slot):
                raise MigratorError(f"{describe(self.members[0])}: {name} is missing in some tensor-parallel ranks")

    # --- the merged checkpoint, described like a dist checkpoint
    def layered(self, name: str) -> bool:
        return name.startswith("model.decoder.layers.")

    def merged(self, name: str, layer: int | None):
        from migrator.convert.model.tp_merge import merge_plan

        return merge_plan(name, layer, self.params[(name, layer)], gated=self.gated,
                          legacy_qkv_heads=self.legacy_qkv_heads, vocab_rows=self.vocab_rows,
                          describe=self.describe)

    def tensors(self) -> dict[str, "TensorInfo"]:
        from migrator.convert.formats.types import TensorInfo

        names = sorted({name for name, _ in self.params})
        out: dict[str, TensorInfo] = {}
        for name in names:
            if self.layered(name):
                shapes = {}
                for layer in range(self.num_layers):
                    if (name, layer) not in self.params:
                        raise MigratorError(f"{self.describe(self.members[0])}: {name} is missing for layer {layer}")
                    merged = self.merged(name, layer)
                    shapes[layer] = merged.shape
                first = shapes[0]
                for layer, shape in shapes.items():
                    if shape != first:
                        raise MigratorError(f"{self.describe(self.members[0])}: {name} is {list(shape)} in layer "
                                            f"{layer} but {list(first)} in layer 0")
                shape = (self.num_layers, *first)
                dtype = merged.dtype
            else:
                merged = self.merged(name, None)
                shape, dtype = merged.shape, merged.dtype
            n = itemsize(dtype)
            for d in shape:
                n *= d
            out[name] = TensorInfo(name, shape, dtype, n)
        return out

    def where(self, name: str) -> str | None:
        """The rank files holding a (stacked) tensor, for messages: "<file> (and N more rank files)"."""
        members = sorted({ref.member for (key, _), slot in self.params.items() if key == name
                          for pieces in slot for ref in pieces.values()})
        if not members:
            return None
        more = f" and {len(members) - 1} more rank files" if len(members) > 1 else ""
        return f"{self.describe(members[0])}{more}"

    def set_vocab_rows(self, rows: int | None) -> None:
        self.vocab_rows = rows

    def merged_vocab_rows(self) -> int | None:
        key = ("model.embedding.word_embeddings.weight", None)
        if key not in self.params:
            return None
        return sum(p["all"].rows for p in self.params[key] if "all" in p)

    def object_placements(self) -> list[ObjectPlacement]:
        """Every per-layer sharded object of the output: the rank files' `_extra_state`s (TP rank 0), and `[None]`
        placeholders for linear layers (and Transformer Engine attention) that have none."""
        names = {name for name, _ in self.objects} | set(LINEAR_EXTRA_STATES)
        if self.transformer_engine:
            names.add(CORE_ATTENTION_EXTRA_STATE)
        placements = []
        total = self.num_layers
        for name in sorted(names):
            for layer in range(total):
                placements.append(ObjectPlacement(f"{name}/shard_{layer}_{total}", self.objects.get((name, layer))))
        return placements


def open_rank_files(members: dict[str, int], open_member: Opener, describe: Callable[[str], str]) -> list[RankFile]:
    """Index every non-distributed weights member (`members`: name -> size)."""
    layouts = set()
    ranks = []
    for name in sorted(members):
        found = rank_of_member(name)
        if found is None:
            continue
        tp, pp, layout = found
        layouts.add(layout)
        stream = open_member(name)
        try:
            ranks.append(index_rank_file(name, stream, members[name], describe(name), tp, pp))
        finally:
            stream.close()
    if len(layouts) > 1:
        raise MigratorError(f"{describe(ranks[0].member)}: mixes non-distributed layouts ({', '.join(sorted(layouts))})")
    return ranks
