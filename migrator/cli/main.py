"""`nemo-migrate` command group with lazily imported subcommands, and the process's error model.

Every command ends with one of these exit codes (see `migrator.errors`): 0 success; 1 findings, a refusal or
differences; 2 bad input, a usage or an I/O error (one line naming the file); 3 a bug: an unexpected exception is
one line asking for a report, and its traceback is printed only with the global `--debug` flag (or
NEMO_MIGRATE_DEBUG=1); 128 + N when signal N ended the run (129 SIGHUP, 130 SIGINT, 143 SIGTERM), with one line
and no traceback, from the very first moment: a Ctrl-C while the CLI itself still loads is answered too.
"""
from __future__ import annotations

import os
import sys


_pending_signal: int | None = None  # a signal that arrived while this module loaded: answered as soon as _run starts


def _defer_signal(signum: int, frame: object) -> None:
    global _pending_signal
    if _pending_signal is None:
        _pending_signal = signum


def _is_cli_process() -> bool:
    """This process is `nemo-migrate`/`migrate-config` (the console scripts, or `python -m migrator`), not a
    program or a test that imports the module."""
    argv0 = sys.argv[0] if sys.argv else ""
    return (os.path.basename(argv0) in ("nemo-migrate", "migrate-config")
            or argv0.endswith(os.path.join("migrator", "__main__.py")))


if _is_cli_process():
    # SIGINT, SIGTERM and SIGHUP while click and this module load (the first ~0.05 s) are noted, not raised in
    # the middle of an import or a class statement, and answered once _run starts: one line, exit 128 + N.
    # (`_signal` is built in: no import cost; the `signal` module pulls in enum.)
    try:
        import _signal

        for _name in ("SIGINT", "SIGTERM", "SIGHUP"):
            if hasattr(_signal, _name) and _signal.getsignal(getattr(_signal, _name)) in (
                    _signal.SIG_DFL, _signal.default_int_handler):
                _signal.signal(getattr(_signal, _name), _defer_signal)
    except (ImportError, ValueError, OSError):  # not the main thread, or no such module: the defaults stay
        pass

import importlib  # noqa: E402 - after the handlers above
import signal  # noqa: E402
from collections.abc import Callable  # noqa: E402

import click  # noqa: E402

from migrator import __version__  # noqa: E402
from migrator.errors import EXIT_BUG, Interrupted, MigratorError, signal_name  # noqa: E402

# name -> "module:attribute"; modules are imported only when the subcommand runs or help is shown.
SUBCOMMANDS: dict[str, str] = {
    "lint": "migrator.cli.lint_cmd:lint",
    "rule": "migrator.cli.rule_cmd:rule",
    "schema": "migrator.cli.schema_cmd:schema",
    "convert": "migrator.cli.convert_cmd:convert",
    "verify": "migrator.cli.convert_cmd:verify",
    "config": "migrator.cli.config_cmd:config",
    "patch": "migrator.cli.config_cmd:patch",
}

DEBUG_ENV = "NEMO_MIGRATE_DEBUG"
HANDLED_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                                    getattr(signal, "SIGHUP", None)) if s is not None)
_debug = False  # the global --debug flag (set while the group's options are parsed)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    global _debug
    _debug = _debug or bool(value)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nemo-migrate")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
              help=f"On an internal error (exit 3), print the traceback too (also: {DEBUG_ENV}=1).")
def cli() -> None:
    """Move NeMo 1.0 training setups to NeMo 2.0: lint configs and code, rewrite them, convert checkpoints.

    Exit codes: 0 success; 1 findings, a refusal or differences; 2 bad input, usage or I/O error; 3 internal error
    (a bug: please report it); 129/130/143 ended by SIGHUP/SIGINT/SIGTERM.
    """


def main() -> None:
    _run(lambda: cli, "nemo-migrate", sys.argv[1:])


def migrate_config_main() -> None:
    """`migrate-config OLD.yaml ...` is `nemo-migrate config OLD.yaml ...` (`--debug` accepted anywhere before
    `--`)."""
    args = sys.argv[1:]
    end = args.index("--") if "--" in args else len(args)
    global _debug
    if "--debug" in args[:end]:
        _debug = True
        args = [a for a in args[:end] if a != "--debug"] + args[end:]
    _run(lambda: LazyGroup().get_command(click.Context(cli), "config"), "migrate-config", args)


