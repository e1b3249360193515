"""`nemo-migrate convert` and `nemo-migrate verify`.

`convert` accepts every flag of NeMo's scripts/checkpoint_converters/convert_nemo1_to_nemo2.py (underscore
spellings, as there; dash spellings are aliases) plus ours. This module imports neither torch nor the converter at
import time (the CLI group lists commands without loading them); `migrator.convert` is imported inside the
command functions.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from pathlib import Path

import click

from migrator.errors import Interrupted, MigratorError, signal_name


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


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class _Interrupts:
    """SIGINT, SIGTERM and SIGHUP during a conversion: the run ends with exit 128 + N, one line, and no OUT.partial/,
    within about HARD_S seconds whatever it is doing.

    The first signal sets `cancel` (the weights workers stop at their next slice) and raises `Interrupted` in the
    main thread, so what it does (reading the index, deriving or writing the context, fsyncing) stops at once and
    the pipeline removes OUT.partial/ as for any error. It is not raised inside Python's import machinery (a
    KeyboardInterrupt there can leak the import lock and deadlock a worker thread that imports torch) nor inside
    the renames that publish OUT (`outlock.replace`, `recover`, `discard`): the signal is delivered again every
    RETRY_S until the main thread is out of those. If the main thread has not finished within HARD_S (a long import of torch, a
    worker inside one large cast), a watchdog thread removes OUT.partial/ itself and exits; it never does so
    during the rename. Later signals change nothing: the cleanup they would interrupt is what makes the exit
    clean."""

    RETRY_S = 0.05
    HARD_S = 1.5

    def __init__(self, cancel: threading.Event, output: Path) -> None:
        self.cancel = cancel
        self.output = output
        self.before = _identity(output)
        self.received: int | None = None
        self.raised = False
        self.exit_lock = threading.Lock()  # the main thread or the watchdog: whoever exits first says why
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
            self.cancel.set()
            threading.Thread(target=self._watchdog, name="nemo-migrate-interrupt", daemon=True).start()
        if self.raised:
            return
        if not _interruptible(frame):
            return  # the watchdog delivers the signal again
        self.raised = True
        raise Interrupted(self.received)

    def _watchdog(self) -> None:
        import time

        main = threading.main_thread()
        deadline = time.monotonic() + self.HARD_S
        while True:
            time.sleep(self.RETRY_S)
            if not self.raised:
                try:
                    signal.pthread_kill(main.ident, self.received)  # type: ignore[arg-type]
                except (OSError, ValueError):
                    pass
            frame = sys._current_frames().get(main.ident)  # noqa: SLF001 - where the main thread is now
            if time.monotonic() >= deadline and not _publishing(frame):
                break
        import shutil

        from migrator.convert.pipeline import partial_path

        if _in_write_output(sys._current_frames().get(main.ident)):  # noqa: SLF001 - OUT.partial/ is this run's
            for _ in range(3):  # a worker may still create a file in it until it sees `cancel`
                shutil.rmtree(partial_path(self.output), ignore_errors=True)
                time.sleep(self.RETRY_S)
        self.exit(self.received or signal.SIGINT)

    def exit(self, signum: int) -> None:
        """One line and exit 128 + signum. OUT is the new output when its inode changed (the rename of
        OUT.partial/ happened before the signal was acted on)."""
        self.exit_lock.acquire()  # never released: the holder ends the process
        if _identity(self.output) != self.before and self.output.exists():
            click.echo(f"nemo-migrate: interrupted by {signal_name(signum)} after {self.output} was written (it "
                       "is complete)", err=True)
        else:
            click.echo(f"nemo-migrate: interrupted by {signal_name(signum)}; {self.output} was not written",
                       err=True)
        _exit_now(128 + signum)

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _pipeline_code(name: str, module: str = "migrator.convert.pipeline") -> object:
    return getattr(getattr(sys.modules.get(module), name, None), "__code__", None)


# the renames that publish OUT, restore a kept copy or move one aside (convert.storage.outlock, under the lock): an
# interrupt inside one would leave a half-done rename sequence
_RENAMES = (("replace", "migrator.convert.storage.outlock"), ("recover", "migrator.convert.storage.outlock"),
            ("discard", "migrator.convert.storage.outlock"), ("_replace", "migrator.convert.pipeline"))


def _frames(frame: object):
    while frame is not None:
        yield frame.f_code  # type: ignore[attr-defined]
        frame = frame.f_back  # type: ignore[attr-defined]


def _publishing(frame: object) -> bool:
    """The main thread is inside the renames that publish OUT (or restore or move aside a kept copy)."""
    renames = {id(code) for code in (_pipeline_code(name, module) for name, module in _RENAMES) if code is not None}
    return any(id(code) in renames for code in _frames(frame))


def _in_write_output(frame: object) -> bool:
    write = _pipeline_code("_write_output")
    return write is not None and any(code is write for code in _frames(frame))


def _passed_through(tb: object, name: str) -> bool:
    """The exception whose traceback is `tb` was raised inside `pipeline.<name>` (or below it)."""
    code = _pipeline_code(name)
    while tb is not None:
        if tb.tb_frame.f_code is code:  # type: ignore[attr-defined]
            return True
        tb = tb.tb_next  # type: ignore[attr-defined]
    return False


def _interruptible(frame: object) -> bool:
    """False while the main thread runs Python's import machinery or the rename that publishes OUT."""
    from migrator.cli.main import in_import

    return not _publishing(frame) and not in_import(frame)


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
              help="--to bridge: the Megatron-Bridge release lines the checkpoint must load in: megatron-bridge=0.3 "
                   "means every 0.3.x tag; 0.3..0.6 and 0.4.. span lines; every class and field written is checked "
                   "to exist in each of those tags. Default: every known line. (lint and migrate-config read "
                   "megatron-bridge=0.3 as one release, the newest 0.3.x.)")
