"""`verify OUT --load`: build the GPT model OUT's config describes with megatron-core, on CPU, and load OUT into it.

The model is megatron-core's `GPTModel` with the local (non-Transformer-Engine) layer spec, in a single-process gloo
group with TP=PP=1; its config is read as data by `model/mcore_config.py`. Before loading, every key of the model's
own `sharded_state_dict` is compared with the checkpoint's index (present, same global shape, a dtype that loads without
loss); then `megatron.core.dist_checkpointing.load` reads the checkpoint into that state dict (missing keys are
returned and reported, as with `strict="return_all"`) and `load_state_dict(strict=True)` puts it into the model.
With tokens, a forward pass follows and a checksum of the logits is reported.

megatron-core is imported here only (lazily), never on the lint path. What CPU needs, kept to the duration of
this check and restored afterwards (megatron-core 0.16; its `../oracle` shims do the same for NeMo and Bridge):
- `torch.cuda.current_device()` -> "cpu" during the forward pass: the rotary embedding moves `inv_freq` to it;
- `CudaRNGStatesTracker.fork` -> a null context during the forward pass (no CUDA RNG state exists on CPU);
- MoE only: megatron-core's `moe_utils` leaves its Transformer Engine helper names (`te_general_gemm`, `fused_*`)
  undefined without TE, and the router tests `te_general_gemm is not None` (a NameError); they are set to None
  when missing, which selects megatron-core's own torch code paths.
- The causal attention mask is passed explicitly (megatron-core's default one is made on "cuda").
- The local spec's torch LayerNorm has no zero-centred gamma (`layernorm1p`, Nemotron): the model is built with a
  plain LayerNorm and 1 is added to the loaded norm weights, which computes the same function.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

from migrator.convert.model.mcore_config import LoadTarget, find_load_target
from migrator.errors import MigratorError

# Fusions and parallelism a single CPU process runs; initialisation is skipped (every weight is loaded).
_CPU_SETTINGS = {
    "use_cpu_initialization": True, "perform_initialization": False, "apply_rope_fusion": False,
    "persist_layer_norm": False, "masked_softmax_fusion": False, "bias_activation_fusion": False,
    "bias_dropout_fusion": False, "gradient_accumulation_fusion": False, "moe_grouped_gemm": False,
    "moe_permute_fusion": False, "sequence_parallel": False, "tensor_model_parallel_size": 1,
    "pipeline_model_parallel_size": 1, "context_parallel_size": 1, "expert_model_parallel_size": 1,
    "layernorm_zero_centered_gamma": False, "hidden_dropout": 0.0, "attention_dropout": 0.0,
}
_MOE_TE_NAMES = ("te_general_gemm", "fused_topk_with_score_function", "fused_permute", "fused_unpermute",
                 "fused_permute_with_probs", "fused_sort_chunks_by_index", "fused_sort_chunks_by_index_with_probs",
                 "fused_moe_aux_loss", "fused_compute_score_for_moe_aux_loss")
_LOSSLESS = {("bfloat16", "float32"), ("float16", "float32")}  # stored -> parameter: an exact upcast


@dataclasses.dataclass
class LoadResult:
    checks: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    logits: Any = None  # the forward pass's logits (a torch tensor), when tokens were given


def megatron_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("megatron-core")
    except PackageNotFoundError:
        return "unknown"


def _import_megatron() -> Any:
    """megatron.core with its import-time warnings (no Transformer Engine, no Apex: expected here) silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import megatron.core  # noqa: F401
            from megatron.core import dist_checkpointing, parallel_state  # noqa: F401
            from megatron.core.models.gpt import GPTModel  # noqa: F401
            from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec  # noqa: F401
            from megatron.core.transformer.transformer_config import TransformerConfig  # noqa: F401
    except ImportError as error:
        raise MigratorError(f"verify --load needs megatron-core ({error}); install the [verify] extra: "
                            "pip install 'nemo-migrator[verify]'") from None
    for name in ("megatron", "megatron.core"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return megatron.core


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    """A single-process gloo group (a file store in a temporary folder: no port) with TP=PP=1."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    created = not dist.is_initialized()
    with tempfile.TemporaryDirectory(prefix="nemo-migrate-load-") as tmp:
        if created:
            dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            parallel_state.initialize_model_parallel(1, 1)
            try:
                yield
            finally:
                parallel_state.destroy_model_parallel()
        finally:
            if created:
                dist.destroy_process_group()


@contextlib.contextmanager
def _cpu_forward() -> Iterator[None]:
    import torch
    from megatron.core.tensor_parallel import random as mcore_random

    saved = torch.cuda.current_device, mcore_random.CudaRNGStatesTracker.fork
    torch.cuda.current_device = lambda: "cpu"
    mcore_random.CudaRNGStatesTracker.fork = lambda self, *a, **k: contextlib.nullcontext()
    try:
        yield
    finally:
        torch.cuda.current_device, mcore_random.CudaRNGStatesTracker.fork = saved


def _moe_names() -> None:
    import megatron.core.transformer.moe.moe_utils as moe_utils

    for name in _MOE_TE_NAMES:
        if not hasattr(moe_utils, name):
            setattr(moe_utils, name, None)


def _activation(name: str) -> Any:
    import torch.nn.functional as F
    from megatron.core import activations

    return {"silu": F.silu, "gelu": F.gelu, "relu": F.relu, "squared_relu": activations.squared_relu,
            "quick_gelu": activations.quick_gelu, "fast_gelu": activations.fast_gelu}[name]


def _index(checkpoint: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], set[str]]:
    """The checkpoint's tensors (key -> global shape, dtype name) and sharded-object keys, from its .metadata."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    try:
        metadata = FileSystemReader(str(checkpoint)).read_metadata()
    except Exception as error:  # noqa: BLE001 - one line for the user
        raise MigratorError(f"{checkpoint / '.metadata'}: unreadable ({type(error).__name__}: {error})") from None
    tensors, objects = {}, set()
    for key, meta in metadata.state_dict_metadata.items():
        if isinstance(meta, TensorStorageMetadata):
            tensors[key] = (tuple(meta.size), str(meta.properties.dtype).removeprefix("torch."))
        else:
            objects.add(key)
    return tensors, objects


def _build(target: LoadTarget, vocab_size: int) -> Any:
    import torch
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig

    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    kwargs = dict(target.transformer)
    if "activation_func" in kwargs:
        kwargs["activation_func"] = _activation(kwargs["activation_func"])
    if kwargs.get("params_dtype") is not None:
        kwargs["params_dtype"] = getattr(torch, kwargs["params_dtype"].removeprefix("torch."))
    kwargs.update(_CPU_SETTINGS)
    kwargs = {k: v for k, v in kwargs.items() if k in fields}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = TransformerConfig(**kwargs)
            spec = get_gpt_layer_local_spec(num_experts=config.num_moe_experts, moe_grouped_gemm=False,
                                            qk_layernorm=config.qk_layernorm, normalization=config.normalization)
            model = GPTModel(config, spec, vocab_size=vocab_size,
                             max_sequence_length=target.seq_length or 1024, **target.model)
    except Exception as error:  # noqa: BLE001 - megatron-core's checks raise many kinds: one line for the user
        raise MigratorError(f"{target.config_file}: megatron-core cannot build this model on CPU "
                            f"({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''})"
                            ) from None
    if target.rope_scaling and hasattr(model, "rotary_pos_emb"):
        r = target.rope_scaling
        emb = model.rotary_pos_emb
        emb.inv_freq = emb._apply_scaling(emb.inv_freq, factor=r["scale_factor"], low_freq_factor=r["low_freq_factor"],
                                          high_freq_factor=r["high_freq_factor"],
                                          original_max_position_embeddings=r["old_context_len"])
    return model


def _sharded_items(model: Any, prefix: str) -> Iterator[Any]:
    """The ShardedTensors and ShardedObjects of the model's sharded state dict, factories built (a fresh state dict:
    building factories changes it in place, and `load` must get one with its factories)."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import apply_factories

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sharded = model.sharded_state_dict(prefix=prefix)
    apply_factories(sharded)
    yield from nested_values(sharded)


def _compare_index(model: Any, tensors: dict[str, tuple[tuple[int, ...], str]], objects: set[str],
                   target: LoadTarget, result: LoadResult) -> tuple[int, int]:
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor

    where = target.config_file.parent.name + "/" + target.config_file.name
    expected: dict[str, tuple[tuple[int, ...], str]] = {}
    expected_objects: set[str] = set()
    for item in _sharded_items(model, target.prefix):
        if isinstance(item, ShardedTensor):
            expected[item.key] = (tuple(item.global_shape), str(item.dtype).removeprefix("torch."))
        elif isinstance(item, ShardedObject):
            expected_objects.add(item.unique_key)
    casts = []
    for key, (shape, dtype) in sorted(expected.items()):
        if key not in tensors:
            result.problems.append(f"{key}: missing in {target.checkpoint} (the model built from {where} needs "
                                   f"{list(shape)} {dtype})")
            continue
        stored_shape, stored_dtype = tensors[key]
        if stored_shape != shape:
            result.problems.append(f"{key}: {list(stored_shape)} in {target.checkpoint}, but the model built from "
                                   f"{where} needs {list(shape)}")
        elif stored_dtype != dtype:
            if (stored_dtype, dtype) in _LOSSLESS:
                casts.append(key)
            else:
                result.problems.append(f"{key}: stored as {stored_dtype}, the model built from {where} holds it "
                                       f"as {dtype} (not an exact cast)")
    for key in sorted(expected_objects - objects):
        result.problems.append(f"{key}: sharded object missing in {target.checkpoint}")
    for key in sorted(set(tensors) - set(expected)):
        result.problems.append(f"{key}: in {target.checkpoint}, but the model built from {where} has no such "
                               "parameter")
    extra_objects = sorted(objects - expected_objects)
    if extra_objects:
        result.notes.append(f"{len(extra_objects)} sharded objects the local-spec model does not use (e.g. "
                            f"{extra_objects[0]}: Transformer Engine state)")
    if casts:
        result.notes.append(f"{len(casts)} tensors stored in 16 bits load into float32 parameters (exact; the "
                            f"local spec keeps norms in float32), e.g. {casts[0]}")
    return len(expected), len(expected_objects)


def _checksum(logits: Any) -> str:
    import torch

    data = logits.detach().contiguous()
    digest = hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()
    as_float = data.float()
    return (f"logits {list(data.shape)} {str(data.dtype).removeprefix('torch.')}: sum {as_float.sum().item():.6f}, "
            f"sum|x| {as_float.abs().sum().item():.6f}, sha256 {digest}")


def _forward(model: Any, tokens: list[int]) -> Any:
    """The logits for `tokens` (one sequence, causal). A bf16/fp16 model runs with every parameter in that dtype,
    as megatron-core's Float16Module (which NeMo 2.0 and Megatron-Bridge wrap such a model in) casts it; the local
    spec's norms are float32 otherwise, and a float32 LayerNorm output cannot feed a bf16 linear layer."""
    import torch

    if model.config.params_dtype in (torch.bfloat16, torch.float16):
        model.to(model.config.params_dtype)
    ids = torch.tensor([tokens], dtype=torch.long)
    positions = torch.arange(len(tokens), dtype=torch.long).unsqueeze(0)
    mask = torch.triu(torch.ones(len(tokens), len(tokens), dtype=torch.bool), diagonal=1)[None, None]
    model.eval()
    with torch.no_grad(), _cpu_forward(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model(ids, positions, mask)


def _vocab_size(target: LoadTarget, tensors: dict[str, tuple[tuple[int, ...], str]],
                result: LoadResult) -> int | None:
    if target.vocab_size is not None:
        return target.vocab_size
    embedding = tensors.get(f"{target.prefix}embedding.word_embeddings.weight")
    if embedding is None:
        result.problems.append(f"{target.prefix}embedding.word_embeddings.weight: missing in {target.checkpoint} "
                               "(and the config has no vocab_size)")
        return None
    result.notes.append(f"vocab_size: not in the config (NeMo takes it from the tokenizer); the embedding's "
                        f"{embedding[0][0]} rows are used")
    return embedding[0][0]


def _check_tokens(target: LoadTarget, tokens: list[int], vocab: int) -> None:
    bad = [t for t in tokens if not 0 <= t < vocab]
    if bad:
        raise MigratorError(f"--tokens: {bad[0]} is not a token id of this model (0 to {vocab - 1})")
    limit = target.seq_length or 1024
    if target.model.get("position_embedding_type") == "learned_absolute" and len(tokens) > limit:
        raise MigratorError(f"--tokens: {len(tokens)} tokens, but the model's learned position embeddings cover "
                            f"{limit} (seq_length)")


def _load(model: Any, target: LoadTarget, result: LoadResult) -> None:
    """megatron-core's load into the model's own sharded state dict, then load_state_dict(strict=True)."""
    import torch
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sharded = model.sharded_state_dict(prefix=target.prefix)
        try:
            # megatron-core's names are the other way round from torch's: its "missing" keys are in the checkpoint
            # but not requested (e.g. Transformer Engine attention state a local-spec model has no use for; the
            # index comparison notes them), its "unexpected" keys are requested but not in the checkpoint
            loaded, _not_requested, missing = dist_checkpointing.load(sharded, str(target.checkpoint),
                                                                      strict=StrictHandling.RETURN_ALL)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # noqa: BLE001 - megatron-core / torch DCP raise many kinds (torch DCP's
            # CheckpointException is a BaseException, not an Exception): one line
            message = str(error).strip().splitlines()
            result.problems.append(f"{target.checkpoint}: megatron-core could not load it ({type(error).__name__}: "
                                   f"{message[0] if message else ''})")
            return
    for key in sorted(missing):
        result.problems.append(f"{key}: missing in {target.checkpoint} (megatron-core's load)")
    if result.problems:
        return
    try:
        model.load_state_dict({key.removeprefix(target.prefix): loaded[key] for key in sharded}, strict=True)
    except RuntimeError as error:
        result.problems.append(f"{target.checkpoint}: the loaded state does not fit the model "
                               f"({str(error).strip().splitlines()[-1].strip()})")
        return
    if target.zero_centered_gamma:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (torch.nn.LayerNorm, torch.nn.RMSNorm)) and module.weight is not None:
                    module.weight += 1


def check_load(output: Path, tokens: list[int] | None = None) -> LoadResult:
    """Build, load (and run) the model; problems found are in the result, unusable input raises MigratorError."""
    target = find_load_target(output)
    result = LoadResult(notes=list(target.notes))
    if target.unsupported:
        result.notes.append(f"load: not run: {target.unsupported}; only the checks above ran")
        return result
    tensors, objects = _index(target.checkpoint)
    vocab = _vocab_size(target, tensors, result)
    if vocab is None:
        return result
    if tokens is not None:
        _check_tokens(target, tokens, vocab)
    _import_megatron()
    if target.transformer.get("num_moe_experts"):
        _moe_names()
    with _process_group():
        model = _build(target, vocab)
        n_tensors, n_objects = _compare_index(model, tensors, objects, target, result)
        if not result.problems:
            _load(model, target, result)
        if result.problems:
            return result
        source = f"{target.config_class.rsplit('.', 1)[-1]} from {target.config_file.parent.name}/" \
                 f"{target.config_file.name}"
        result.checks.append(f"load: megatron-core {megatron_version()} GPTModel ({source}, local layer spec, CPU) "
                             f"loaded {n_tensors} tensors and {n_objects} sharded objects strictly: every key it "
                             "needs is present with its shape and a dtype that loads exactly")
        if tokens is not None:
            try:
                logits = _forward(model, tokens)
            except Exception as error:  # noqa: BLE001 - a forward that fails on CPU is reported, not raised
                message = str(error).strip().splitlines()
                result.problems.append(f"forward pass failed ({type(error).__name__}: "
                                       f"{message[0] if message else ''})")
                return result
            result.logits = logits
            result.checks.append(f"forward: {len(tokens)} tokens -> {_checksum(logits)}")
    return result
