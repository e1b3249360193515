"""Writing rewritten files: atomically (never a half-written file), keeping permissions, with an optional `.bak`."""
from __future__ import annotations

import os
from pathlib import Path

from migrator.errors import MigratorError


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Replace (or create) `path` in one rename; an existing file keeps its permissions. A symbolic link is
    followed (the file it points to is replaced, the link stays); anything but a regular file is refused."""
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        raise MigratorError(f"{path}: not a regular file; nothing written")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.nemo-migrate.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def backup(path: Path) -> tuple[Path, bool]:
    """Copy `path` to `path.bak` unless a backup is already there (the oldest backup is the one worth keeping,
    as Lightning's upgrade_checkpoint does). Returns the backup path and whether it was written now."""
    target = path.with_name(path.name + ".bak")
    if target.exists():
        return target, False
    write_bytes_atomically(target, path.read_bytes())
    return target, True


def decode_for_display(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")
