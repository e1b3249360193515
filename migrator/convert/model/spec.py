"""What the converter writes into `context/`: the NeMo 2.0 model description and the tokenizer description.

These two plain dataclasses are the interface between the weights side of the converter (reading and
writing tensors, the pipeline) and the context side (deriving the architecture, writing `context/io.json`,
`context/model.yaml` and the tokenizer artifacts). They hold Python values only, never NeMo objects, so the
project never has to import NeMo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelSpec:
    """The NeMo 2.0 model that a converted checkpoint describes.

    `config_kwargs` are exactly the arguments recorded in io.json for the config class (NeMo's io records only
    explicitly passed init arguments): plain Python values, with torch dtypes written as strings
    "torch.bfloat16" / "torch.float16" / "torch.float32", and callables as "module.attr" strings under the
    keys listed in `config_callables`.
    """

    family: str  # "llama", "mixtral", "mistral", "nemotron", "nemotronh", "gpt", ...
    model_class: str  # "nemo.collections.llm.gpt.model.llama.LlamaModel"
    config_class: str  # "nemo.collections.llm.gpt.model.llama.LlamaConfig" (or a preset class)
    config_kwargs: dict[str, Any]  # explicit arguments written into io.json
    # NeMo 2.0 tensor keys (module.*) the model has, for --strict; None if unknown. `_extra_state` sharded objects
    # are not listed: they belong to the module whose key precedes `._extra_state` and are always carried.
    expected_keys: set[str] | None
    warnings: list[str] = field(default_factory=list)
    # Where the model came from: a model id of NeMo's script, a NeMo 2.0 checkpoint path, or "inferred".
    model_id: str | None = None
    # config_kwargs keys whose string value names a Python callable (e.g. activation_func -> torch.nn.functional.silu)
    config_callables: set[str] = field(default_factory=set)
    padded_vocab_size: int | None = None  # rows of the word embeddings in the checkpoint
    source_dtype: str | None = None  # dtype of the source word embeddings, e.g. "bfloat16"
    origin: str = ""  # how the classes were chosen, for the plan: "--model_id X" or "inferred from the tensors"


@dataclass
class TokenizerSpec:
    """The tokenizer object of the NeMo 2.0 model and the files it needs inside `context/`."""

    class_path: str  # e.g. "nemo.collections.common.tokenizers.sentencepiece_tokenizer.SentencePieceTokenizer"
    kwargs: dict[str, Any]  # init args; artifact args refer to file names inside context/
    files: dict[str, bytes | Path]  # context-relative name -> content or a local path to copy (file or folder)
    # tokens the NeMo 2.0 tokenizer object will report (len(tokenizer)), when known without loading it; used to
    # check that NeMo 2.0's vocab padding reproduces the checkpoint's embedding rows
    vocab_size: int | None = None
