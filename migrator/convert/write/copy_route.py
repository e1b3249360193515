"""The fast route for a torch_dist source that keeps its dtype: copy or link the data files, rewrite the index.

The `.distcp` data files hold no key names, so they go to `weights/` unchanged: copied in the kernel from the
`.nemo` tar's byte ranges (or from an extracted folder), hard-linked with `--link`, or streamed from a compressed
tar. `.metadata` is rewritten with NeMo 2.0 keys (`model.` -> `module.`). Sharded objects that are reset or
added (see `extra_state`) go into one extra data file; the bytes they replace stay unreferenced in the copy.
"""
from __future__ import annotations

import posixpath
import re
import threading
from pathlib import Path

from migrator.convert.formats.chunks import key_renamer
from migrator.convert.read.source import Source
from migrator.convert.read.torch_dist import renamed_metadata
from migrator.convert.storage.fileops import check_cancel, check_size
from migrator.convert.storage.progress import Progress
from migrator.convert.storage.workers import run_tasks
from migrator.convert.write.dcp import DcpWriter, none_object_blob, write_file
from migrator.convert.write.plan import Plan
from migrator.errors import MigratorError

_DATA_FILE = re.compile(r"^__(\d+)_(\d+)\.distcp$")


def write_copied_weights(source: Source, plan: Plan, weights: Path, *, workers: int, progress: Progress,
                         cancel: threading.Event) -> dict[str, int]:
    """Fill `weights/` (except common.pt and metadata.json); returns {"copy": n, "link": n} file counts."""
    weights.mkdir(parents=True, exist_ok=True)
    counts = {"copy": 0, "link": 0}
    lock = threading.Lock()
    link = plan.mode == "link"

    def copy_one(member: str):
        def task(_slot: object) -> None:
            how = source.copy_member(member, weights / posixpath.basename(member), link=link,
                                     progress=progress.advance, cancel=cancel)
            with lock:
                counts[how] += 1
        return task

    members = list(plan.data_files)
    if source.random_access:
        run_tasks([copy_one(m) for m in members], [None] * max(1, min(workers, len(members))), cancel)
    else:
        from migrator.convert.storage.fileops import copy_stream

        for member, stream in source.iter_members(members):
            check_cancel(cancel)
            try:
                copy_stream(stream, source.members[member], weights / posixpath.basename(member),
                            progress=progress.advance, cancel=cancel)
            except EOFError:
                raise MigratorError(f"{source.describe(member)}: truncated archive") from None
            counts["copy"] += 1

    overrides = _write_object_overrides(plan, weights)
    assert source.dcp_index is not None
    write_file(weights / ".metadata", renamed_metadata(source.dcp_index, key_renamer(*plan.key_map), overrides))
    for member, size in plan.data_files.items():  # every copied or linked file holds what the plan says
        check_size(weights / posixpath.basename(member), size)
    return counts


def _write_object_overrides(plan: Plan, weights: Path) -> dict[str, tuple[str, int, int]]:
    """Write reset / added sharded objects into one new data file; returns their index entries."""
    changed = [o for o in plan.objects if o.action != "carry"]
    if not changed:
        return {}
    used = [int(m.group(2)) for name in plan.data_files
            for m in [_DATA_FILE.match(posixpath.basename(name))] if m]
    writer = DcpWriter(weights, files=1, first_index=max(used, default=-1) + 1)
    data_file = writer.files[0]
    blob = none_object_blob()
    overrides = {}
    try:
        for obj in changed:
            start = data_file.handle.tell()
            data_file.handle.write(blob)
            overrides[obj.new_key] = (data_file.name, start, len(blob))
    except BaseException:
        writer.close_files(check=False)
        raise
    writer.close_files()  # and checks the file's size against the bytes written into it
    return overrides
