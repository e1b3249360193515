"""`nemo-migrate convert`: NeMo 1.0 `.nemo` -> NeMo 2.0 checkpoint directory (`weights/` + `context/`), or
(`--to bridge`) NeMo 1.0 `.nemo` or NeMo 2.0 checkpoint directory -> Megatron-Bridge checkpoint root
(`iter_<N>/` + trackers, see `write.bridge`).

Order of work:
0. (not with `--dry-run`) take the lock on OUT (`OUT.lock`: a second run to the same OUT is refused while this one
   holds it) and deal with what an interrupted run left beside OUT (see `storage.outlock`);
1. open the source (checks the archive and the weights' index; nothing extracted);
2. plan the route (copy/link vs stream);
3. derive the NeMo 2.0 model spec from model_config.yaml and the tensor shapes, resolve the tokenizer (the
   context side of the converter: `architecture`, `tokenizer`, `context`) and check `--strict`; `--dry-run`
   prints the plan and stops here; otherwise the weights are already being written meanwhile (step 4);
4. write everything into `OUT.partial/`: weights data and index, `common.pt`, `context/`, and
   `weights/metadata.json` last (Bridge: the same into `iter_<N>/` with `run_config.yaml`, `train_state.pt` and the
   tokenizer, its `metadata.json` last, then the root's trackers);
5. rename `OUT.partial/` to `OUT` (an existing OUT, with `--force`, is swapped with it atomically where the kernel
   can, else moved aside to `OUT.replaced-old`; it is deleted once the new one is in place).
Any error or interrupt removes `OUT.partial/`; an OUT that exists is always complete; a kill at any instant leaves
the old or the new OUT at its path, or the old one where the next run restores it from.
"""
from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

from migrator.convert.read.source import Source, open_source
from migrator.convert.storage import outlock
from migrator.convert.storage.fileops import Cancelled, check_cancel, os_error_line
from migrator.convert.storage.progress import Progress, make_progress
from migrator.convert.write.dcp import write_backend_marker, write_common
from migrator.convert.write.plan import ConvertOptions, Plan, build_plan, render_plan
from migrator.errors import MigratorError

Warn = Callable[[str], None]


@dataclass
class ConvertResult:
    output: Path | None  # None for --dry-run
    plan: Plan
    warnings: list[str] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # "copy"/"link" counts on the fast route


partial_path = outlock.partial_path


def _inputs(options: ConvertOptions) -> list[tuple[str, Path]]:
    """Every path the run reads: the checkpoint and the files named beside it."""
    named = [("the input", options.input_path), ("--model_config", options.model_config),
             ("--tokenizer_path", options.tokenizer_path), ("--tokenizer_vocab_file", options.tokenizer_vocab_file)]
    return [(what, Path(path)) for what, path in named if path]


def _check_paths(options: ConvertOptions) -> None:
    """Refuse an output that is, contains or lies inside anything the run reads, even with --force (which would
    delete it): `--output_path IN/model_weights` once replaced the user's checkpoint."""
    if options.output_path.name in ("", ".."):  # `.`, `""`, `..`: no name to put OUT.partial and OUT.lock beside
        raise MigratorError(f"{str(options.output_path) or repr('')}: not a name for a new checkpoint folder "
                            "(the output is created as a folder of its own, e.g. out/model_nemo2)")
    output = options.output_path.resolve()
    for target in (output, *outlock.neighbours(output)):  # OUT and the names the run writes beside it
        for what, path in _inputs(options):
            source = path.resolve()
            if target == source or source.is_relative_to(target) or target.is_relative_to(source):
                relation = ("is" if target == source else "contains" if source.is_relative_to(target)
                            else "lies inside")
                named = options.output_path if target == output else f"{options.output_path} (its {target.name})"
                raise MigratorError(f"{named}: {relation} {what} {path}; choose another output path "
                                    "(refused even with --force)")


def _check_existing(options: ConvertOptions, kept: Sequence[Path] = ()) -> None:
    """An existing OUT needs --force. `kept`: copies of a previously replaced OUT that an interrupted --force left
    (--force removes them too)."""
    if os.path.lexists(options.output_path) and not options.force:
        also = (f"; {', '.join(str(p) for p in kept)} {'holds' if len(kept) == 1 else 'hold'} the checkpoint it "
                "replaced, kept by an interrupted --force (--force removes it too)") if kept else ""
        raise MigratorError(f"{options.output_path}: already exists; pass --force to replace it (the old one is "
                            f"removed only after the new one is complete){also}")


