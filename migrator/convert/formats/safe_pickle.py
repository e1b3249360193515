"""Read and rewrite pickles without importing or running anything they name.

A torch_dist `.metadata` file is a pickle of `torch.distributed.checkpoint.metadata.Metadata`. Loading it with
`pickle.load` would import (and could run) whatever the file names, and importing torch alone costs about two
seconds and a few hundred MB, which the same-dtype fast path of `convert` does not otherwise need.

So we unpickle into *stand-ins*: every global the file refers to must be on an allowlist, and it becomes a
stand-in class that only records how it was called (constructor arguments and `__setstate__` state). Nothing of
the real class runs, nothing is imported. The stand-ins can then be edited (renamed keys) and pickled again;
the writer emits exactly the global names it read, so the output still unpickles into the real torch classes.
"""
from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any, Iterable

from migrator.errors import MigratorError


class PickledObject:
    """An object described by a pickle, kept as data: `args` for its constructor and the `state` it was built with.

    Subclasses are made per global name by `stand_in()`; `pickle_module` / `pickle_name` hold that name. The same
    subclass object also stands for globals that are plain values (e.g. `torch.bfloat16`).
    """

    pickle_module: str = ""
    pickle_name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickledObject":
        # NEWOBJ / NEWOBJ_EX call cls.__new__(cls, *args) without __init__; REDUCE calls cls(*args), which runs both.
        obj = object.__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        obj.via = "newobj"
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.via = "reduce"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __reduce_ex__(self, protocol: int) -> tuple:
        cls = type(self)
        if self.via == "reduce":
            return (cls, self.args, self.state)
        if self.kwargs:
            return (copyreg.__newobj_ex__, (cls, self.args, self.kwargs), self.state)
        return (copyreg.__newobj__, (cls, *self.args), self.state)

    def __repr__(self) -> str:
        return brief(self, 400)


_STAND_INS: dict[tuple[str, str], type[PickledObject]] = {}


def brief(value: Any, limit: int = 120) -> str:
    """A short one-line description of unpickled data for error messages: at most `limit` characters, a few levels
    deep, a few items per container, control characters escaped. `repr` would expand shared references (a pickle
    can name one list twice at every level: 2**depth items), recurse without bound and print newlines."""
    out: list[str] = []
    room = [limit + 1]

    def emit(text: str) -> None:
        out.append(text[:room[0]])
        room[0] -= len(text)

    def walk(v: Any, depth: int) -> None:
        if room[0] <= 0:
            return
        if depth > 3:
            emit("...")
        elif isinstance(v, PickledObject):
            emit(f"<{v.pickle_module}.{v.pickle_name} args=")
            walk(v.args, depth + 1)
            emit(" state=")
            walk(v.state, depth + 1)
            emit(">")
        elif isinstance(v, type):
            emit(global_name(v) or v.__name__)
        elif isinstance(v, (dict, list, tuple, set, frozenset)):
            opening, closing = {dict: "{}", list: "[]", tuple: "()"}.get(type(v), "{}")
            emit(opening)
            items = v.items() if isinstance(v, dict) else v
            for i, item in enumerate(items):
                if i:
                    emit(", ")
                if i >= 6 or room[0] <= 0:
                    emit(f"... {len(v)} items")
                    break
                if isinstance(v, dict):
                    walk(item[0], depth + 1)
                    emit(": ")
                    walk(item[1], depth + 1)
                else:
                    walk(item, depth + 1)
            emit("," if isinstance(v, tuple) and len(v) == 1 else "")
            emit(closing)
        elif isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 128:
            emit(f"<an int of {v.bit_length()} bits>")
        elif isinstance(v, (str, bytes, bytearray)):
            emit(repr(v[:limit]))
        elif v is None or isinstance(v, (bool, int, float)):
            emit(repr(v))
        else:
            emit(f"<{type(v).__name__}>")

    walk(value, 0)
    text = "".join(out)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def stand_in(module: str, name: str) -> type[PickledObject]:
    """The (cached) stand-in class for the global `module.name`."""
    key = (module, name)
    cls = _STAND_INS.get(key)
    if cls is None:
        cls = type(name, (PickledObject,), {"pickle_module": module, "pickle_name": name})
        _STAND_INS[key] = cls
    return cls


