"""`nemo-migrate convert` and `nemo-migrate verify`.

`convert` accepts every flag of NeMo's scripts/checkpoint_converters/convert_nemo1_to_nemo2.py (underscore
spellings, as there; dash spellings are aliases) plus ours. This module imports neither torch nor the converter at
import time (the CLI group lists commands without loading them); `migrator.convert` is imported inside the
command functions.
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from migrator.errors import MigratorError


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"nemo-migrate: error: {message}", err=True)
    raise SystemExit(code)


def _warn(message: str) -> None:
    click.echo(f"nemo-migrate: warning: {message}", err=True)


def _exit_now(code: int) -> None:
    """Exit at once with `code`, after the partial output was removed. A normal interpreter exit after an
    interrupt can wait on a worker thread still inside a slow import (torch), and CPython may re-raise SIGINT
    at exit when the interrupt landed in some import machinery; neither helps a user who pressed Ctrl-C."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Interrupts:
    """SIGINT and SIGTERM during a conversion: the first one only asks the conversion to stop (it sets `cancel`,
    which the workers and the pipeline check at safe points and answer by removing OUT.partial/); a second one
    stops at once. Raising from the handler itself could land inside Python's import machinery on the main thread
    and leak the global import lock, deadlocking a worker thread that imports (e.g. torch for a cast)."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt()
        self.received = signum
        self.cancel.set()

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--input_path", "--input-path", "input_path", required=True, type=click.Path(path_type=Path),
              help="NeMo 1.0 checkpoint: a .nemo file (tar, plain or gzip), an extracted .nemo folder, or a "
                   "model_weights/ folder (then also --model_config and the tokenizer flags). With --to bridge "
                   "also a NeMo 2.0 checkpoint directory (weights/ and context/).")
@click.option("--output_path", "--output-path", "output_path", required=True, type=click.Path(path_type=Path),
              help="NeMo 2.0 checkpoint directory to write (weights/ and context/), or with --to bridge a "
                   "Megatron-Bridge checkpoint root (iter_<N>/ and its trackers).")
@click.option("--model_id", "--model-id", "model_id", default=None,
              help="One of the model ids of NeMo's converter (chooses the NeMo 2.0 model and config classes), or "
                   "a path to a NeMo 2.0 checkpoint. The architecture itself comes from model_config.yaml. "
                   "Optional when the family is unambiguous (MoE keys: Mixtral).")
@click.option("--tokenizer_path", "--tokenizer-path", "tokenizer_path", default=None,
              help="Tokenizer to use instead of the one in the .nemo: a SentencePiece .model file or a local "
                   "Hugging Face tokenizer folder (no network is used).")
@click.option("--tokenizer_library", "--tokenizer-library", "tokenizer_library", default=None,
              help="sentencepiece or huggingface (default: what model_config.yaml says; sentencepiece for "
                   "--tokenizer_path, as NeMo).")
@click.option("--tokenizer_vocab_file", "--tokenizer-vocab-file", "tokenizer_vocab_file", default=None,
              help="A tokenizer vocab file (e.g. tiktoken), as NeMo's --tokenizer_vocab_file.")
@click.option("--tokenizer_model_name", "--tokenizer-model-name", "tokenizer_model_name", default=None,
              help="Tokenizer name for --tokenizer_vocab_file (NeMo's default: TiktokenTokenizer).")
@click.option("--model_config", "--model-config", "model_config", default=None, type=click.Path(path_type=Path),
              help="model_config.yaml to use (required for a bare model_weights/ folder).")
@click.option("--dtype", type=click.Choice(["keep", "bf16", "fp16", "fp32"]), default="keep", show_default=True,
              help="Tensor dtype of the output. keep: bit-identical to the source; a cast applies to floating "
                   "tensors and rewrites every chunk.")
@click.option("--dry-run", "--dry_run", "dry_run", is_flag=True,
              help="Print the plan (tensors, shapes, dtypes, bytes, derived config, disk needed); write nothing.")
@click.option("--force", is_flag=True,
              help="Replace an existing output: the old one stays until the new one is complete, then is removed (a "
                   "kill at any point leaves the old or the new one; the next run restores an OUT.replaced-old "
                   "left where OUT is absent). Also removes an OUT.replaced-old kept beside a complete OUT. A "
                   "leftover OUT.partial needs no --force: the run holding OUT.lock removes it.")
@click.option("--link", is_flag=True,
              help="Hard-link the data files instead of copying them, where the input is an extracted torch_dist "
                   "folder on the same file system (falls back to copying).")
@click.option("--strict", is_flag=True,
              help="Fail on checkpoint keys the NeMo 2.0 model does not have (default: carry them, with a warning).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Threads copying or converting data. Memory on the streaming route grows with it (about one "
                   "chunk per worker).")
@click.option("--reset-attention-extra-state", "--reset_attention_extra_state", "reset_attention_extra_state",
              is_flag=True,
              help="Write Transformer Engine's core_attention._extra_state as empty (NeMo's converter behaviour) "
                   "instead of carrying it.")
@click.option("--to", "to", type=click.Choice(["nemo2", "bridge"]), default="nemo2", show_default=True,
              help="Destination: a NeMo 2.0 checkpoint directory, or a Megatron-Bridge checkpoint (which Bridge's "
                   "load_megatron_model and its training loader read; from a .nemo or a NeMo 2.0 directory).")
@click.option("--iteration", type=click.IntRange(0, 9_999_999), default=0, show_default=True,
              help="--to bridge: the iteration the checkpoint is saved at (the iter_<N> folder, the step in "
                   "train_state.pt).")
@click.option("--target", "target", default=None, metavar="megatron-bridge=X[..Y]",
              help="--to bridge: the Megatron-Bridge release lines the checkpoint must load in (e.g. "
                   "megatron-bridge=0.3, or 0.3..0.6); every class and field written is checked to exist in each "
                   "of their tags. Default: every known release.")
def convert(**kwargs: object) -> None:
    """Convert a NeMo 1.0 .nemo checkpoint into a NeMo 2.0 checkpoint directory (CPU only, no model built), or
    (--to bridge) a .nemo or NeMo 2.0 checkpoint into a Megatron-Bridge checkpoint."""
    from migrator.convert.pipeline import convert as run_convert
    from migrator.convert.storage.fileops import Cancelled
    from migrator.convert.write.plan import ConvertOptions

    options = ConvertOptions(**kwargs)  # type: ignore[arg-type]
    cancel = threading.Event()
    try:
        with _Interrupts(cancel):
            result = run_convert(options, warn=_warn, out=sys.stdout, cancel=cancel)
    except MigratorError as error:
        _fail(str(error))
    except (KeyboardInterrupt, Cancelled):
        cancel.set()
        click.echo(f"nemo-migrate: error: interrupted; {options.output_path} was not written", err=True)
        _exit_now(130)
    if result.output is not None:
        plan = result.plan
        how = {"copy": "data files copied, index rewritten", "link": "data files hard-linked, index rewritten",
               "stream": "streamed chunk by chunk",
               "merge": f"merged from {len(plan.data_files)} non-distributed rank file(s)"}[plan.mode]
        if plan.bridge is not None:
            how += f"; {plan.bridge.provider.rsplit('.', 1)[-1]} for Megatron-Bridge {_span(plan.bridge.releases)}"
        if plan.mode == "link" and result.files.get("copy"):
            how += f" ({result.files['copy']} copied: not on the input's file system)"
        click.echo(f"nemo-migrate: wrote {result.output}: {len(plan.tensors)} tensors, {len(plan.objects)} sharded "
                   f"objects ({how})")


def _span(releases: list[str]) -> str:
    return releases[0] if len(releases) == 1 else f"{releases[0]}..{releases[-1]}"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--against", "against", default=None, type=click.Path(path_type=Path),
              help="The NeMo 1.0 checkpoint OUTPUT was converted from: compare every tensor and object with it.")
@click.option("--model_config", "--model-config", "model_config", default=None, type=click.Path(path_type=Path),
              help="model_config.yaml for a bare model_weights/ folder given as --against.")
@click.option("--load", "load", is_flag=True,
              help="Also build the model the output's config describes with megatron-core (CPU, local layer spec) "
                   "and load the checkpoint into it strictly (needs the [verify] extra).")
@click.option("--tokens", "tokens", default=None, metavar="IDS",
              help='With --load: token ids ("1 2 3") for a forward pass; prints a checksum of the logits.')
def verify(output: Path, against: Path | None, model_config: Path | None, load: bool, tokens: str | None) -> None:
    """Check a converted checkpoint: layout, index, every tensor readable (and equal to --against); with --load,
    that megatron-core loads it into the model its config describes."""
    from migrator.convert.verify import verify_checkpoint

    token_ids = None
    if tokens is not None:
        if not load:
            _fail("--tokens needs --load")
        try:
            token_ids = [int(t) for t in tokens.replace(",", " ").split()]
        except ValueError:
            _fail(f"--tokens {tokens!r}: not a list of token ids (integers separated by spaces)")
        if not token_ids:
            _fail("--tokens: no token ids given")
    try:
        report = verify_checkpoint(output, against, model_config, load=load, tokens=token_ids)
    except MigratorError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    for line in report.lines():
        click.echo(line)
    raise SystemExit(0 if report.ok else 1)
