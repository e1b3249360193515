"""resolve_tokenizer: SentencePiece from the .nemo, Hugging Face folders, tiktoken, overrides and refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.convert.model.tokenizer import (
    HF_AUTO, SENTENCEPIECE, TIKTOKEN, hf_vocab_size, resolve_tokenizer, sentencepiece_piece_count,
)
from migrator.errors import MigratorError
from tests.convert.context_helpers import TINY_LLAMA, TINY_MIXTRAL, checkpoint


def tok_section(**changes):
    ck = checkpoint(TINY_LLAMA)
    cfg = ck.config()
    section = dict(cfg["tokenizer"])
    for key, value in changes.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    cfg["tokenizer"] = section
    return cfg


def resolve(cfg=None, tokenizer_path=None, library=None, vocab_file=None, model_name=None, input_dir=None):
    ck = checkpoint(TINY_LLAMA)
    return resolve_tokenizer(ck.config() if cfg is None else cfg, ck.read_member, tokenizer_path, library,
                             vocab_file, model_name, input_dir=input_dir)


def sp_member() -> tuple[str, bytes]:
    ck = checkpoint(TINY_LLAMA)
    name = ck.model_config["tokenizer"]["model"].split("nemo:", 1)[1]
    return name, ck.read_member(name)


def hf_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hf_tok"
    folder.mkdir()
    vocab = {f"t{i}": i for i in range(50)}
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []},
                                                       "added_tokens": [{"id": 50, "content": "<|endoftext|>"}]}))
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def test_sentencepiece_model_from_the_nemo_keeps_legacy_and_special_tokens():
    name, content = sp_member()
    tok = resolve()
    assert tok.class_path == SENTENCEPIECE
    assert tok.kwargs == {"model_path": name, "special_tokens": None, "legacy": False, "chat_template": None}
    assert tok.files == {name: content}
    assert tok.vocab_size == 100 == sentencepiece_piece_count(content)


def test_mixtral_fixture_tokenizer_too():
    ck = checkpoint(TINY_MIXTRAL)
    tok = resolve_tokenizer(ck.config(), ck.read_member, None, None, None, None)
    assert tok.class_path == SENTENCEPIECE and list(tok.files) == [tok.kwargs["model_path"]]


def test_legacy_defaults_to_true_like_nemo1_when_the_key_is_absent():
    assert resolve(tok_section(sentencepiece_legacy=None)).kwargs["legacy"] is True


def test_special_tokens_and_chat_template_are_kept_with_legacy():
    special = ["<extra_id_0>", "<extra_id_1>"]
    chat = {"system": "x"}
    tok = resolve(tok_section(sentencepiece_legacy=True, special_tokens=special, chat_template=chat))
    assert (tok.kwargs["legacy"], tok.kwargs["special_tokens"], tok.kwargs["chat_template"]) == (True, special, chat)
    assert tok.vocab_size is None  # added special tokens: NeMo's count is not the piece count any more


def test_special_tokens_without_legacy_are_refused_as_nemo_would():
    with pytest.raises(MigratorError, match=r"special_tokens needs sentencepiece_legacy: true"):
        resolve(tok_section(special_tokens=["<x>"]))


def test_megatron_gpt_sentencepiece_is_a_sentencepiece_tokenizer():
    tok = resolve(tok_section(library="megatron", type="GPTSentencePieceTokenizer", sentencepiece_legacy=None))
    assert tok.class_path == SENTENCEPIECE and tok.kwargs["legacy"] is False


def test_tokenizer_path_overrides_the_nemo_sentencepiece_model(tmp_path):
    _, content = sp_member()
    other = tmp_path / "other.model"
    other.write_bytes(content)
    tok = resolve(tokenizer_path=str(other))
    assert tok.kwargs["model_path"] == "other.model" and tok.files == {"other.model": other}
    assert tok.kwargs["legacy"] is False  # the YAML described a SentencePiece tokenizer too: its settings stay


def test_tokenizer_path_to_a_hf_folder_overrides_a_sentencepiece_nemo(tmp_path):
    folder = hf_folder(tmp_path)
    tok = resolve(tokenizer_path=str(folder))
    assert tok.class_path == HF_AUTO and tok.kwargs == {"pretrained_model_name": "nemo_tokenizer"}
    assert tok.files == {"nemo_tokenizer": folder} and tok.vocab_size == 51


def test_hf_tokenizer_from_the_yaml_is_looked_up_next_to_the_input(tmp_path):
    folder = hf_folder(tmp_path)
    cfg = tok_section(library="huggingface", type=folder.name, model=None, use_fast=True,
                      special_tokens={"bos_token": "<|endoftext|>", "pad_token": None})
    tok = resolve(cfg, input_dir=tmp_path)
    assert tok.files == {"nemo_tokenizer": folder}
    assert tok.kwargs == {"pretrained_model_name": "nemo_tokenizer", "bos_token": "<|endoftext|>", "use_fast": True}


def test_hf_hub_name_without_a_local_folder_asks_for_tokenizer_path(tmp_path):
    cfg = tok_section(library="huggingface", type="meta-llama/Meta-Llama-3-8B", model=None)
    with pytest.raises(MigratorError, match=r"^model_config\.yaml: tokenizer\.type 'meta-llama/Meta-Llama-3-8B' .*"
                                            r"--tokenizer_path .*no network"):
        resolve(cfg, input_dir=tmp_path)


def test_tiktoken_vocab_file(tmp_path):
    vocab = tmp_path / "tokenizer.json"
    vocab.write_text("[]")
    tok = resolve(vocab_file=str(vocab))
    assert (tok.class_path, tok.kwargs, tok.files) == (TIKTOKEN, {"vocab_file": "tokenizer.json"},
                                                       {"tokenizer.json": vocab})
    with pytest.raises(MigratorError, match=r"^--tokenizer_vocab_file: tokenizer huggingface/gpt2 is not supported"):
        resolve(vocab_file=str(vocab), library="huggingface", model_name="gpt2")
    with pytest.raises(MigratorError, match=r"^--tokenizer_vocab_file .*/missing\.json: no such file"):
        resolve(vocab_file=str(tmp_path / "missing.json"))


@pytest.mark.parametrize("section, match", [
    ({"library": "megatron", "type": "GPT2BPETokenizer", "model": None},
     r"^model_config\.yaml: tokenizer 'megatron/GPT2BPETokenizer' is not supported"),
    ({"library": "byte-level", "type": None, "model": None}, r"tokenizer 'byte-level' is not supported"),
    ({"model": "nemo:nothere_tokenizer.model"},
     r"^nothere_tokenizer\.model: tokenizer\.model named by model_config\.yaml is not in the checkpoint; pass"),
    ({"model": None}, r"tokenizer\.model is missing"),
])
def test_unsupported_or_broken_tokenizers_are_errors_naming_them(section, match):
    with pytest.raises(MigratorError, match=match):
        resolve(tok_section(**section))


def test_no_tokenizer_at_all_is_an_error():
    cfg = checkpoint(TINY_LLAMA).config(tokenizer=None)
    with pytest.raises(MigratorError, match=r"no tokenizer section; pass --tokenizer_path"):
        resolve(cfg)


def test_bad_tokenizer_path_arguments(tmp_path):
    with pytest.raises(MigratorError, match=r"^--tokenizer_path .*: no such file or folder"):
        resolve(tokenizer_path=str(tmp_path / "nope"))
    not_sp = tmp_path / "x.model"
    not_sp.write_bytes(b"hello world, not a protobuf")
    with pytest.raises(MigratorError, match=r"^x\.model: not a SentencePiece model"):
        resolve(tokenizer_path=str(not_sp))
    with pytest.raises(MigratorError, match=r"is not a folder"):
        resolve(tokenizer_path=str(not_sp), library="huggingface")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MigratorError, match=r"not a Hugging Face tokenizer folder"):
        resolve(tokenizer_path=str(empty))
    with pytest.raises(MigratorError, match=r"^--tokenizer_library regex: unsupported tokenizer"):
        resolve(tokenizer_path=str(empty), library="regex")


def test_hf_vocab_size_from_vocab_json_and_added_tokens(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "c": 2}))
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<pad>": 3, "a": 0}))
    assert hf_vocab_size(tmp_path) == 4
    (tmp_path / "tokenizer.json").write_text("{not json")
    assert hf_vocab_size(tmp_path) is None


def test_missing_member_through_the_real_source_reader_keeps_its_message():
    from migrator.convert.read.source import open_source

    cfg = tok_section(model="nemo:nothere_tokenizer.model")
    with open_source(TINY_LLAMA) as source:
        with pytest.raises(MigratorError, match=r"^nothere_tokenizer\.model: tokenizer\.model named by .* "
                                                r"is not in the checkpoint \(.*nothere_tokenizer\.model.*\); pass"):
            resolve_tokenizer(cfg, source.read_member, None, None, None, None)
