"""What lies beside the output `OUT` of a conversion: the lock, the leftovers of an interrupted run, and the
kill-safe replacement of an existing `OUT` (`--force`).

Names, all in OUT's parent folder:
- `OUT.lock`: a run holds an exclusive `flock` on it from before it looks at any leftover until its output is in
  place; a second run to the same OUT is refused while the first holds it. The file itself is only a place to
  lock (it holds the holder's pid and host, for the message): one whose lock is free (a killed run's) is simply
  taken over. It is opened with O_NOFOLLOW (never through a link), refused if it has other hard links or more
  than a lock file's few bytes, and removed when the run ends.
- `OUT.partial/`: the run's work in progress, renamed to OUT when complete. Only the run holding the lock creates or
  removes it; one found with the lock free is an interrupted run's and is removed (with a line saying so). One
  that is a link or not a folder is never followed or removed: an error.
- `OUT.spill/`: rank files of a compressed non-distributed `.nemo`, spilled to disk for the merge (removed when
  the run ends); one found with the lock free is a killed run's and is removed (with a line saying so).
- `OUT.replaced-old`: during a `--force` replacement without an atomic exchange, the previous OUT between the two
  renames. Every instant of a replacement leaves either the old or the new OUT at OUT, or the old one under this
  name with OUT absent (then the next run restores it), and a kill after the new OUT is in place leaves the old
  one here or at `OUT.partial` (removed by the next run). Copies named `OUT.replaced-XXXXXXXX` (8 hex digits) by
  older releases are recognised too.

Where the kernel offers it (Linux 3.15+, glibc 2.28+, and a file system that supports it), an existing OUT folder is
swapped with `OUT.partial` in one atomic `renameat2(RENAME_EXCHANGE)`; elsewhere two renames through
`OUT.replaced-old`.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import time
from pathlib import Path
from typing import Callable

from migrator.errors import MigratorError

Note = Callable[[str], None]

LOCK_SUFFIX = ".lock"
PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced-old"
SPILL_SUFFIX = ".spill"
_LEGACY_REPLACED = r"\.replaced-[0-9a-f]{8}"  # uuid4().hex[:8], as releases before the lock named the copy


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + LOCK_SUFFIX)


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + PARTIAL_SUFFIX)


def replaced_path(output: Path) -> Path:
    return output.with_name(output.name + REPLACED_SUFFIX)


def spill_path(output: Path) -> Path:
    return output.with_name(output.name + SPILL_SUFFIX)


def neighbours(output: Path) -> list[Path]:
    """Every fixed name a run creates, renames or removes beside OUT (the legacy copies are only ever renamed to OUT
    or removed with --force)."""
    return [partial_path(output), lock_path(output), replaced_path(output), spill_path(output)]


def replaced_copies(output: Path) -> list[Path]:
    """Previous checkpoints kept by an interrupted --force: `OUT.replaced-old` first, then older releases' copies."""
    pattern = re.compile(re.escape(output.name) + _LEGACY_REPLACED)
    try:
        names = os.listdir(output.parent if str(output.parent) else ".")
    except OSError:
        return []
    legacy = sorted(output.with_name(n) for n in names if pattern.fullmatch(n))
    ours = replaced_path(output)
    return ([ours] if os.path.lexists(ours) else []) + legacy


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a special file"


