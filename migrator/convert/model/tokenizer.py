"""Resolve the NeMo 2.0 tokenizer of a converted checkpoint, offline, keeping what NeMo 1.0 configured.

Sources, in order (as NeMo's converter, except that `--tokenizer_path` also overrides a `.nemo`'s tokenizer):
1. `--tokenizer_vocab_file` (+ `--tokenizer_model_name`, `--tokenizer_library`): a tiktoken vocabulary file.
2. `--tokenizer_path`: a SentencePiece `.model` file or a local Hugging Face tokenizer folder.
3. The `.nemo`'s `tokenizer:` section: a SentencePiece model stored in the `.nemo` (`model: nemo:<member>`), a
   tiktoken vocabulary stored in it, or a Hugging Face tokenizer whose `type` names a folder beside the input (the
   `.nemo`'s folder, or inside an extracted one). That folder is the one file set read from outside the checkpoint
   without being named on the command line, so it is confined (`beside_folder`): a relative name without `..`, the
   folder and every file in it resolving inside it, regular files only; a `note` line says which folder was used.
NeMo 1.0's `sentencepiece_legacy`, `special_tokens` and `chat_template` are kept (NeMo's converter drops them), and
there is never a network access: a Hugging Face tokenizer that is only a hub name needs `--tokenizer_path`.
"""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from migrator.convert.model.nemo1_values import check_tokenizer_section
from migrator.convert.model.spec import TokenizerSpec
from migrator.errors import MigratorError

SENTENCEPIECE = "nemo.collections.common.tokenizers.sentencepiece_tokenizer.SentencePieceTokenizer"
HF_AUTO = "nemo.collections.common.tokenizers.huggingface.auto_tokenizer.AutoTokenizer"
TIKTOKEN = "nemo.collections.common.tokenizers.tiktoken_tokenizer.TiktokenTokenizer"
HF_DIR_NAME = "nemo_tokenizer"  # the folder name NeMo's converter uses inside context/
# NeMo 1.0 special-token keys that NeMo 2.0's AutoTokenizer takes as init arguments
_HF_SPECIAL = ("mask_token", "bos_token", "eos_token", "pad_token", "sep_token", "cls_token", "unk_token")
_HF_MARKERS = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")

ReadMember = Callable[[str], bytes]
Note = Callable[[str], None]
MAX_FOLDER_ENTRIES = 10_000  # a tokenizer folder holds a handful of files; a larger tree is not one


