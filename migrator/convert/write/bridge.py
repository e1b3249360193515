"""The Megatron-Bridge destination: a checkpoint root that Bridge's loaders read (`--to bridge`).

    OUT/
      latest_checkpointed_iteration.txt   "<N>" (no newline; Megatron-LM's tracker)
      latest_train_state.pt               the same dict as iter_<N>/train_state.pt (Bridge's tracker: its `step`
                                          names the folder the training loader opens)
      iter_<N:07d>/
        .metadata  __0_<i>.distcp         torch_dist (the weights routes write them here; keys unprefixed)
        common.pt                         {'checkpoint_version': 3.0, 'iteration': N, 'content_metadata': {...}}
        run_config.yaml                   model (provider), checkpoint, tokenizer sections (model/bridge_spec.py)
        train_state.pt                    Bridge's TrainState: 8 scalar tensors, step = N, counters 0
        tokenizer/                        the tokenizer files run_config.yaml points at
        metadata.json                     the torch_dist marker, written last in the folder

`content_metadata` matters: Bridge's training loader (`checkpointing.load_checkpoint`) adds its process group to the
dict it reads there, so a checkpoint without it fails to resume or fine-tune even though `load_megatron_model`
loads it. Nothing here imports torch (common.pt and train_state.pt are written by `torch_save_format`).
"""
from __future__ import annotations

import struct
from pathlib import Path

from migrator.convert.storage.fileops import CheckedWriter, check_size, copy_file
from migrator.convert.write.nemo2 import write_tokenizer_files, yaml_text
from migrator.convert.write.dcp import write_backend_marker, write_file
from migrator.convert.model.bridge_spec import BridgeSpec, run_config
from migrator.convert.formats.torch_save_format import write_plain, write_scalar_tensors
from migrator.errors import MigratorError

CHECKPOINT_VERSION = 3.0
TRACKER = "latest_checkpointed_iteration.txt"
TRAIN_STATE = "train_state.pt"
LATEST_TRAIN_STATE = "latest_train_state.pt"
RUN_CONFIG = "run_config.yaml"
# what Bridge writes for a model-only save (checkpointing._build_sharded_state_dict_metadata without a
# distributed optimizer); it decides how the model's sharded state dict is laid out on load
CONTENT_METADATA = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}
MAX_ITERATION = 9_999_999  # iter_{:07d}


def iter_dir_name(iteration: int) -> str:
    if not 0 <= iteration <= MAX_ITERATION:
        raise MigratorError(f"--iteration {iteration}: must be between 0 and {MAX_ITERATION}")
    return f"iter_{iteration:07d}"


def common_state(iteration: int) -> dict:
    return {"checkpoint_version": CHECKPOINT_VERSION, "iteration": iteration,
            "content_metadata": dict(CONTENT_METADATA)}


def train_state(iteration: int) -> dict[str, tuple[str, bytes]]:
    """Bridge's `TrainState.state_dict()` for a checkpoint that starts at `iteration` with nothing consumed."""
    return {
        "step": ("int32", struct.pack("<i", iteration)),
        "consumed_train_samples": ("int32", struct.pack("<i", 0)),
        "skipped_train_samples": ("int32", struct.pack("<i", 0)),
        "consumed_valid_samples": ("int32", struct.pack("<i", 0)),
        "floating_point_operations_so_far": ("float64", struct.pack("<d", 0.0)),
        "do_train": ("bool", b"\x00"),
        "do_valid": ("bool", b"\x00"),
        "do_test": ("bool", b"\x00"),
    }


def _write_train_state(path: Path, iteration: int) -> None:
    with CheckedWriter(path) as f:
        write_scalar_tensors(f, train_state(iteration))  # type: ignore[arg-type]
    check_size(path, f.end)


def _write_tokenizer(iter_dir: Path, files: dict[str, bytes | Path]) -> None:
    for name, content in files.items():
        parent, _, leaf = name.rpartition("/")
        folder = iter_dir / parent if parent else iter_dir
        folder.mkdir(parents=True, exist_ok=True)
        write_tokenizer_files(folder, {leaf: content})


def write_bridge_files(root: Path, spec: BridgeSpec, iteration: int) -> Path:
    """Everything but the weights: the iteration folder's small files (marker last), then the root's trackers.

    The weights (data files and `.metadata`) must already be in `root/iter_<N>/`. Returns that folder.
    """
    iter_dir = root / iter_dir_name(iteration)
    iter_dir.mkdir(parents=True, exist_ok=True)
    with CheckedWriter(iter_dir / "common.pt") as f:
        write_plain(f, common_state(iteration))  # type: ignore[arg-type]
    check_size(iter_dir / "common.pt", f.end)
    _write_tokenizer(iter_dir, spec.tokenizer_files)
    header = ("# Written by nemo-migrate convert --to bridge. Megatron-Bridge builds the model from `model:` and the\n"
              "# tokenizer from `tokenizer:`; the training loader reads `checkpoint:` (no optimizer or RNG state was\n"
              f"# converted). Checked against Megatron-Bridge {', '.join(spec.releases)}.\n")
    write_file(iter_dir / RUN_CONFIG, (header + yaml_text(run_config(spec))).encode("utf-8"))
    _write_train_state(iter_dir / TRAIN_STATE, iteration)
    write_backend_marker(iter_dir)
    copy_file(iter_dir / TRAIN_STATE, root / LATEST_TRAIN_STATE)
    write_file(root / TRACKER, str(iteration).encode("ascii"))
    return iter_dir