class OutputLock:
    """An exclusive `flock` on `OUT.lock` for the duration of a run (a context manager)."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = lock_path(output)
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self, note: Note | None = None) -> None:
        """Take the lock or raise MigratorError naming the run that holds it. `note` hears of a file system that
        cannot lock (the run then goes on unlocked)."""
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise MigratorError(f"{error.filename or self.path.parent}: {error.strerror or error}; cannot create the "
                                f"folder of {self.output}") from None
        for _ in range(100):  # a holder removing the file as we open it: try again with the new one
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise MigratorError(f"{self.path}: a symbolic link where the lock of {self.output} goes; never "
                                        "opened through a link: remove it") from None
                raise MigratorError(f"{self.path}: {error.strerror or error}; cannot create the lock file of "
                                    f"{self.output}") from None
            try:
                opened = os.fstat(fd)
                if not stat.S_ISREG(opened.st_mode):
                    raise MigratorError(f"{self.path}: {_kind(opened.st_mode)} where the lock file of {self.output} "
                                        "goes; remove it")
                if opened.st_nlink > 1 or opened.st_size > 4096:  # writing the pid would truncate someone's data
                    what = (f"{opened.st_nlink} hard links" if opened.st_nlink > 1 else f"{opened.st_size} bytes")
                    raise MigratorError(f"{self.path}: not a nemo-migrate lock file ({what}); never written to: "
                                        "remove it")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise MigratorError(f"{self.output}: locked by another nemo-migrate run (pid {_holder(fd)}) "
                                        f"writing it; wait for it to end or stop it ({self.path})") from None
                except OSError as error:  # ENOLCK, EOPNOTSUPP: a file system without locks
                    if note is not None:
                        note(f"{self.path}: cannot lock ({error.strerror or error}); going on without a lock: do "
                             f"not run another conversion to {self.output} meanwhile")
                    self._fd, self._inode = fd, (opened.st_dev, opened.st_ino)
                    return
                try:
                    current = os.lstat(self.path)
                except OSError:
                    current = None
                if current is None or (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
                    os.close(fd)  # locked a file its holder had just removed
                    continue
                try:  # for the message of a run refused meanwhile; a full disk fails the run later, not here
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n{socket.gethostname()}\n".encode(), 0)
                except OSError:
                    pass
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._inode = fd, (opened.st_dev, opened.st_ino)
            return
        raise MigratorError(f"{self.path}: the lock file keeps being replaced; is another program removing it?")

    def release(self) -> None:
        """Remove the lock file (while still holding the lock: a run waiting on this inode sees it gone), then
        unlock."""
        if self._fd is None:
            return
        try:
            current = os.lstat(self.path)
            if (current.st_dev, current.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = self._inode = None


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote (it writes it just after locking: wait a moment for it), and its host when
    that is another machine (a lock on a network file system)."""
    deadline = time.monotonic() + 1.0
    while True:
        lines = os.pread(fd, 300, 0).decode("utf-8", "replace").split("\n")
        if lines[0].strip().isdigit():
            host = lines[1].strip() if len(lines) > 1 else ""
            return lines[0].strip() + (f" on {host}" if host and host != socket.gethostname() else "")
        if time.monotonic() > deadline:
            return "unknown"
        time.sleep(0.02)


def leftovers(output: Path) -> list[str]:
    """What the next run will do about leftovers beside OUT (for --dry-run, which changes nothing)."""
    found = []
    copies = replaced_copies(output)
    if copies and not os.path.lexists(output):
        found.append(f"{copies[0]}: the previous checkpoint kept by an interrupted --force replace; the run will "
                     f"restore it to {output}" if len(copies) == 1 else
                     f"{output}: absent, with {len(copies)} copies kept by interrupted --force replaces; the run "
                     "will ask which to restore")
    elif copies:
        found.append(f"{', '.join(map(str, copies))}: kept by an interrupted --force replace of {output}; the run "
                     "removes it with --force")
    for partial in (partial_path(output), spill_path(output)):
        if os.path.lexists(partial):
            found.append(f"{partial}: exists; the run removes it if no other run holds {lock_path(output)}")
    return found


def recover(output: Path, *, force: bool, note: Note) -> list[Path]:
    """Under the lock: restore OUT from a copy kept by an interrupted --force replace (when OUT is absent), remove
    an interrupted run's OUT.partial, and with `force` remove kept copies of a replaced OUT that is present.
    Returns the kept copies left in place (OUT present, no `force`). Every action is reported through `note`."""
    try:
        return _recover(output, force, note)
    except OSError as error:
        raise MigratorError(f"{error.filename or output}: {error.strerror or error}; cannot clear what an "
                            f"interrupted run left beside {output}") from None


def _recover(output: Path, force: bool, note: Note) -> list[Path]:
    copies = replaced_copies(output)
    if copies and not os.path.lexists(output):
        if len(copies) > 1:
            raise MigratorError(f"{output}: absent, and {len(copies)} copies kept by interrupted --force replaces "
                                f"exist ({', '.join(p.name for p in copies)}); rename the one to keep to "
                                f"{output.name} and remove the others")
        _rename(copies[0], output)
        _fsync_dir(output.parent)
        note(f"{output}: restored from {copies[0].name}, the previous checkpoint kept by an interrupted --force "
             "replace")
        copies = []
    for partial in (partial_path(output), spill_path(output)):
        try:
            info = os.lstat(partial)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise MigratorError(f"{partial}: {_kind(info.st_mode)}, not a conversion's work in progress; "
                                "nemo-migrate neither follows nor removes it: remove it yourself")
        _remove_tree(partial)
        note(f"{partial}: removed, left by an interrupted run")
    if copies and force:
        for copy in copies:
            discard(copy, output)
            note(f"{copy}: removed, the previous checkpoint kept by an interrupted --force replace of {output}")
        return []
    return copies