def in_import(frame: object) -> bool:
    """The thread whose current frame is `frame` runs Python's import machinery (possibly a C extension's init)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):  # type: ignore[attr-defined]
            return True
        frame = frame.f_back  # type: ignore[attr-defined]
    return False


def _raise_interrupted(signum: int, frame: object) -> None:
    """Raise `Interrupted` in the main thread, but not inside an import: a KeyboardInterrupt there can leak the
    import lock or, inside a C extension's initialisation (torch, megatron-core), abort the process; the signal is
    delivered again 50 ms later instead."""
    global _raised, _redelivering
    if _raised is not None:
        return  # the first signal is being answered: another one must not cut that short
    if in_import(frame):
        if not _redelivering:
            import threading

            def again() -> None:
                global _redelivering
                _redelivering = False
                try:
                    signal.pthread_kill(threading.main_thread().ident, signum)  # type: ignore[arg-type]
                except (OSError, ValueError):
                    pass

            _redelivering = True
            timer = threading.Timer(0.05, again)
            timer.daemon = True
            timer.start()
        return
    _raised = signum
    raise Interrupted(signum)


_raised: int | None = None  # the signal an Interrupted was raised for: later signals are ignored
_redelivering = False  # a deferred signal will be delivered again shortly


def _debugging() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _report_address() -> str:
    try:
        from importlib.metadata import metadata

        for entry in metadata("nemo-migrator").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip().lower() in ("issues", "bug tracker", "tracker") and url.strip():
                return f"at {url.strip()}"
    except Exception:  # noqa: BLE001 - the address is a courtesy; the report line must still print
        pass
    return "to the maintainers"


def _say(prog: str, text: str) -> None:
    try:
        sys.stderr.write(f"{prog}: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _invoke(command: click.Command, prog: str, args: list[str]) -> int:
    """What `click.Command.main` does, minus its exception handling (which turns a KeyboardInterrupt into an
    empty line and "Aborted!", and an EOFError, a bug, into the same): `_run` decides how each ending looks."""
    completion = getattr(command, "_main_shell_completion", None)  # _NEMO_MIGRATE_COMPLETE=bash_source etc.
    if completion is not None:
        completion({}, prog)
    try:
        with command.make_context(prog, list(args)) as ctx:
            command.invoke(ctx)
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code
    return 0


def _run(get_command: Callable[[], click.Command], prog: str, args: list[str]) -> None:
    """Run a click command as the process: map every way it can end to the exit codes of the module docstring."""
    import traceback

    for signum in HANDLED_SIGNALS:
        signal.signal(signum, _raise_interrupted)
    code = 0
    answered = False
    try:
        try:
            if _pending_signal is not None:
                raise Interrupted(_pending_signal)
            code = _invoke(get_command(), prog, args)
            sys.stdout.flush()
        except click.exceptions.Abort:  # raised by click's prompts only: none here
            _say(prog, "aborted")
            code = 1
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if exit_.code is not None and not isinstance(exit_.code, int):
            _say(prog, str(exit_.code))
    except KeyboardInterrupt as interrupt:
        signum = getattr(interrupt, "signum", signal.SIGINT)
        if _debugging():
            traceback.print_exc()
        _say(prog, f"interrupted by {signal_name(signum)}")
        code = 128 + signum
        answered = True
    except click.ClickException as error:
        error.show()
        code = error.exit_code
    except MigratorError as error:
        if _debugging():
            traceback.print_exc()
        _say(prog, f"error: {error}")
        code = error.exit_code
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say, as click does
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        code = 1
    except OSError as error:  # the environment (a full disk, a permission): one line naming the file, exit 2
        if _debugging():
            traceback.print_exc()
        where = f"{error.filename}: " if error.filename else ""
        _say(prog, f"error: {where}{error.strerror or error}")
        code = 2
    except BaseException as error:  # noqa: BLE001 - a bug: one line (the traceback with --debug), exit 3 (also
        # a BaseException some library raises, e.g. torch DCP's CheckpointException)
        if _debugging():
            traceback.print_exc()
        message = str(error).splitlines()[0] if str(error).strip() else "(no message)"
        _say(prog, f"internal error: {type(error).__name__}: {message} (please report this {_report_address()}; "
                   f"run with --debug for the traceback)")
        code = EXIT_BUG
    finally:
        # the outcome is decided: a signal during the interpreter's shutdown no longer changes it
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    if _raised is not None and not answered:
        # the KeyboardInterrupt was swallowed or turned into another error on its way up (e.g. inside a C
        # function that reported it as a failure): the run was still interrupted, whatever it printed
        _say(prog, f"interrupted by {signal_name(_raised)}")
        code = 128 + _raised
    raise SystemExit(code)