def sentencepiece_piece_count(model: bytes) -> int:
    """Number of pieces in a SentencePiece ModelProto (repeated field 1), read from the protobuf wire format."""
    count, pos, end = 0, 0, len(model)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= end:
                raise ValueError("truncated varint")
            byte = model[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while pos < end:
        tag = varint()
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            varint()
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length = varint()  # (not `pos += varint()`: that would add to the value of pos read before the call)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")
        if field == 1 and wire == 2:
            count += 1
    return count


def hf_vocab_size(folder: Path) -> int | None:
    """`len(tokenizer)` of a Hugging Face tokenizer folder (vocabulary plus added tokens), when it can be read."""
    ids: set[int] = set()
    tok_json = folder / "tokenizer.json"
    try:
        if tok_json.is_file():
            data = json.loads(tok_json.read_text(encoding="utf-8"))
            vocab = data.get("model", {}).get("vocab")
            if isinstance(vocab, dict):
                ids.update(int(i) for i in vocab.values())
            elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
                ids.update(range(len(vocab)))
            ids.update(int(t["id"]) for t in data.get("added_tokens", []))
        elif (folder / "vocab.json").is_file():
            ids.update(int(i) for i in json.loads((folder / "vocab.json").read_text(encoding="utf-8")).values())
            added = folder / "added_tokens.json"
            if added.is_file():
                ids.update(int(i) for i in json.loads(added.read_text(encoding="utf-8")).values())
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return len(ids) or None


def _plain(value: Any) -> Any:
    """OmegaConf containers arrive as plain dicts/lists already; tuples become lists for JSON."""
    if isinstance(value, tuple):
        return list(value)
    return value


def _sentencepiece(name: str, content: bytes | Path, tok_cfg: dict[str, Any], default_legacy: bool) -> TokenizerSpec:
    """NeMo 2.0 SentencePieceTokenizer with NeMo 1.0's `legacy`, special tokens and chat template."""
    data = content.read_bytes() if isinstance(content, Path) else content
    try:
        pieces: int | None = sentencepiece_piece_count(data)
    except ValueError as e:
        raise MigratorError(f"{name}: not a SentencePiece model ({e})") from None
    if not pieces:
        raise MigratorError(f"{name}: not a SentencePiece model (no pieces)")
    legacy = tok_cfg.get("sentencepiece_legacy", default_legacy)
    special = _plain(tok_cfg.get("special_tokens"))
    if special and not legacy:
        raise MigratorError("model_config.yaml: tokenizer.special_tokens needs sentencepiece_legacy: true "
                            "(NeMo's SentencePieceTokenizer refuses special tokens otherwise)")
    kwargs = {"model_path": name, "special_tokens": special or None, "legacy": bool(legacy),
              "chat_template": _plain(tok_cfg.get("chat_template"))}
    return TokenizerSpec(class_path=SENTENCEPIECE, kwargs=kwargs, files={name: content},
                         vocab_size=None if special else pieces)


def _huggingface(folder: Path, tok_cfg: dict[str, Any], origin: str) -> TokenizerSpec:
    if not folder.is_dir():
        raise MigratorError(f"{origin}: {folder} is not a folder (a Hugging Face tokenizer is a folder)")
    if not any((folder / m).is_file() for m in _HF_MARKERS):
        raise MigratorError(f"{origin}: {folder} has none of {', '.join(_HF_MARKERS)} (not a Hugging Face "
                            f"tokenizer folder)")
    kwargs: dict[str, Any] = {"pretrained_model_name": HF_DIR_NAME}
    special = _plain(tok_cfg.get("special_tokens")) or {}
    if isinstance(special, dict):
        for key in _HF_SPECIAL:
            if special.get(key) is not None:
                kwargs[key] = special[key]
    if tok_cfg.get("use_fast"):
        kwargs["use_fast"] = True
    if tok_cfg.get("trust_remote_code"):
        kwargs["trust_remote_code"] = True
    return TokenizerSpec(class_path=HF_AUTO, kwargs=kwargs, files={HF_DIR_NAME: folder},
                         vocab_size=hf_vocab_size(folder))


def _tiktoken(name: str, content: bytes | Path) -> TokenizerSpec:
    return TokenizerSpec(class_path=TIKTOKEN, kwargs={"vocab_file": name}, files={name: content}, vocab_size=None)


def _member_name(reference: str) -> str:
    return reference.split("nemo:", 1)[-1] if reference.startswith("nemo:") else reference


def _read(read_member: ReadMember | None, reference: str, what: str) -> tuple[str, bytes | Path]:
    """A tokenizer file named in model_config.yaml: a member of the checkpoint (`nemo:<name>` or a relative name),
    never a file outside it. An absolute name or one that climbs out with `..` (`/etc/passwd`,
    `/proc/self/environ`, a path on the training cluster) is never read implicitly: the user passes the file with
    --tokenizer_path."""
    name = _member_name(reference)
    if os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == "..":
        raise MigratorError(f"model_config.yaml: {what} {reference!r} names a file outside the checkpoint, which is "
                            f"never read implicitly; pass it with --tokenizer_path")
    if read_member is not None:
        try:
            return os.path.basename(name), read_member(name)
        except (KeyError, FileNotFoundError, MigratorError) as e:
            why = f" ({e})" if isinstance(e, MigratorError) else ""
            raise MigratorError(f"{name}: {what} named by model_config.yaml is not in the checkpoint{why}; "
                                f"pass --tokenizer_path") from None
    raise MigratorError(f"model_config.yaml: {what} {reference!r} is not in the checkpoint; pass --tokenizer_path")


def _outside(name: str, why: str) -> MigratorError:
    return MigratorError(f"model_config.yaml: tokenizer.type {name!r} {why}; a Hugging Face tokenizer folder is read "
                         f"implicitly only from beside the checkpoint; pass the folder with --tokenizer_path")


def _check_tree(folder: Path, real: Path, refuse: Callable[[str], MigratorError], confine: bool = True) -> None:
    """Every entry of the folder is a regular file or a folder (a FIFO or a device would hang or flood the copy);
    with `confine`, a link only to a regular file inside the folder."""
    entries = 0
    for root, dirs, files in os.walk(real, followlinks=False):
        for entry in [*dirs, *files]:
            entries += 1
            if entries > MAX_FOLDER_ENTRIES:
                raise refuse(f"holds more than {MAX_FOLDER_ENTRIES} entries (not a tokenizer folder)")
            path = Path(root) / entry
            shown = folder / path.relative_to(real)
            try:
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode):
                    target = path.resolve(strict=True)
                    if confine and not target.is_relative_to(real):
                        raise refuse(f"has {shown}, a link to {target}, outside the folder")
                    info = target.stat()
                    if confine and stat.S_ISDIR(info.st_mode):
                        raise refuse(f"has {shown}, a link to a folder")
            except (OSError, RuntimeError) as error:  # a dangling or looping link
                raise refuse(f"has {shown}, which cannot be read "
                             f"({getattr(error, 'strerror', None) or error})") from None
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise refuse(f"has {shown}, which is not a regular file")


