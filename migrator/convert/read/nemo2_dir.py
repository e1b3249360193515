"""A NeMo 2.0 checkpoint directory as the input of `convert`: `weights/` (torch_dist) and `context/`.

Recognised by its layout: `weights/metadata.json` beside `context/model.yaml` or `context/io.json`. Nothing of
NeMo is imported: `context/model.yaml` (the config NeMo 2.0 serialises next to io.json) is read as YAML data, or,
where only `io.json` exists, the config class and its explicit arguments are read from the fiddle graph and
completed with that class's preset values from `rules/nemo2_models.yaml`. The tokenizer is the one `context/`
holds (a SentencePiece model or a Hugging Face folder), as NeMo 2.0's `load_context` would build it.

Only the model (`module.*` keys) is converted. A NeMo 2.0 `weights/` may also hold the optimizer state
(`optimizer.*`) and other training state: those keys are left out (a warning says so), and since their bytes
share the data files with the model's, the conversion then copies the model's chunks one by one instead of whole
files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from migrator.convert.formats.safe_pickle import brief
from migrator.convert.storage.fileops import copy_file, link_or_copy
from migrator.convert.read.model_config import load_yaml11
from migrator.convert.read.source import (MAX_INDEX_BYTES, Source, normalize_member_name, open_file_member,
                                          read_file_member)
from migrator.convert.model.spec import TokenizerSpec
from migrator.convert.read.torch_dist import check_chunk_headers, parse_dcp_metadata
from migrator.errors import MigratorError

WEIGHTS = "weights"
CONTEXT = "context"
MODEL_PREFIX = "module."
_NEMO_SP = "nemo.collections.common.tokenizers.sentencepiece_tokenizer.SentencePieceTokenizer"
_NEMO_HF = "nemo.collections.common.tokenizers.huggingface.auto_tokenizer.AutoTokenizer"


def is_nemo2_dir(path: Path) -> bool:
    """`weights/metadata.json` beside `context/model.yaml` or `context/io.json`."""
    return (path / WEIGHTS / "metadata.json").is_file() and (
        (path / CONTEXT / "model.yaml").is_file() or (path / CONTEXT / "io.json").is_file())


@dataclass
class Nemo2Context:
    """What `context/` says about the model: classes, config values (megatron-core names) and tokenizer."""

    model_class: str
    config_class: str
    values: dict[str, Any]  # config fields; callables and dtypes as import-path strings
    origin: str  # "context/model.yaml" or "context/io.json (+ preset of <class>)"
    tokenizer: dict[str, Any] | None  # {"_target_": class, **arguments} or None


def _plain(value: Any) -> Any:
    """`{_target_: torch.nn.functional.silu, _call_: false}` -> "torch.nn.functional.silu"; other values as they are."""
    if isinstance(value, dict) and "_target_" in value:
        return str(value["_target_"]) if value.get("_call_") is False else {"<object>": value["_target_"]}
    return value


# The config fields the architecture checks read (model/shapes.py), and those of them that must not be null. Their
# types and ranges are megatron-core's (model/nemo1_values.MCORE_FIELDS, which the Bridge spec checks again): a
# context/ that lacks one (after the class's preset fills in what model.yaml leaves out) is refused here, in one
# line naming the file and the field, before the checks compute with them.
GPT_FIELDS = ("hidden_size", "num_layers", "num_attention_heads", "ffn_hidden_size", "seq_length", "num_query_groups",
              "kv_channels", "gated_linear_unit", "add_bias_linear", "add_qkv_bias", "qk_layernorm",
              "share_embeddings_and_output_weights", "normalization", "position_embedding_type")
MAMBA_FIELDS = ("hidden_size", "hybrid_override_pattern", "share_embeddings_and_output_weights")
_NULLABLE = {"num_query_groups", "kv_channels"}


def check_context_values(context: Nemo2Context, where: str) -> None:
    """Every field the architecture checks read is present (not null where they compute with it), and every value
    megatron-core has a rule for follows it."""
    from migrator.convert.model.nemo1_values import check_mcore_values

    for name in MAMBA_FIELDS if context.model_class.endswith(".MambaModel") else GPT_FIELDS:
        if name not in context.values:
            raise MigratorError(f"{where}: config field {name} is missing (and {context.config_class} has no preset "
                                "in rules/nemo2_models.yaml that gives it)")
        if context.values[name] is None and name not in _NULLABLE:
            raise MigratorError(f"{where}: config field {name} is null")
    check_mcore_values(context.values, where)


def _read_model_yaml(path: Path) -> Nemo2Context:
    """context/model.yaml as data. NeMo's lists every field of the config; ours (write/nemo2.py) lists the values
    taken from NeMo 1.0, and NeMo builds the class from io.json, so the class's defaults apply to the rest: fields
    model.yaml leaves out come from the config class's preset in rules/nemo2_models.yaml, when there is one."""
    from migrator.convert.model.models import load_model_table

    try:
        text = path.read_bytes()
    except OSError as error:
        raise MigratorError(f"{path}: cannot read ({error.strerror})") from None
    data = load_yaml11(text, str(path))  # NeMo 2.0's model.yaml: its values are checked below (MCORE_FIELDS)
    config = data.get("config")
    if not isinstance(config, dict) or "_target_" not in data or "_target_" not in config:
        raise MigratorError(f"{path}: no model `_target_` with a `config:` (not a NeMo 2.0 context/model.yaml)")
    config_class = str(config["_target_"])
    preset = load_model_table().preset(config_class) or {}
    values = {**preset, **{k: _plain(v) for k, v in config.items() if k != "_target_"}}
    tokenizer = data.get("tokenizer")
    return Nemo2Context(model_class=str(data["_target_"]), config_class=config_class, values=values,
                        origin=f"{CONTEXT}/model.yaml", tokenizer=tokenizer if isinstance(tokenizer, dict) else None)


