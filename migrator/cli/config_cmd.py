"""`nemo-migrate config OLD.yaml` (= `migrate-config OLD.yaml`) and `nemo-migrate patch --config OLD.yaml PATHS`.

    migrate-config OLD.yaml [--emit-python] [-o FILE] [--output-format python|json] [--strip [--no-backup]]
    migrate-config OLD.yaml --patch PATHS... [--diff | --check] [--strip]
    nemo-migrate patch --config OLD.yaml PATHS... [--diff | --check]

Exit codes: 0 code produced / files patched (warnings on stderr and, for emit, as comments in the code); 1 the tool
refuses (an error such as zarr for a megatron-core that cannot read it, without --force) or, with --check or
--diff, a file would change; 2 bad input (unreadable or non-NeMo YAML, a missing path, a Python file that does not
parse).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from migrator.cli.options import (
    destination_option, resolve_bridge_target, resolve_source, resolve_target, target_options, unified_diff,
)
from migrator.errors import MigratorError


def _prog() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().info_name if ctx is not None and ctx.find_root().info_name else "nemo-migrate"


def _say(kind: str, text: str) -> None:
    click.echo(f"{_prog()}: {kind}: {text}", err=True)


def _usage(text: str) -> None:
    _say("error", text)
    raise SystemExit(2)


def _refuse(mapping) -> NoReturn:
    """Exit 1: the mapping has errors (each already printed by _say_messages)."""
    _say("error", f"{mapping.filename}: refusing to migrate ({len(mapping.errors)} error"
         f"{'s' * (len(mapping.errors) != 1)} above); nothing written")
    raise SystemExit(1)


def _say_messages(mapping) -> None:
    """A mapping's warnings and errors on stderr, one line each with its location (info notes go in the output)."""
    for message in mapping.messages:
        if message.severity == "info":
            continue
        where = f"{mapping.filename}:{message.location.row}:{message.location.column}" if message.location \
            else mapping.filename
        code = f"{message.code} " if message.code else ""
        _say(message.severity, f"{where}: {code}{message.text}")


def _load(config_path: str, target_spec: str | None, source_spec: str | None, force: bool):
    from migrator.engine.table import load_table
    from migrator.migrate.mapping import load_mapping

    try:
        table = load_table()
        mapping = load_mapping(config_path, table, resolve_target(target_spec), resolve_source(source_spec),
                               force=force)
    except MigratorError as exc:
        _usage(str(exc))
    _say_messages(mapping)
    return table, mapping


# ================================================================================================ patch
@dataclass
class PatchOutcome:
    changed: int = 0
    unchanged: int = 0
    blocked: int = 0
    errors: int = 0


def run_patch(paths: tuple[str, ...], mapping, table, *, diff: bool, check: bool) -> PatchOutcome:
    from migrator.python.patch import patch_bytes

    def summary(result) -> str:
        keywords = sum(len(p.changes) for p in result.edited)
        calls = len(result.edited)
        return f"{calls} call{'s' * (calls != 1)}, {keywords} keyword{'s' * (keywords != 1)}"

    return _patch_files(
        paths, (b"MegatronStrategy",), lambda data, path: patch_bytes(data, path, mapping, table),
        blocked=lambda result: [(p.row, p.column, p.call.label, p.blocked, p.wanted) for p in result.blocked],
        summary=summary, not_edited=lambda n: f"{n} call{'s' * (n != 1)} not edited", diff=diff, check=check)