def _tokenizer(source: Source, options: ConvertOptions, warn: Warn):
    from migrator.convert.model.tokenizer import resolve_tokenizer

    input_dir = options.input_path if options.input_path.is_dir() else options.input_path.parent
    return resolve_tokenizer(source.model_config, source.read_member, options.tokenizer_path,
                             options.tokenizer_library, options.tokenizer_vocab_file,
                             options.tokenizer_model_name, input_dir=input_dir, note=warn)


def _context_side(source: Source, options: ConvertOptions, warn: Warn, tokenizer=None):
    """The complete model spec (vocab_size reconciled with the tokenizer) and the tokenizer: the context side.
    `tokenizer`: already resolved (a non-distributed source resolves it first, for its vocabulary)."""
    from migrator.convert.model.architecture import derive_model_spec, reconcile_vocab_size

    try:
        spec = derive_model_spec(source.arch_config, source.tensors, options.model_id, options.dtype, warn)
    except MigratorError as error:
        where = source.nonsharded.where(str(error).split(":", 1)[0]) if source.nonsharded is not None else None
        if where is None:
            raise
        raise MigratorError(f"{error} (merged from {where})") from None
    if tokenizer is None:
        tokenizer = _tokenizer(source, options, warn)
    # decided here, before anything is written, so --dry-run shows the vocab_size the real run writes
    reconcile_vocab_size(spec, tokenizer.vocab_size, warn)
    return spec, tokenizer


def _merge_vocabulary(source: Source, options: ConvertOptions, warn: Warn):
    """A TP>1 non-distributed checkpoint's vocabulary was padded for its TP size: the merged embedding and output
    layer keep the rows NeMo pads to at TP=1 (the tokenizer's size), as NeMo's own merge does. Returns the
    tokenizer (resolved once)."""
    from migrator.convert.model.tp_merge import padded_vocab

    index = source.nonsharded
    assert index is not None
    tokenizer = _tokenizer(source, options, warn)
    merged = index.merged_vocab_rows()
    if index.tp == 1 or merged is None:
        return tokenizer
    divisible = int(source.model_config.get("make_vocab_size_divisible_by", 128))
    if tokenizer.vocab_size is None:
        warn(f"model.embedding.word_embeddings.weight: the tokenizer's size is unknown, so the {merged} rows "
             f"padded for TP={index.tp} are kept (vocab_size is written)")
        return tokenizer
    rows = padded_vocab(tokenizer.vocab_size, divisible)
    if rows != merged:
        if rows > merged:
            raise MigratorError(f"model.embedding.word_embeddings.weight: {merged} rows merged from TP={index.tp}, "
                                f"fewer than the tokenizer's {tokenizer.vocab_size} tokens padded to {rows}")
        warn(f"model.embedding.word_embeddings.weight: {merged} rows padded for TP={index.tp}; keeping the "
             f"{rows} NeMo pads the tokenizer's {tokenizer.vocab_size} tokens to at TP=1 "
             f"(make_vocab_size_divisible_by={divisible}), as NeMo's merge does")
    index.set_vocab_rows(rows)
    source.tensors = index.tensors()
    return tokenizer