def convert(**kwargs: object) -> None:
    """Convert a NeMo 1.0 .nemo checkpoint into a NeMo 2.0 checkpoint directory (CPU only, no model built), or
    (--to bridge) a .nemo or NeMo 2.0 checkpoint into a Megatron-Bridge checkpoint."""
    from migrator.convert.pipeline import convert as run_convert
    from migrator.convert.storage.fileops import Cancelled
    from migrator.convert.write.plan import ConvertOptions

    options = ConvertOptions(**kwargs)  # type: ignore[arg-type]
    _check_named_files(options)
    cancel = threading.Event()
    with _Interrupts(cancel, options.output_path) as interrupts:
        try:
            result = run_convert(options, warn=_warn, out=sys.stdout, cancel=cancel)
        except MigratorError as error:
            if interrupts.received is None:
                _fail(str(error))
            interrupts.exit(interrupts.received)
        except (KeyboardInterrupt, Cancelled):
            if interrupts.received is None and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
                raise  # a worker stopped the others without a signal: its own error was lost (a bug)
            if _passed_through(sys.exc_info()[2], "_write_output"):  # OUT.partial/ is this run's: never left behind
                import shutil

                from migrator.convert.pipeline import partial_path

                shutil.rmtree(partial_path(options.output_path), ignore_errors=True)
            interrupts.exit(interrupts.received or signal.SIGINT)
        interrupts.raised = True  # OUT is in place: a signal from here on only changes the exit code
        _report(result)
        if interrupts.received is not None:
            interrupts.exit(interrupts.received)


def _check_named_files(options) -> None:
    """The files named beside the input are regular files (the tokenizer may be a folder): a device, a FIFO, a
    link loop is one line and exit 2 before anything is read or written."""
    from migrator.inputs import check_named_path

    named = [("--input_path", options.input_path, True), ("--model_config", options.model_config, False),
             ("--tokenizer_path", options.tokenizer_path, True),
             ("--tokenizer_vocab_file", options.tokenizer_vocab_file, False)]
    try:
        for flag, path, folder_ok in named:
            if path:
                check_named_path(path, f"{flag} {path}", folder_ok=folder_ok)
        try:
            os.stat(options.output_path)
        except OSError as error:
            if error.errno == errno.ELOOP:  # the path itself or a folder above it
                raise MigratorError(f"--output_path {options.output_path}: a symbolic link loop") from None
    except MigratorError as error:
        _fail(str(error))


def _report(result) -> None:
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
    from migrator.inputs import check_named_path

    try:
        check_named_path(output, str(output), folder_ok=True)
        if model_config is not None:
            check_named_path(model_config, f"--model_config {model_config}")
        report = verify_checkpoint(output, against, model_config, load=load, tokens=token_ids)
    except MigratorError as error:
        _fail(str(error))
    for line in report.lines():
        click.echo(line)
    raise SystemExit(0 if report.ok else 1)