def beside_folder(name: str, input_dir: Path) -> Path | None:
    """The Hugging Face tokenizer folder `tokenizer.type` names beside the input, confined to `input_dir`: None when
    there is no such folder (a hub name), a MigratorError when the name or a link leaves that place."""
    if not name or "\0" in name:
        return None
    if os.path.isabs(name) or name.startswith("~"):
        raise _outside(name, "is an absolute path")
    if ".." in Path(name).parts:
        raise _outside(name, "climbs out of the checkpoint's folder with '..'")
    folder = input_dir / name
    if not folder.is_dir():
        return None
    base = input_dir.resolve()
    real = folder.resolve()
    if real == base or not real.is_relative_to(base):
        raise _outside(name, f"resolves to {real}, outside {base}" if real != base else
                       "is the checkpoint's own folder")
    _check_tree(folder, real, lambda why: _outside(name, why))
    return folder


def resolve_tokenizer(model_config: dict | None, read_member: ReadMember | None, tokenizer_path: str | None,
                      tokenizer_library: str | None, tokenizer_vocab_file: str | None,
                      tokenizer_model_name: str | None, input_dir: Path | None = None,
                      note: Note | None = None) -> TokenizerSpec:
    """The tokenizer for context/: class, init arguments (artifacts as context-relative names) and files.

    `read_member(name) -> bytes` reads a `.nemo` member (KeyError/FileNotFoundError if absent); `input_dir` is
    the folder that holds the input, the only place a Hugging Face `tokenizer.type` folder is looked up; `note`
    receives the line saying that such a folder is used.
    """
    section = (model_config or {}).get("tokenizer")
    check_tokenizer_section(section, lambda key: "model_config.yaml")
    tok_cfg: dict[str, Any] = dict(section or {})
    library = (tokenizer_library or "").lower() or None

    if tokenizer_vocab_file:
        path = Path(tokenizer_vocab_file).expanduser()
        if not path.is_file():
            raise MigratorError(f"--tokenizer_vocab_file {tokenizer_vocab_file}: no such file")
        model_name = tokenizer_model_name or "TiktokenTokenizer"
        if (library or "tiktoken") == "tiktoken" and model_name == "TiktokenTokenizer":
            return _tiktoken(path.name, path)
        raise MigratorError(f"--tokenizer_vocab_file: tokenizer {library}/{model_name} is not supported offline "
                            f"(supported: --tokenizer_library tiktoken --tokenizer_model_name TiktokenTokenizer)")

    if tokenizer_path:
        path = Path(tokenizer_path).expanduser()
        if not path.exists():
            raise MigratorError(f"--tokenizer_path {tokenizer_path}: no such file or folder")
        library = library or ("huggingface" if path.is_dir() else "sentencepiece")
        # keep NeMo 1.0's settings only if the YAML described the same kind of tokenizer
        same_kind = str(tok_cfg.get("library", "")).lower() == library
        kept = tok_cfg if same_kind else {}
        if library == "sentencepiece":
            if not path.is_file():
                raise MigratorError(f"--tokenizer_path {tokenizer_path}: a SentencePiece tokenizer is a .model file")
            return _sentencepiece(path.name, path, kept, default_legacy=same_kind)
        if library == "huggingface":
            if path.is_dir():  # the user's own folder: links may lead anywhere, but only regular files are read
                _check_tree(path, path.resolve(), lambda why: MigratorError(f"--tokenizer_path {tokenizer_path}: "
                                                                            f"{why}"), confine=False)
            return _huggingface(path, kept, f"--tokenizer_path {tokenizer_path}")
        if library == "tiktoken" and path.is_file():
            return _tiktoken(path.name, path)
        raise MigratorError(f"--tokenizer_library {library}: unsupported tokenizer (sentencepiece, huggingface, "
                            f"tiktoken)")

    if not tok_cfg:
        raise MigratorError("model_config.yaml: no tokenizer section; pass --tokenizer_path (and "
                            "--tokenizer_library)")
    yaml_library = str(tok_cfg.get("library", "")).lower()
    yaml_type = tok_cfg.get("type")
    model_ref = tok_cfg.get("model")
    if yaml_library == "sentencepiece" or (yaml_library == "megatron" and yaml_type == "GPTSentencePieceTokenizer"):
        if not model_ref:
            raise MigratorError("model_config.yaml: tokenizer.model is missing for a SentencePiece tokenizer")
        name, content = _read(read_member, str(model_ref), "tokenizer.model")
        # NeMo 1.0 (_build_tokenizer): legacy defaults to True for library sentencepiece when the key is absent
        return _sentencepiece(name, content, tok_cfg, default_legacy=yaml_library == "sentencepiece")
    if yaml_library == "huggingface":
        folder = beside_folder(str(yaml_type), input_dir) if yaml_type and input_dir is not None else None
        if folder is None:
            raise MigratorError(f"model_config.yaml: tokenizer.type {yaml_type!r} is a Hugging Face tokenizer that "
                                f"the checkpoint does not contain and that is not a local folder; pass its folder "
                                f"with --tokenizer_path (there is no network access)")
        spec = _huggingface(folder, tok_cfg, f"model_config.yaml: tokenizer.type {yaml_type}")
        if note is not None:
            note(f"using the Hugging Face tokenizer folder {folder} beside the checkpoint (model_config.yaml "
                 f"tokenizer.type {yaml_type!r}); --tokenizer_path chooses another")
        return spec
    if yaml_library == "tiktoken":
        vocab_ref = tok_cfg.get("vocab_file")
        if not vocab_ref:
            raise MigratorError("model_config.yaml: tokenizer.vocab_file is missing for a tiktoken tokenizer")
        name, content = _read(read_member, str(vocab_ref), "tokenizer.vocab_file")
        return _tiktoken(name, content)
    described = f"{yaml_library}/{yaml_type}" if yaml_type else yaml_library
    raise MigratorError(f"model_config.yaml: tokenizer {described!r} is not supported (supported: sentencepiece, "
                        f"huggingface with a local folder, tiktoken; or pass --tokenizer_path)")
