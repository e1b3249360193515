"""User-facing errors: one line, naming the file (and line, key, member or tensor); the CLI exits 2."""
from __future__ import annotations


class MigratorError(Exception):
    """Bad input or an operation the tool refuses. `str(error)` is the whole one-line message."""

    exit_code = 2
