"""Shared pytest fixtures for the converter tests: the NeMo-made fixtures and small generated checkpoints.

The NeMo-made fixtures live in `<repo>/../shared/fixtures` (see MANIFEST.md there); tests that need them skip
with a reason when that folder is absent. Generated checkpoints take the tiny Llama fixture's model_config.yaml
and tokenizer and their own tensors (see checkpoint_factory).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import ROOT as REPO
from tests.conftest import SHARED, need_megatron_core, need_shared

FIXTURES = SHARED / "fixtures"
NEMO1 = FIXTURES / "nemo1"
NEMO2_REFERENCE = FIXTURES / "nemo2_reference"
LLAMA_ID = "meta-llama/Meta-Llama-3-8B"


need = need_shared  # the NeMo-made fixtures live in <repo>/../shared/fixtures


def fixture_nemo(name: str) -> Path:
    """A NeMo-made fixture: tiny_llama_torch_dist, tiny_llama_zarr or tiny_mixtral_moe."""
    return need(NEMO1 / f"{name}.nemo")


def with_settings(config_text: str, **settings: Any) -> str:
    """model_config.yaml text with top-level `key: value` lines replaced (or appended)."""
    for key, value in settings.items():
        line = f"{key}: {value}"
        config_text, n = re.subn(rf"(?m)^{re.escape(key)}:.*$", line, config_text)
        if not n:
            config_text += f"\n{line}\n"
    return config_text


@pytest.fixture(scope="session")
def llama_config_text() -> str:
    return need(NEMO1 / "tiny_llama_torch_dist.model_config.yaml").read_text()


@pytest.fixture(scope="session")
def llama_tokenizer() -> tuple[str, bytes]:
    """(member name, bytes) of the tiny Llama fixture's SentencePiece model."""
    with tarfile.open(fixture_nemo("tiny_llama_torch_dist")) as archive:
        for info in archive.getmembers():
            if info.name.endswith("_tokenizer.model"):
                return info.name.removeprefix("./"), archive.extractfile(info).read()  # type: ignore[union-attr]
    raise AssertionError("no tokenizer in the fixture")


@pytest.fixture
def make_nemo(tmp_path: Path, llama_config_text: str, llama_tokenizer: tuple[str, bytes]) -> Callable[..., Path]:
    """Build a tiny Llama `.nemo` (torch_dist or zarr) from given tensors and objects."""
    from tests.convert import checkpoint_factory as factory

    counter = iter(range(1000))

    def make(tensors: dict | None = None, objects: dict | None = None, backend: str = "torch_dist",
             config: str | None = None, compress: bool = False, members: dict | None = None,
             extracted: bool = False, **zarr_options: Any) -> Path:
        n = next(counter)
        tensors = factory.tiny_llama_tensors() if tensors is None else tensors
        objects = factory.extra_states() if objects is None else objects
        weights = tmp_path / f"src{n}" / "model_weights"
        if backend == "torch_dist":
            factory.write_torch_dist(weights, tensors, objects)
        else:
            factory.write_zarr(weights, tensors, objects, **zarr_options)
        name, tokenizer = llama_tokenizer
        config_text = config if config is not None else with_settings(llama_config_text, dist_ckpt_format=backend)
        all_members = {name: tokenizer, **(members or {})}
        if extracted:
            (weights.parent / "model_config.yaml").write_text(config_text)
            for member, content in all_members.items():
                (weights.parent / member).write_bytes(content)
            return weights.parent
        return factory.pack_nemo(tmp_path / f"src{n}.nemo", config_text, weights, all_members, compress=compress)

    return make


def run_cli(*args: str | Path, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """`nemo-migrate ARGS` as a real subprocess (python -m migrator)."""
    return subprocess.run([sys.executable, "-m", "migrator", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def megatron_reader():
    """megatron-core's dist_checkpointing (0.16.x here) with a one-process gloo group, as NeMo 2.0 loads."""
    import re
    import socket

    import torch
    import torch.distributed as dist

    need_megatron_core()
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor

    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)

    def load(directory: Path) -> tuple[dict, dict]:
        from torch.distributed.checkpoint import FileSystemReader

        metadata = dist_checkpointing.load_tensors_metadata(str(directory))
        request: dict = {k: ShardedTensor.from_rank_offsets(k, torch.empty(v.global_shape, dtype=v.dtype))
                         for k, v in metadata.items()}
        for key in FileSystemReader(str(directory)).read_metadata().state_dict_metadata:
            match = re.match(r"(.*)/shard_([\d.]+)_([\d.]+)$", key)
            if match:
                offset = tuple(int(x) for x in match.group(2).split("."))
                shape = tuple(int(x) for x in match.group(3).split("."))
                request[key] = ShardedObject(match.group(1), None, shape, offset, replica_id=0)
        loaded = dist_checkpointing.load(request, str(directory))
        common = dist_checkpointing.load_common_state_dict(str(directory))
        return loaded, common
    return load