def _patch_files(paths: tuple[str, ...], markers: tuple[bytes, ...], patch: Callable[[bytes, str], Any], *,
                 blocked: Callable[[Any], list[tuple]], summary: Callable[[Any], str],
                 not_edited: Callable[[int], str], diff: bool, check: bool) -> PatchOutcome:
    """The patch loop both destinations share: every `.py` under `paths` holding one of `markers` goes through
    `patch(data, path)` (a result with `changed`, `original`, `patched`), written atomically, shown as a diff, or
    only counted (`--check`); a file that cannot be read, parsed or written is one error line and is left as it was."""
    from migrator.engine.runner import discover
    from migrator.migrate.files import decode_for_display, write_bytes_atomically

    outcome = PatchOutcome()
    for path, error in discover(paths, (".py",)):
        if error:
            _say("error", error)
            outcome.errors += 1
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            _say("error", f"{path}: cannot read: {exc.strerror}")
            outcome.errors += 1
            continue
        if not any(marker in data for marker in markers):
            outcome.unchanged += 1
            continue
        try:
            result = patch(data, path)
        except MigratorError as exc:
            _say("error", f"{exc}; file left untouched")
            outcome.errors += 1
            continue
        for row, column, label, why, wanted in blocked(result):
            outcome.blocked += 1
            _say("warning", f"{path}:{row}:{column}: {label} not edited: {why}; the config wants {wanted}")
        if not result.changed:
            outcome.unchanged += 1
            continue
        outcome.changed += 1
        done = summary(result)
        if diff:
            sys.stdout.write(unified_diff(decode_for_display(result.original), decode_for_display(result.patched), path))
        elif check:
            click.echo(f"would patch {path} ({done})", err=True)
        else:
            try:
                write_bytes_atomically(Path(path), result.patched)
            except (OSError, MigratorError) as exc:
                _say("error", f"{path}: cannot write: {getattr(exc, 'strerror', None) or exc}")
                outcome.errors += 1
                continue
            click.echo(f"patched {path} ({done})", err=True)
    verb = "would be patched" if (diff or check) else "patched"
    click.echo(f"{outcome.changed} file{'s' * (outcome.changed != 1)} {verb}, {outcome.unchanged} unchanged"
               + (f", {not_edited(outcome.blocked)}" if outcome.blocked else "")
               + (f", {outcome.errors} error{'s' * (outcome.errors != 1)}" if outcome.errors else ""), err=True)
    return outcome


def _strip(mapping, *, diff: bool, check: bool, no_backup: bool) -> bool:
    """Strip the migrated keys; returns whether the YAML (would have) changed."""
    from migrator.migrate.files import backup, write_bytes_atomically
    from migrator.migrate.strip import strip_text

    try:
        result = strip_text(mapping)
    except MigratorError as exc:
        _usage(str(exc))
    for path, why in result.kept:
        _say("warning", f"{mapping.filename}: --strip keeps {path}: {why}")
    if not result.removed:
        click.echo(f"{mapping.filename}: nothing to strip", err=True)
        return False
    if diff:
        sys.stdout.write(unified_diff(mapping.document.text, result.text, mapping.filename))
    elif check:
        click.echo(f"would strip {len(result.removed)} keys from {mapping.filename}", err=True)
    else:
        path = Path(mapping.filename)
        note = ""
        try:
            if not no_backup:
                saved, fresh = backup(path)
                note = f" (backup: {saved})" if fresh else f" (kept the existing backup {saved})"
            write_bytes_atomically(path, result.text.encode("utf-8"))
        except (OSError, MigratorError) as exc:
            _usage(f"{path}: cannot write: {getattr(exc, 'strerror', None) or exc}")
        click.echo(f"stripped {len(result.removed)} keys from {mapping.filename}: {', '.join(result.removed)}{note}",
                   err=True)
    return True


# ================================================================================================ commands
def _common(func):
    func = click.option("--check", is_flag=True, help="With --patch/--strip: write nothing; exit 1 if a file would "
                        "change (calls that cannot be edited are reported on stderr and do not fail it).")(func)
    func = click.option("--diff", is_flag=True, help="With --patch/--strip: print a unified diff and write nothing; "
                        "exit 1 if there is one.")(func)
    func = click.option("--force", is_flag=True, help="Produce code where the tool would refuse (zarr on "
                        "megatron-core >= 0.16, an invalid or duplicated value); the reason stays in the output.")(func)
    return target_options(func)


@click.command("config")
@click.argument("config_path", metavar="OLD.yaml")
@click.argument("paths", nargs=-1, metavar="[PATHS]...")
@click.option("--emit-python", is_flag=True, help="Print the NeMo 2.0 MegatronStrategy snippet (the default), or "
              "with --to bridge the CheckpointConfig snippet.")
@click.option("--emit-yaml", is_flag=True, help="With --to bridge: print a `checkpoint:` block for Bridge's YAML "
              "overrides.")
@click.option("--emit-overrides", is_flag=True, help="With --to bridge: print Hydra-style overrides "
              "(checkpoint.FIELD=VALUE), one per line.")
@destination_option
@click.option("--patch", "patch_mode", is_flag=True,
              help="Patch the MegatronStrategy(...) calls in PATHS (files or folders) in place.")
@click.option("--strip", is_flag=True, help="Remove the migrated keys from OLD.yaml (whole lines; keeps OLD.yaml.bak).")
@click.option("--no-backup", is_flag=True, help="With --strip: keep no OLD.yaml.bak.")
@click.option("-o", "--output", "output_path", metavar="FILE", help="Write the snippet (or JSON) to FILE.")
@click.option("--output-format", type=click.Choice(["python", "json"]), default="python", show_default=True,
              help="json: the mapped keyword arguments, omitted settings and messages, for other tools.")