def _bridge_side(source: Source, options: ConvertOptions, warn: Warn, tokenizer=None):
    """The Megatron-Bridge run_config sections (model/bridge_spec.py), the tokenizer and the model's keys.
    `tokenizer`: already resolved (a non-distributed source resolves it first, for its vocabulary)."""
    from migrator.convert.model import nemo1_arch, shapes
    from migrator.convert.model.bridge_models import load_bridge_table, parse_target
    from migrator.convert.model.bridge_spec import build_bridge_spec
    from migrator.convert.read.nemo2_dir import Nemo2DirSource, context_tokenizer
    from migrator.convert.model.tokenizer import resolve_tokenizer
    from migrator.convert.write.bridge import iter_dir_name

    table = load_bridge_table()
    span = table.span(parse_target(options.target))
    index = shapes.tensor_index(source.tensors)
    mamba = any(".mixer." in k for k in index)
    if options.model_id is not None:
        warn(f"--model_id {options.model_id}: not used with --to bridge (it chooses NeMo 2.0 classes); Megatron-Bridge "
             f"gets {'MambaModelProvider' if mamba else 'GPTModelProvider'} with the checkpoint's own architecture")
    tokenizer_flags = (options.tokenizer_path, options.tokenizer_library, options.tokenizer_vocab_file,
                       options.tokenizer_model_name)
    if isinstance(source, Nemo2DirSource):
        values = dict(source.context.values)
        mamba = mamba or source.context.model_class.endswith(".MambaModel")
        if any(tokenizer_flags):
            tokenizer = resolve_tokenizer(None, None, *tokenizer_flags)
        else:
            tokenizer = context_tokenizer(source.path, source.context.tokenizer)
    else:
        config = source.arch_config  # a pre-megatron-core checkpoint is read as the megatron-core model it maps to
        values = nemo1_arch.mamba_fields(config) if mamba else nemo1_arch.gpt_fields(config)
        if mamba:  # NeMo 1.0's Mamba model takes its MLP activation from `activation` like GPT (default gelu)
            values["activation_func"] = nemo1_arch.activation(config)[0]
        if tokenizer is None:
            input_dir = options.input_path if options.input_path.is_dir() else options.input_path.parent
            tokenizer = resolve_tokenizer(source.model_config, source.read_member, *tokenizer_flags,
                                          input_dir=input_dir, note=warn)
    yaml_name = source.model_config_origin or "model_config.yaml"
    facts = shapes.check_mamba(values, source.tensors) if mamba else shapes.check_gpt(values, source.tensors)
    if tokenizer.vocab_size is not None and tokenizer.vocab_size > facts.padded_vocab_size:
        raise MigratorError(f"embedding.word_embeddings.weight: {facts.padded_vocab_size} rows, but the tokenizer has "
                            f"{tokenizer.vocab_size} tokens")
    final_iter = options.output_path / iter_dir_name(options.iteration)
    spec = build_bridge_spec("mamba" if mamba else "gpt", values, facts.padded_vocab_size, facts.source_dtype,
                             options.dtype, tokenizer, final_iter, table, span, warn,
                             origin=f"{source.path}: {yaml_name}" if isinstance(source, Nemo2DirSource) else yaml_name)
    spec.expected_keys = {k[len("module."):] for k in facts.expected_keys}
    spec.origin = yaml_name
    return spec, tokenizer


def check_strict(plan: Plan, strict: bool, warn: Warn) -> None:
    """Keys the NeMo 2.0 model does not have: an error with --strict, otherwise carried with a warning."""
    spec = plan.bridge if plan.bridge is not None else plan.spec
    if spec is None or spec.expected_keys is None:
        return
    unexpected = [t.new_key for t in plan.tensors if t.new_key not in spec.expected_keys]
    if not unexpected:
        return
    bridge = plan.bridge is not None
    model = (plan.bridge.provider if bridge else spec.model_class).rsplit(".", 1)[-1]
    consumer = "Megatron-Bridge" if bridge else "NeMo 2.0"
    if strict:
        raise MigratorError(f"{unexpected[0]}: not a key of {model}"
                            + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
                            + f"; --strict refuses keys the {'' if bridge else 'NeMo 2.0 '}model does not have")
    for key in unexpected:
        warn(f"{key}: not a key of {model}; carried into the output ({consumer} ignores unexpected keys; "
             "--strict makes this an error)")


def _free_bytes(output: Path) -> int | None:
    probe = output.parent if output.parent.exists() else Path.cwd()
    while not probe.exists():
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def convert(options: ConvertOptions, *, warn: Warn, out: TextIO, progress: Progress | None = None,
            cancel: threading.Event | None = None) -> ConvertResult:
    """Run one conversion (see the module docstring). Raises MigratorError for bad input and I/O errors (exit 2)."""
    try:
        return _convert_locked(options, warn=warn, out=out, progress=progress, cancel=cancel)
    except OSError as error:  # e.g. reading the input: one line naming the file and the OS error
        raise MigratorError(os_error_line(error, options.input_path)) from None


