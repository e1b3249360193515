"""User-facing errors: one line, naming the file (and line, key, member or tensor); the CLI exits 2.

The CLI's exit codes (one model for every command, applied in `migrator.cli.main`):
0 success; 1 findings (lint), a refusal (migrate-config) or differences (verify); 2 bad input, a usage error or an
I/O error (a `MigratorError`: one line naming the file); 3 a bug (an unexpected exception: one line asking for a
report, the traceback only with `--debug`); 128 + N when signal N ended the run (129 SIGHUP, 130 SIGINT, 143
SIGTERM).
"""
from __future__ import annotations

import signal

EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2
EXIT_BUG = 3


class MigratorError(Exception):
    """Bad input or an operation the tool refuses. `str(error)` is the whole one-line message."""

    exit_code = EXIT_BAD_INPUT


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) ended the run. A KeyboardInterrupt, so every cleanup written for Ctrl-C
    (`except KeyboardInterrupt`, `finally`) runs for the other signals too."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