@_common
def config(config_path, paths, emit_python, emit_yaml, emit_overrides, destination, patch_mode, strip, no_backup,
           output_path, output_format, target_spec, source_spec, force, diff, check):
    """Migrate the checkpoint settings of a NeMo 1.0 YAML config to NeMo 2.0's MegatronStrategy (or, with --to
    bridge, to Megatron-Bridge's CheckpointConfig).

    Exit codes: 0 code produced or files patched, 1 refused (e.g. zarr for megatron-core >= 0.16 without --force)
    or, with --check or --diff, a file would change, 2 bad input.
    """
    if destination == "bridge":
        _config_bridge(config_path, paths, emit_python, emit_yaml, emit_overrides, patch_mode, strip, output_path,
                       output_format, target_spec, source_spec, force, diff, check)
        return
    if emit_yaml or emit_overrides:
        _usage("--emit-yaml and --emit-overrides are Megatron-Bridge forms: add --to bridge")
    _patch_usage(paths, patch_mode, bool(emit_python or output_path or output_format == "json"), "--emit-python")
    if (diff or check) and not (patch_mode or strip):
        _usage("--diff and --check apply to --patch and --strip")
    if diff and check:
        _usage("--diff and --check cannot be combined")
    if output_path not in (None, "-") and _same_file(output_path, config_path):
        _usage(f"-o {output_path}: that is the input config {config_path}; refusing to overwrite it (even with "
               "--force)")
    table, mapping = _load(config_path, target_spec, source_spec, force)

    if mapping.refused:
        if output_format == "json" and not patch_mode:
            _write_output(json.dumps(mapping.as_json(), indent=2, ensure_ascii=False) + "\n", output_path)
        _refuse(mapping)

    status = 0
    if patch_mode:
        outcome = run_patch(paths, mapping, table, diff=diff, check=check)
        if outcome.errors:
            status = 2
        elif (check or diff) and outcome.changed:
            status = 1
        if strip and (outcome.errors or outcome.blocked):
            _say("warning", f"not stripping {mapping.filename}: some calls were not patched (see above)")
            strip = False
    else:
        from migrator.python.emit import emit

        try:
            text = (json.dumps(mapping.as_json(), indent=2, ensure_ascii=False) + "\n" if output_format == "json"
                    else emit(mapping))
        except MigratorError as exc:  # pragma: no cover - emit re-checks what it built
            _usage(str(exc))
        _write_output(text, output_path)
    if strip:
        changed = _strip(mapping, diff=diff, check=check, no_backup=no_backup)
        if (check or diff) and changed and status == 0:
            status = 1
    raise SystemExit(status)


def _same_file(a: str, b: str) -> bool:
    """Do two paths name one file (the same path, a link to it, a hard link)?"""
    import os

    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): only the same resolved path is the same file
        return os.path.realpath(a) == os.path.realpath(b)