def _convert_locked(options: ConvertOptions, *, warn: Warn, out: TextIO, progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> ConvertResult:
    cancel = cancel or threading.Event()
    warnings: list[str] = []

    def _warn(message: str) -> None:
        warnings.append(message)
        warn(message)

    _check_paths(options)
    if options.dry_run:
        _check_existing(options)
        for line in outlock.leftovers(options.output_path):
            out.write(f"nemo-migrate: {line}\n")
        return _convert(options, _warn, warnings, out, progress, cancel)
    lock = outlock.OutputLock(options.output_path)
    lock.acquire(note=_warn)
    try:
        kept = outlock.recover(options.output_path, force=options.force,
                               note=lambda line: out.write(f"nemo-migrate: {line}\n"))
        _check_existing(options, kept)
        return _convert(options, _warn, warnings, out, progress, cancel)
    finally:
        lock.release()


def _convert(options: ConvertOptions, _warn: Warn, warnings: list[str], out: TextIO, progress: Progress | None,
             cancel: threading.Event) -> ConvertResult:
    """Steps 1 to 5 of the module docstring (`_warn` records and prints a warning)."""
    spill_parent = options.output_path.resolve().parent
    # under the lock a fixed name beside OUT (a killed run's is removed by the next); a dry run holds no lock
    spill_dir = None if options.dry_run else outlock.spill_path(options.output_path.resolve())
    with open_source(options.input_path, options.model_config, spill_parent, spill_dir) as source:
        check_cancel(cancel)
        _check_destination(source, options)
        for note in source.notes:
            out.write(f"nemo-migrate: {note}\n")
        tokenizer = _merge_vocabulary(source, options, _warn) if source.nonsharded is not None else None
        plan = build_plan(source, options, _warn)
        plan.warnings = warnings
        free = _free_bytes(options.output_path)
        if options.dry_run:
            _derive(source, plan, options, _warn, tokenizer)
            check_strict(plan, options.strict, _warn)
            out.write(render_plan(plan, source, options, free) + "\n")
            return ConvertResult(None, plan, warnings)
        if free is not None and free < plan.disk_bytes:
            raise MigratorError(f"{options.output_path}: needs about {plan.disk_bytes} bytes, "
                                f"{free} are free on that file system")
        files = _write_output(source, plan, options, progress or make_progress(), cancel, _warn, tokenizer,
                              note=lambda line: out.write(f"nemo-migrate: {line}\n"))
    return ConvertResult(options.output_path, plan, warnings, files)


def _check_destination(source: Source, options: ConvertOptions) -> None:
    from migrator.convert.read.nemo2_dir import Nemo2DirSource

    if isinstance(source, Nemo2DirSource):
        if options.to != "bridge":
            raise MigratorError(f"{options.input_path}: already a NeMo 2.0 checkpoint directory; --to bridge converts "
                                "it to a Megatron-Bridge checkpoint")
    if options.to != "bridge" and (options.iteration or options.target):
        raise MigratorError("--iteration and --target megatron-bridge=... apply to --to bridge only")


def _derive(source: Source, plan: Plan, options: ConvertOptions, warn: Warn, tokenizer=None) -> None:
    """The model description of the destination (and the tokenizer), into the plan."""
    if options.to == "bridge":
        note = getattr(source, "note_dropped", None)
        if note is not None:
            note(warn)
        plan.bridge, plan.tokenizer = _bridge_side(source, options, warn, tokenizer)
    else:
        plan.spec, plan.tokenizer = _context_side(source, options, warn, tokenizer)


class _Background:
    """Runs a function on a thread; `join()` waits (interruptibly) and re-raises what it raised."""

    def __init__(self, function: Callable[[], object]) -> None:
        self._result: dict[str, object] = {}
        self._thread = threading.Thread(target=self._run, args=(function,), daemon=True)

    def start(self) -> "_Background":
        self._thread.start()
        return self

    def _run(self, function: Callable[[], object]) -> None:
        try:
            self._result["value"] = function()
        except BaseException as error:  # noqa: BLE001 - re-raised in join()
            self._result["error"] = error

    def join(self) -> object:
        if not self._thread.ident:  # never started
            return None
        while self._thread.is_alive():
            self._thread.join(timeout=0.2)
        if "error" in self._result:
            raise self._result["error"]  # type: ignore[misc]
        return self._result.get("value")


def _write_output(source: Source, plan: Plan, options: ConvertOptions, progress: Progress,
                  cancel: threading.Event, warn: Warn, tokenizer=None, note: Warn | None = None) -> dict[str, int]:
    """Write OUT.partial/ and rename it to OUT.

    The weights are written on a second thread while the model spec and tokenizer are derived (work that
    would otherwise come before the first byte is copied). If the spec fails (bad model
    id, shapes that contradict the YAML, --strict), the copy is cancelled and nothing is left behind.
    """
    partial = partial_path(options.output_path)  # an interrupted run's was removed under the lock (outlock.recover)
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
    except OSError as error:
        raise MigratorError(f"{error.filename or partial}: {error.strerror or error}; nothing written to "
                            f"{options.output_path}") from None
    replaced = None
    if options.to == "bridge":
        from migrator.convert.write.bridge import iter_dir_name

        weights = partial / iter_dir_name(options.iteration)
    else:
        weights = partial / "weights"
    writing: _Background | None = None
    try:
        what = {"link": "linking weights", "merge": "merging weights"}.get(plan.mode, "writing weights")
        if plan.mode == "merge" and not source.random_access:
            what += " (rank files spilled to disk beside the output)"
        progress.start(plan.source_bytes, what)
        writing = _Background(lambda: _write_weights(source, plan, weights, options, progress, cancel))
        writing.start()  # assigned first: an interrupt during start() still joins the thread before cleanup
        _derive(source, plan, options, warn, tokenizer)
        check_cancel(cancel)
        check_strict(plan, options.strict, warn)
        files = writing.join()
        progress.finish()
        if options.to == "bridge":
            from migrator.convert.write.bridge import write_bridge_files

            write_bridge_files(partial, plan.bridge, options.iteration)
        else:
            write_common(weights)
            from migrator.convert.write.nemo2 import write_context

            write_context(partial / "context", plan.spec, plan.tokenizer)
            write_backend_marker(weights)
        _fsync_tree(partial)
        check_cancel(cancel)  # the last moment an interrupt still means "no OUT"
        replaced = outlock.replace(partial, options.output_path)
    except BaseException as error:
        cancel.set()
        cause: BaseException = error
        if writing is not None:  # stop the weights thread before removing what it writes
            try:
                writing.join()
            except BaseException as failed:  # noqa: BLE001 - reported below if it is the real cause
                # the main thread saw only the cancel flag that the failing weights thread set: a full disk is
                # that thread's OSError, not an interrupt
                if isinstance(error, Cancelled) and not isinstance(failed, (Cancelled, KeyboardInterrupt)):
                    cause = failed
        if isinstance(cause, OSError) and not partial.exists() and options.output_path.exists():
            # the rename happened (OUT.partial is gone, OUT is the new, complete output): only a flush after it
            # failed, so OUT is not removed, and not reported as missing
            warn(f"{os_error_line(cause, options.output_path)}; {options.output_path} was written and is complete, "
                 "but its folder entry may not be on disk yet (run `sync`)")
            return {}
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(cause, OSError):
            raise MigratorError(f"{os_error_line(cause, partial)}; nothing written to {options.output_path}") from None
        if isinstance(cause, EOFError):
            raise MigratorError(f"{options.input_path}: {cause}; the input is truncated; nothing written") from None
        if cause is not error:
            raise cause
        raise
    if replaced is not None and note is not None:
        note(replaced)
    return files  # type: ignore[return-value]


def _write_weights(source: Source, plan: Plan, weights: Path, options: ConvertOptions, progress: Progress,
                   cancel: threading.Event) -> dict[str, int]:
    if plan.mode == "merge":
        from migrator.convert.write.merge_route import write_merged_weights

        write_merged_weights(source, plan, weights, progress=progress, cancel=cancel)
        return {}
    if plan.mode == "stream":
        from migrator.convert.write.stream_route import write_streamed_weights

        write_streamed_weights(source, plan, weights, workers=options.workers, progress=progress, cancel=cancel)
        return {}
    from migrator.convert.write.copy_route import write_copied_weights

    return write_copied_weights(source, plan, weights, workers=options.workers, progress=progress, cancel=cancel)


def _fsync_tree(root: Path) -> None:
    """Flush every file, then every directory entry, before the rename: after a crash an OUT is complete or absent.

    Files are flushed here, once, rather than as each is written, so the kernel writes them back concurrently.
    """
    # big files first (the small ones may then ride on the same journal commits), folders last
    paths = sorted(root.rglob("*"), key=lambda p: (p.is_dir(), -p.lstat().st_size))
    for path in [*paths, root]:
        if path.is_symlink():
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:  # the report names the file that could not be flushed
            if error.filename is None:
                error.filename = str(path)
            raise
