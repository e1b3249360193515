"""Write a NeMo 2.0 checkpoint's `context/`: io.json (what NeMo loads), model.yaml (for people) and the tokenizer.

io.json is the fiddle graph NeMo's `TrainerContext.io_dump` writes:
    TrainerContext(model=<Model>(config=<Config>(**explicit), tokenizer=<Tokenizer>(**explicit)),
                   trainer=Trainer(devices=1, strategy=MegatronStrategy(ddp="pytorch", setup_optimizers=False)),
                   extra={})
Like NeMo's io, only explicitly passed arguments are recorded; the config class's preset supplies the rest.
The trainer is the one NeMo's converter records, minus its `plugins=bf16_mixed()` (inert: MegatronStrategy has no
such parameter and Lightning keeps it only for torch DDP; it also made loading the context need nemo_run) and
minus `accelerator="cpu"` (so a context loaded on a GPU machine gets Lightning's automatic choice).
"""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

from migrator.convert.model.spec import ModelSpec, TokenizerSpec
from migrator.convert.storage.fileops import copy_file
from migrator.convert.write.dcp import write_file
from migrator.convert.write.fiddle_json import Config, PyRef, dumps
from migrator.errors import MigratorError

TRAINER_CONTEXT = "nemo.lightning.io.pl.TrainerContext"
TRAINER = "nemo.lightning.pytorch.trainer.Trainer"
MEGATRON_STRATEGY = "nemo.lightning.pytorch.strategies.megatron_strategy.MegatronStrategy"
DTYPE_FIELDS = {"params_dtype", "pipeline_dtype", "autocast_dtype"}
_TORCH_DTYPE = re.compile(r"^torch\.(bfloat16|float16|float32|half|float)$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
# model weights and VCS data that may sit in a Hugging Face model folder but are no part of its tokenizer
_NOT_TOKENIZER = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.h5", "*.msgpack", "*.onnx",
                  ".git", ".cache")


def _config_value(field: str, value: Any, spec: ModelSpec) -> Any:
    if field in DTYPE_FIELDS and isinstance(value, str):
        if not _TORCH_DTYPE.match(value):
            raise MigratorError(f"model config {field}: {value!r} is not a torch dtype")
        return PyRef(value)
    if field in spec.config_callables:
        return PyRef(value)
    return value


def trainer_config() -> Config:
    strategy = Config(MEGATRON_STRATEGY, {"ddp": "pytorch", "setup_optimizers": False})
    return Config(TRAINER, {"devices": 1, "strategy": strategy})


def context_graph(spec: ModelSpec, tokenizer: TokenizerSpec) -> Config:
    """The TrainerContext as a fiddle Config tree."""
    config = Config(spec.config_class, {k: _config_value(k, v, spec) for k, v in spec.config_kwargs.items()})
    tok = Config(tokenizer.class_path, dict(tokenizer.kwargs))
    model = Config(spec.model_class, {"config": config, "tokenizer": tok})
    return Config(TRAINER_CONTEXT, {"model": model, "trainer": trainer_config(), "extra": {}})


def _yaml_value(value: Any) -> Any:
    if isinstance(value, PyRef):  # nemo_run's YamlSerializer spelling for a referenced (not called) object
        return {"_call_": False, "_target_": value.path}
    if isinstance(value, Config):
        return {"_target_": value.target, **{k: _yaml_value(v) for k, v in value.arguments.items()}}
    if isinstance(value, dict):
        return {k: _yaml_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_value(v) for v in value]
    return value


def _float_text(value: float) -> str:
    """A float that YAML 1.1 readers (PyYAML, OmegaConf) also read as a float: `1.0e-05`, not `1e-05`."""
    text = repr(value)
    if text in ("inf", "-inf", "nan"):
        return {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}[text]
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def model_yaml(spec: ModelSpec, model: Config) -> str:
    """A readable dump of the model subtree: `_target_` per object, dtypes/callables as `_call_: false`."""
    header = [
        "# Written by nemo-migrate convert. NeMo 2.0 loads context/io.json; this is the same model for people and",
        "# for tools that read model.yaml. Only the values set explicitly are listed; every other field has the",
        f"# default of {spec.config_class.rsplit('.', 1)[-1]}.",
    ]
    if spec.origin:
        header.append(f"# Classes chosen by {spec.origin}; architecture from the .nemo's model_config.yaml.")
    return "\n".join(header) + "\n" + yaml_text(_yaml_value(model))


def yaml_text(data: Any) -> str:
    """Block-style YAML that YAML 1.1 readers (PyYAML, OmegaConf) read back as the same values, keys in order."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096  # keep class paths on one line
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    yaml.representer.add_representer(
        float, lambda rep, value: rep.represent_scalar("tag:yaml.org,2002:float", _float_text(value)))
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()


def write_tokenizer_files(context_dir: Path, files: dict[str, bytes | Path]) -> None:
    for name, content in files.items():
        if not _SAFE_NAME.match(name):
            raise MigratorError(f"tokenizer artifact {name!r}: not a plain file name")
        dest = context_dir / name
        if dest.exists():
            raise MigratorError(f"{dest}: already exists")
        if isinstance(content, bytes):
            write_file(dest, content)
        elif content.is_dir():
            # follow links (Hugging Face cache folders are links into a blob store): copy the content; a model
            # folder given as tokenizer folder keeps its tokenizer files only
            shutil.copytree(content, dest, symlinks=False, ignore=shutil.ignore_patterns(*_NOT_TOKENIZER),
                            copy_function=lambda src, dst: copy_file(Path(src), Path(dst)))
        elif content.is_file():
            copy_file(content, dest)
        else:
            raise MigratorError(f"{content}: tokenizer file not found")


def write_context(context_dir: Path, spec: ModelSpec, tokenizer: TokenizerSpec) -> None:
    """Write io.json, model.yaml and the tokenizer artifacts into `context_dir` (created if needed).

    `spec` is written as it is: it must be complete (the pipeline reconciles `vocab_size` with the tokenizer
    before anything is written, see model.architecture.reconcile_vocab_size).
    """
    context_dir = Path(context_dir)
    context_dir.mkdir(parents=True, exist_ok=True)
    root = context_graph(spec, tokenizer)
    write_tokenizer_files(context_dir, tokenizer.files)
    write_file(context_dir / "io.json", dumps(root).encode("utf-8"))
    write_file(context_dir / "model.yaml", model_yaml(spec, root.arguments["model"]).encode("utf-8"))