def _read_io_json(path: Path) -> Nemo2Context:
    from migrator.convert.model.models import load_model_table
    from migrator.convert.read.nemo2_context import read_reference_model

    ref = read_reference_model(path)
    preset = load_model_table().preset(ref.config_class)
    if preset is None:
        raise MigratorError(f"{path}: {ref.config_class} is not in rules/nemo2_models.yaml, so the values it does "
                            f"not record are unknown; the checkpoint needs its {CONTEXT}/model.yaml")
    values = {**preset, **{k: _plain(v) for k, v in ref.config_arguments.items()}}
    return Nemo2Context(model_class=ref.model_class, config_class=ref.config_class, values=values,
                        origin=f"{CONTEXT}/io.json (+ the preset of {ref.config_class.rsplit('.', 1)[-1]})",
                        tokenizer=_io_json_tokenizer(path))


def _io_json_tokenizer(path: Path) -> dict[str, Any] | None:
    """The `<root>.model.tokenizer` object of io.json: its class and explicit leaf arguments."""
    import re

    from migrator.convert.read.nemo2_context import _meta, _pyref_name, load_io_json

    objects = load_io_json(path)
    for obj in objects.values():
        if "<root>.model.tokenizer" not in obj.get("paths", []):
            continue
        target = None
        for name, value in _meta(obj, objects).get("items", []):
            if name == "Attr(name='fn_or_cls')":
                target = _pyref_name(value) or target
        out: dict[str, Any] = {"_target_": target}
        for name, value in obj.get("items", []):
            m = re.match(r"^Attr\(name='([^']+)'\)$", name)
            if m and isinstance(value, dict) and value.get("type") == "leaf":
                out[m.group(1)] = value.get("value")
        return out if target else None
    return None


def read_context(root: Path) -> Nemo2Context:
    model_yaml = root / CONTEXT / "model.yaml"
    if model_yaml.is_file():
        context = _read_model_yaml(model_yaml)
    else:
        context = _read_io_json(root / CONTEXT / "io.json")
    check_context_values(context, f"{root}: {context.origin}")  # named as the Bridge spec names it
    return context


def context_tokenizer(root: Path, tokenizer: dict[str, Any] | None) -> TokenizerSpec:
    """The tokenizer `context/` holds, as the TokenizerSpec the writers take (files read from `context/`)."""
    from migrator.convert.model.tokenizer import HF_AUTO, HF_DIR_NAME, SENTENCEPIECE, hf_vocab_size, sentencepiece_piece_count

    context = root / CONTEXT
    if tokenizer is None:
        raise MigratorError(f"{context}: no tokenizer recorded; pass --tokenizer_path")
    target = tokenizer.get("_target_")

    def file_in_context(value: Any, what: str) -> Path:
        name = value if isinstance(value, str) else ""
        refused = MigratorError(f"{context}: tokenizer {what} {brief(value, 80)} is not a file in {CONTEXT}/; pass "
                                "--tokenizer_path")
        if not name or "\0" in name or os.path.isabs(name) or ".." in Path(name).parts:
            raise refused
        try:  # inside context/ after links are followed too: a link in context/ must not lead elsewhere
            path = (context / name).resolve()
            path.relative_to(context.resolve())
            if not path.exists():
                raise refused
        except (OSError, ValueError, RuntimeError):
            raise refused from None
        return path

    if target == _NEMO_SP:
        path = file_in_context(tokenizer.get("model_path"), "model_path")
        special = tokenizer.get("special_tokens")
        kwargs = {"model_path": path.name, "special_tokens": special or None,
                  "legacy": bool(tokenizer.get("legacy", False)), "chat_template": tokenizer.get("chat_template")}
        try:
            pieces = sentencepiece_piece_count(path.read_bytes())
        except ValueError as error:
            raise MigratorError(f"{path}: not a SentencePiece model ({error})") from None
        return TokenizerSpec(class_path=SENTENCEPIECE, kwargs=kwargs, files={path.name: path},
                             vocab_size=None if special else pieces)
    if target == _NEMO_HF:
        folder = file_in_context(tokenizer.get("pretrained_model_name"), "pretrained_model_name")
        if not folder.is_dir():
            raise MigratorError(f"{folder}: a Hugging Face tokenizer is a folder")
        kwargs = {k: v for k, v in tokenizer.items() if k not in ("_target_", "pretrained_model_name")
                  and v is not None and k in ("mask_token", "bos_token", "eos_token", "pad_token", "sep_token",
                                              "cls_token", "unk_token", "use_fast", "trust_remote_code")}
        return TokenizerSpec(class_path=HF_AUTO, kwargs={"pretrained_model_name": HF_DIR_NAME, **kwargs},
                             files={HF_DIR_NAME: folder}, vocab_size=hf_vocab_size(folder))
    raise MigratorError(f"{context}: tokenizer {target} is not supported (SentencePiece and Hugging Face "
                        "AutoTokenizer are; pass --tokenizer_path)")