def discard(copy: Path, output: Path) -> None:
    """Remove a replaced checkpoint without ever leaving part of it under a name that says "complete copy": a
    folder is first renamed to OUT.partial (which is removed whatever it holds)."""
    if os.path.isdir(copy) and not os.path.islink(copy):
        partial = partial_path(output)
        _rename(copy, partial)
        _remove_tree(partial)
    else:
        os.unlink(copy)
    _fsync_dir(output.parent)


def replace(partial: Path, output: Path) -> str | None:
    """Move the complete `partial` to `output`. An existing output (`--force`) stays at `output` or under a name
    `recover` knows at every instant, and is removed once the new one is in place. Returns a line saying what
    became of the replaced output (None when there was none)."""
    if not os.path.lexists(output):
        _rename_new(partial, output)
        _fsync_dir(output.parent)
        return None
    old = os.lstat(output)
    if stat.S_ISDIR(old.st_mode) and _exchange(partial, output):
        # OUT is the new checkpoint; OUT.partial the old one, removed now or by the next run
        try:
            _fsync_dir(output.parent)
            _remove_tree(partial)
            _fsync_dir(output.parent)
        except (OSError, KeyboardInterrupt) as error:  # the new one is in place: say so, with what is left
            return _not_removed(output, partial, error)
        return f"{output}: replaced; the previous checkpoint is removed"
    replaced = replaced_path(output)
    if os.path.lexists(replaced):
        raise MigratorError(f"{replaced}: exists (a previous checkpoint?); move or remove it, then run again")
    _rename(output, replaced)
    try:
        _rename(partial, output)
    except BaseException:
        _rename(replaced, output)
        raise
    try:
        _fsync_dir(output.parent)
        discard(replaced, output)
    except (OSError, KeyboardInterrupt) as error:
        left = replaced if os.path.lexists(replaced) else partial
        return _not_removed(output, left, error)
    return f"{output}: replaced; the previous checkpoint is removed"


def _not_removed(output: Path, left: Path, error: BaseException) -> str:
    """The line for a replaced OUT whose old checkpoint was not (entirely) removed: an I/O error, or a second
    interrupt (the conversion itself is complete and in place, so the run still succeeds)."""
    why = ("interrupted" if isinstance(error, KeyboardInterrupt) else
           f"{getattr(error, 'filename', None) or left}: {getattr(error, 'strerror', None) or error}")
    return (f"{output}: replaced, but the previous checkpoint could not be removed ({why}); what is left of it is "
            f"in {left} (the next run removes it" + (" with --force)" if left.name.endswith(REPLACED_SUFFIX) else ")"))


# The file system steps, one function each (the kill campaign stops a run just before each of them).

def _rename(source: Path, dest: Path) -> None:
    os.rename(source, dest)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path)


_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2: Callable[..., int] | None | bool = None  # libc's renameat2, looked up once; False when unavailable


def _libc_renameat2() -> Callable[..., int] | None:
    global _renameat2
    if _renameat2 is None:
        try:
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).renameat2
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            function.restype = ctypes.c_int
            _renameat2 = function
        except (OSError, AttributeError):
            _renameat2 = False
    return _renameat2 or None


def _call_renameat2(source: Path, dest: Path, flags: int) -> bool:
    """renameat2(source, dest, flags); False where the kernel, libc or file system lacks it (then the caller falls
    back); an OSError for any other failure."""
    import ctypes

    function = _libc_renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(dest), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(dest))


def _exchange(partial: Path, output: Path) -> bool:
    """Swap the two names atomically; False where that is not possible."""
    return _call_renameat2(partial, output, _RENAME_EXCHANGE)


def _rename_new(partial: Path, output: Path) -> None:
    """Rename onto an absent `output`, never replacing what may have appeared there meanwhile (RENAME_NOREPLACE;
    os.rename elsewhere)."""
    try:
        if _call_renameat2(partial, output, _RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise MigratorError(f"{output}: appeared while the conversion ran (not by nemo-migrate, which holds "
                            f"{lock_path(output)}); nothing replaced") from None
    os.rename(partial, output)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
