"""I/O fault injection for a whole `nemo-migrate` process, installed as its `sitecustomize` (see io_faults.py).

CI runs as root, so permission-based faults never happen there: the fault is injected at the Python level around
the I/O call itself. The environment variable NEMO_MIGRATE_FAULT holds one JSON object:

    {"fn": "copy_file_range", "at": 3, "kind": "errno", "errno": "ENOSPC", "log": "/path/to/log.json"}

`fn` is one of FUNCTIONS; the `at`-th call of it (counted over the whole process) fails:
- "errno": raises OSError(errno) (with the path as filename for the calls that take a path, as the OS does);
- "short": does the real call for about half of what was asked and returns that smaller count;
- "zero": returns 0 (an empty read) without doing anything, once;
- "stuck": returns 0 (an empty read) on that call and on every later one (a call that never progresses);
- "lie" (writes and copies only): returns the full count without writing anything (lost data: what the
  size and content checks before `metadata.json` are for);
- "count": no fault; the log then holds how many times each function was called (a census of a clean run).
`log` receives {"fired": bool, "calls": {fn: n}} when the process exits normally (and "fired" as soon as it fires).
With "match": "SUFFIX", only the calls of `fn` whose path argument ends with SUFFIX are counted (os calls).
"""
from __future__ import annotations

import builtins
import errno
import io
import json
import os

FUNCTIONS = ("write", "pwrite", "copy_file_range", "sendfile", "fsync", "rename", "replace", "mkdir", "open",
             "link", "pread", "preadv", "builtins.open", "file.write")
KINDS = ("errno", "short", "zero", "stuck", "lie")
LYING = ("write", "pwrite", "copy_file_range", "sendfile", "file.write")
# the calls for which a short or empty result means something (reads, writes, copies)
COUNTED = ("write", "pwrite", "copy_file_range", "sendfile", "pread", "preadv", "file.write")
_PATH_CALLS = ("rename", "replace", "mkdir", "open", "link", "builtins.open")


def install(spec: dict) -> None:
    real = {name: getattr(os, name) for name in FUNCTIONS if "." not in name and hasattr(os, name)}
    real_open = builtins.open
    real_os_open, real_os_write, real_os_close = os.open, os.write, os.close
    calls: dict[str, int] = {}
    state = {"fired": False}
    target, at, kind = spec["fn"], int(spec.get("at", 0)), spec["kind"]
    code = getattr(errno, spec.get("errno", "EIO"))
    log = spec.get("log")

    def write_log() -> None:
        if not log:
            return
        data = json.dumps({"fired": state["fired"], "calls": calls}).encode()
        fd = real_os_open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            real_os_write(fd, data)
        finally:
            real_os_close(fd)

    def hit(name: str) -> bool:
        calls[name] = calls.get(name, 0) + 1
        if name != target or kind == "count":
            return False
        n = calls[name]
        if n == at or (kind == "stuck" and n > at):
            if not state["fired"]:
                state["fired"] = True
                write_log()
            return True
        return False

    def error(*paths: object) -> OSError:
        named = [os.fsdecode(p) if isinstance(p, (str, bytes, os.PathLike)) else None for p in paths]
        return OSError(code, os.strerror(code), *named[:1], *([None, named[1]] if len(named) > 1 else []))

    match = spec.get("match")  # only calls whose path argument ends with this count (path calls only)

    def wrap(name: str):
        call = real[name]

        def faulty(*args, **kwargs):
            if match is not None and not (name in _PATH_CALLS and args
                                          and os.fsdecode(args[0]).endswith(match)):
                return call(*args, **kwargs)
            if not hit(name):
                return call(*args, **kwargs)
            if kind == "errno" or name not in COUNTED:
                raise error(*args[:2]) if name in _PATH_CALLS else error()
            empty = b"" if name == "pread" else 0
            if kind in ("zero", "stuck"):
                return empty
            if kind == "lie":
                if name in ("write", "pwrite"):
                    return len(memoryview(args[1]).cast("B"))
                if name == "copy_file_range":
                    return args[2]
                if name == "sendfile":
                    return args[3]
                return call(*args, **kwargs)  # reads do not lie here
            # short: the real call for about half of what was asked
            if name in ("write", "pwrite"):
                data = memoryview(args[1]).cast("B")
                return call(args[0], data[:max(1, len(data) // 2)], *args[2:])
            if name == "copy_file_range":
                return call(args[0], args[1], max(1, args[2] // 2), *args[3:], **kwargs)
            if name == "sendfile":
                return call(args[0], args[1], args[2], max(1, args[3] // 2))
            if name == "pread":
                return call(args[0], max(1, args[1] // 2), *args[2:])
            if name == "preadv":
                first = memoryview(args[1][0]).cast("B")
                return call(args[0], [first[:max(1, len(first) // 2)]], *args[2:])
            return call(*args, **kwargs)  # pragma: no cover
        return faulty

    class FaultyFile:
        """A file opened for writing whose `write` calls are counted (and one of them fails)."""

        def __init__(self, handle) -> None:
            self._handle = handle

        def write(self, data):
            if not hit("file.write"):
                return self._handle.write(data)
            if kind == "errno":
                raise OSError(code, os.strerror(code))
            if kind in ("zero", "stuck"):
                return 0
            if kind == "lie":
                return len(data)
            half = max(1, len(data) // 2)
            return self._handle.write(data[:half])

        def __enter__(self):
            self._handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self._handle.__exit__(*exc)

        def __iter__(self):
            return iter(self._handle)

        def __getattr__(self, name):
            return getattr(self._handle, name)

    def faulty_open(file, mode="r", *args, **kwargs):
        writing = any(c in mode for c in "wax+")
        if writing and hit("builtins.open") and kind == "errno":
            raise error(file)
        handle = real_open(file, mode, *args, **kwargs)
        if writing and target == "file.write":
            return FaultyFile(handle)
        return handle

    for name in real:
        setattr(os, name, wrap(name))
    builtins.open = faulty_open
    io.open = faulty_open

    import atexit

    atexit.register(write_log)


_SPEC = os.environ.get("NEMO_MIGRATE_FAULT")
if _SPEC:
    install(json.loads(_SPEC))