class Nemo2DirSource(Source):
    """A NeMo 2.0 checkpoint directory; member names are relative to it (`weights/__0_0.distcp`)."""

    kind = "NeMo 2.0 checkpoint directory"
    linkable = True
    key_prefix = MODEL_PREFIX
    key_origin = "NeMo 2.0"

    def __init__(self, path: Path, model_config_path: Path | None = None) -> None:
        super().__init__(path)
        if model_config_path is not None:
            raise MigratorError(f"--model_config: {path} is a NeMo 2.0 checkpoint; its architecture comes from "
                                f"{CONTEXT}/")
        for sub in (WEIGHTS, CONTEXT):
            folder = path / sub
            for dirpath, _, filenames in os.walk(folder):
                for filename in filenames:
                    full = Path(dirpath) / filename
                    name = full.relative_to(path).as_posix()
                    normalize_member_name(name, str(path))  # refuses control characters
                    self.members[name] = full.stat().st_size
        self.context = read_context(path)
        self.model_config = {}  # no NeMo 1.0 model_config.yaml; the architecture is `self.context`
        self.model_config_origin = self.context.origin
        self._index()

    def _index(self) -> None:
        marker = f"{WEIGHTS}/metadata.json"
        self.backend = self.read_backend_marker(marker)
        if self.backend != "torch_dist":
            raise MigratorError(f"{self.describe(marker)}: sharded_backend {self.backend!r}; a NeMo 2.0 checkpoint "
                                "directory is read when it is torch_dist")
        index_name = f"{WEIGHTS}/.metadata"
        if index_name not in self.members:
            raise MigratorError(f"{self.describe(index_name)}: missing (a torch_dist checkpoint needs its index)")
        index = parse_dcp_metadata(self.read_small_member(index_name, MAX_INDEX_BYTES), self.describe(index_name),
                                   WEIGHTS)
        dropped: dict[str, int] = {}
        for key in list(index.tensors):
            if not key.startswith(MODEL_PREFIX):
                group = key.split(".", 1)[0]
                dropped[group] = dropped.get(group, 0) + 1
                self.dropped_bytes += sum(c.byte_length for c in index.chunks[key])
                del index.tensors[key], index.chunks[key]
        for key in list(index.objects):
            if not key.startswith(MODEL_PREFIX):
                group = key.split(".", 1)[0]
                dropped[group] = dropped.get(group, 0) + 1
                self.dropped_bytes += index.objects[key].byte_length
                del index.objects[key]
        self.dropped_what = ", ".join(f"{n} {g}.* entries" for g, n in sorted(dropped.items()))
        for key, chunks in index.chunks.items():
            for chunk in chunks:
                self._check_range(chunk.member, chunk.byte_offset + chunk.byte_length, key)
        for key, obj in index.objects.items():
            self._check_range(obj.member, obj.byte_offset + obj.byte_length, key)
        check_chunk_headers(index.chunks, self.open_member, self.describe)
        if not index.tensors:
            raise MigratorError(f"{self.describe(index_name)}: no `{MODEL_PREFIX}` tensors (not a NeMo 2.0 model "
                                "checkpoint)")
        self.dcp_index = index
        self.tensors, self.chunks, self.objects = index.tensors, index.chunks, index.objects

    def note_dropped(self, warn: Callable[[str], None]) -> None:
        if self.dropped_what:
            warn(f"{self.path / WEIGHTS}: {self.dropped_what} (optimizer and training state) are not converted; "
                 "the output holds the model only")

    def file(self, name: str) -> Path:
        safe = normalize_member_name(name, str(self.path))
        if safe is None or not safe.startswith((WEIGHTS + "/", CONTEXT + "/")):
            raise MigratorError(f"{self.path}: {name} is not part of a NeMo 2.0 checkpoint")
        return self.path / safe

    def describe(self, name: str) -> str:
        return str(self.path / name)

    read_member = read_file_member
    open_member = open_file_member

    def copy_member(self, name: str, dest: Path, *, link: bool = False, progress=None, cancel=None) -> str:
        path = self.file(name)
        if link:
            return link_or_copy(path, dest, progress=progress, cancel=cancel)
        copy_file(path, dest, progress=progress, cancel=cancel)
        return "copy"