def make_object(module: str, name: str, *args: Any, state: Any = None, via: str = "newobj") -> PickledObject:
    """A stand-in object to be pickled as `module.name` (NEWOBJ, or REDUCE for via="reduce") with `state`."""
    obj = stand_in(module, name).__new__(stand_in(module, name), *args)
    obj.via = via
    obj.state = state
    return obj


class PersistentRef:
    """A persistent id read from a pickle (torch.save's reference to a tensor storage record), written back as is."""

    __slots__ = ("pid",)

    def __init__(self, pid: Any) -> None:
        self.pid = pid

    def __repr__(self) -> str:
        return f"PersistentRef({self.pid!r})"


def global_name(value: Any) -> str | None:
    """"module.name" if `value` is a stand-in class (a global value such as torch.bfloat16), else None."""
    if isinstance(value, type) and issubclass(value, PickledObject):
        return f"{value.pickle_module}.{value.pickle_name}"
    return None


def is_instance_of(value: Any, module: str, name: str) -> bool:
    """True when `value` is a stand-in object of the class `module.name`."""
    return isinstance(value, PickledObject) and (value.pickle_module, value.pickle_name) == (module, name)


class _AllowlistUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, allowed: frozenset[tuple[str, str]], what: str,
                 persistent: bool) -> None:
        super().__init__(file)
        self._allowed = allowed
        self._what = what
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> type[PickledObject]:
        if (module, name) in self._allowed:
            return stand_in(module, name)
        raise MigratorError(f"{self._what}: refers to {module}.{name}, which is not on the allowlist of "
                            "classes a checkpoint may name; refusing to load it")

    def persistent_load(self, pid: Any) -> Any:
        if not self._persistent:
            raise MigratorError(f"{self._what}: holds a persistent reference, which a checkpoint index never has")
        return PersistentRef(pid)


def load_allowlisted(data: bytes, allowed: Iterable[tuple[str, str]], what: str, persistent: bool = False) -> Any:
    """Unpickle `data` into stand-ins; any global outside `allowed` raises MigratorError naming `what`.

    With `persistent`, persistent ids (torch.save's storage references) come back as `PersistentRef`s.
    """
    try:
        return _AllowlistUnpickler(io.BytesIO(data), frozenset(allowed), what, persistent).load()
    except MigratorError:
        raise
    except Exception as error:  # truncated or corrupt pickles raise many types
        raise MigratorError(f"{what}: not a readable pickle ({type(error).__name__}: {error})") from None


class StandInPickler(pickle._Pickler):  # type: ignore[name-defined]  # the pure-Python pickler lets us write globals
    """Writes stand-ins back under the global names they were read from, and refuses every other global.
    `PersistentRef`s are written back as persistent ids."""

    def persistent_id(self, obj: Any) -> Any:
        return obj.pid if isinstance(obj, PersistentRef) else None

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if not (isinstance(obj, type) and issubclass(obj, PickledObject) and obj is not PickledObject):
            raise pickle.PicklingError(f"refusing to write a reference to {obj!r}: only names read from the "
                                       "source index are written back")
        if self.proto >= 4:
            self.save(obj.pickle_module)
            self.save(obj.pickle_name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.pickle_module}\n{obj.pickle_name}\n".encode("utf-8"))
        self.memoize(obj)


def dump_stand_ins(obj: Any, protocol: int = 4) -> bytes:
    """Pickle a tree of plain values and stand-ins; the output names only the globals the stand-ins carry.
    Raises RecursionError for a tree nested deeper than the interpreter's recursion limit (callers name the file)."""
    buffer = io.BytesIO()
    StandInPickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()
