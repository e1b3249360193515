"""A local wheelhouse repacked from this test environment's installed distributions, so that pre-commit can build
its hook environment (`pip install .` of the checkout, plus hatchling for the build) without a package index.

Each distribution in the dependency closure is zipped back into a wheel from the files its RECORD lists inside
site-packages (compiled caches, installer metadata and scripts are left out: pip regenerates scripts from
entry_points.txt). The wheel tag is the one the installed WHEEL file records, so it fits this interpreter.
"""
from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

SKIP_METADATA = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str], extras: dict[str, set[str]] | None = None) -> list[metadata.Distribution]:
    """The installed distributions `roots` need (runtime requirements whose markers hold here, recursively)."""
    extras = extras or {}
    seen: dict[str, metadata.Distribution] = {}
    todo = [(name, extras.get(_normalize(name), set())) for name in roots]
    while todo:
        name, wanted = todo.pop()
        key = _normalize(name)
        if key in seen:
            continue
        dist = metadata.distribution(name)
        seen[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            environments = [{**default_environment(), "extra": extra} for extra in ({""} | wanted)]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                todo.append((requirement.name, set(requirement.extras)))
    return list(seen.values())


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(dist: metadata.Distribution, dest: Path) -> Path:
    site = Path(dist.locate_file(""))
    info = next(p for p in dist.files or [] if p.parts[0].endswith(".dist-info"))
    info_dir = info.parts[0]
    wheel_meta = (site / info_dir / "WHEEL").read_text()
    tag = re.search(r"^Tag: (\S+)$", wheel_meta, re.MULTILINE).group(1)
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    target = dest / f"{name}-{dist.version}-{tag}.whl"
    records = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in dist.files or []:
            parts = file.parts
            if parts[0] == ".." or "__pycache__" in parts or file.suffix == ".pyc":
                continue
            if parts[0] == info_dir and parts[-1] in SKIP_METADATA:
                continue
            source = site / file
            if not source.is_file():
                continue
            data = source.read_bytes()
            arcname = file.as_posix()
            archive.writestr(arcname, data)
            records.append(f"{arcname},{_record_hash(data)},{len(data)}")
        records.append(f"{info_dir}/RECORD,,")
        archive.writestr(f"{info_dir}/RECORD", "\n".join(records) + "\n")
    return target


def build(dest: Path, roots: list[str], skip: set[str] = frozenset()) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return [repack(dist, dest) for dist in closure(roots) if _normalize(dist.metadata["Name"]) not in skip]