def _write_output(text: str, output_path: str | None) -> None:
    if output_path is None or output_path == "-":
        sys.stdout.write(text)
        return
    from migrator.migrate.files import write_bytes_atomically

    path = Path(output_path)
    try:
        if path.exists() and not path.is_file() and not path.is_dir():  # /dev/stdout, a named pipe: write into it
            with open(path, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            return
        write_bytes_atomically(path, text.encode("utf-8"))
    except OSError as exc:
        _usage(f"{output_path}: cannot write: {exc.strerror or exc}")
    except MigratorError as exc:
        _usage(str(exc))
    click.echo(f"wrote {output_path}", err=True)


@click.command("patch")
@click.argument("paths", nargs=-1, required=True)
@click.option("--config", "config_path", required=True, metavar="OLD.yaml",
              help="The NeMo 1.0 YAML config (or, with --to bridge, a NeMo 2.0 script) the code is migrated from.")
@destination_option
@_common
def patch(paths, config_path, destination, target_spec, source_spec, force, diff, check):
    """Add or update the checkpoint keywords of every MegatronStrategy(...) call (and run.Config of it) in PATHS to
    what `migrate-config OLD.yaml --emit-python` writes; with --to bridge, the CheckpointConfig(...) calls and
    cfg.checkpoint.<field> assignments of Megatron-Bridge code.

    Exit codes: 0 done, 1 refused or (with --check) a file would change, 2 bad input.
    """
    if diff and check:
        _usage("--diff and --check cannot be combined")
    if destination == "bridge":
        _, bridge, mapping = _load_bridge(config_path, target_spec, source_spec, force)
        if mapping.refused:
            _refuse(mapping)
        outcome = run_bridge_patch(paths, mapping, bridge, diff=diff, check=check)
        raise SystemExit(2 if outcome.errors else 1 if (check or diff) and outcome.changed else 0)
    table, mapping = _load(config_path, target_spec, source_spec, force)
    if mapping.refused:
        _refuse(mapping)
    outcome = run_patch(paths, mapping, table, diff=diff, check=check)
    raise SystemExit(2 if outcome.errors else 1 if (check or diff) and outcome.changed else 0)


# ================================================================================================ --to bridge
def _load_bridge(config_path: str, target_spec: str | None, source_spec: str | None, force: bool):
    from migrator.engine.bridge_table import load_bridge_table
    from migrator.engine.table import load_table
    from migrator.migrate.bridge_mapping import load_bridge_mapping

    try:
        table = load_table()
        bridge = load_bridge_table()
        target = resolve_bridge_target(target_spec)
        source = resolve_source(source_spec)
        if config_path.endswith(".py"):
            from migrator.python.bridge_from_nemo2 import load_nemo2_mapping

            mapping = load_nemo2_mapping(config_path, table, bridge, target, force=force)
        else:
            mapping = load_bridge_mapping(config_path, table, bridge, target, source, force=force)
    except MigratorError as exc:
        _usage(str(exc))
    _say_messages(mapping)
    return table, bridge, mapping


def run_bridge_patch(paths: tuple[str, ...], mapping, bridge, *, diff: bool, check: bool) -> PatchOutcome:
    from migrator.python.bridge_patch import patch_bridge_bytes

    def summary(result) -> str:
        return f"{len(result.changes)} field{'s' * (len(result.changes) != 1)}: {', '.join(result.changes)}"

    return _patch_files(
        paths, (b"megatron.bridge", b"CheckpointConfig"),
        lambda data, path: patch_bridge_bytes(data, path, mapping, bridge),
        blocked=lambda result: [(b.row, b.column, b.label, b.why, b.wanted) for b in result.blocked],
        summary=summary, not_edited=lambda n: f"{n} not edited", diff=diff, check=check)


def _patch_usage(paths: tuple[str, ...], patch_mode: bool, with_output: bool, emit: str) -> None:
    """Files to patch come with --patch and only with it; --patch writes no other output (`with_output`: an --emit
    form, -o or JSON was asked for)."""
    if paths and not patch_mode:
        _usage(f"unexpected arguments {' '.join(paths)} (files to patch need --patch)")
    if patch_mode and not paths:
        _usage("--patch needs the Python files (or folders) to patch")
    if patch_mode and with_output:
        _usage(f"--patch cannot be combined with {emit}, -o or --output-format json")


def _config_bridge(config_path, paths, emit_python, emit_yaml, emit_overrides, patch_mode, strip, output_path,
                   output_format, target_spec, source_spec, force, diff, check) -> None:
    forms = [name for name, on in (("--emit-python", emit_python), ("--emit-yaml", emit_yaml),
                                   ("--emit-overrides", emit_overrides)) if on]
    if len(forms) > 1:
        _usage(f"{' and '.join(forms)} cannot be combined: choose one form")
    _patch_usage(paths, patch_mode, bool(forms or output_path or output_format == "json"), "--emit-*")
    if strip:
        _usage("--strip is not available with --to bridge (strip after migrating to the form you keep)")
    if (diff or check) and not patch_mode:
        _usage("--diff and --check apply to --patch")
    if diff and check:
        _usage("--diff and --check cannot be combined")
    table, bridge, mapping = _load_bridge(config_path, target_spec, source_spec, force)
    if mapping.refused:
        if output_format == "json" and not patch_mode:
            _write_output(json.dumps(mapping.as_json(), indent=2, ensure_ascii=False) + "\n", output_path)
        _refuse(mapping)
    if patch_mode:
        outcome = run_bridge_patch(paths, mapping, bridge, diff=diff, check=check)
        raise SystemExit(2 if outcome.errors else 1 if (check or diff) and outcome.changed else 0)
    try:
        if output_format == "json":
            text = json.dumps(mapping.as_json(), indent=2, ensure_ascii=False) + "\n"
        elif emit_yaml:
            from migrator.migrate.bridge_forms import emit_yaml as render

            text = render(mapping)
        elif emit_overrides:
            from migrator.migrate.bridge_forms import emit_overrides as render

            text = render(mapping)
            for message in mapping.messages:
                if message.severity == "info":
                    _say("note", message.text)
        else:
            from migrator.python.bridge_emit import emit_bridge

            text = emit_bridge(mapping)
    except MigratorError as exc:  # pragma: no cover - the emitters re-check what they built
        _usage(str(exc))
    _write_output(text, output_path)
    raise SystemExit(0)
