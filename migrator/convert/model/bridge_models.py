"""The Megatron-Bridge table (`rules/bridge_models.yaml`): release lines, provider classes, and where each name exists.

`--target megatron-bridge=X` (or `X..Y`) selects release lines; every `_target_` and field the Bridge writer emits
must exist at every git tag of those lines (`BridgeTable.absent`). The table is plain data read with ruamel.yaml and
cached as JSON (like the NeMo 2.0 model table); the test suite validates it with pydantic.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from migrator.errors import MigratorError

RULES_FILE = "bridge_models.yaml"
TARGET_KEY = "megatron-bridge"


@dataclass(frozen=True)
class Release:
    name: str  # "0.3"
    tags: tuple[str, ...]  # ("v0.3.0", "v0.3.1")
    megatron_core: str


@dataclass(frozen=True)
class BridgeTable:
    releases: dict[str, Release]  # in release order
    providers: dict[str, str]  # kind ("gpt" | "mamba") -> provider class path
    callables: dict[str, str]  # NeMo-side import path -> Bridge-side import path
    tokenizer: str
    checkpoint: str
    names: dict[str, tuple[str, ...]]  # emitted name -> tags where it is absent

    def span(self, spec: str | None) -> list[Release]:
        """The release lines of `--target megatron-bridge=SPEC` ("0.3", "0.3..0.6", "0.4.."; None: all)."""
        order = list(self.releases)
        if spec is None or spec == "":
            return list(self.releases.values())
        low, sep, high = spec.partition("..")
        for part in (low, high):
            if part and part not in self.releases:
                line = next((r.name for r in self.releases.values() if {part, f"v{part}"} & set(r.tags)), None)
                if line is not None:
                    raise MigratorError(f"--target {TARGET_KEY}={spec}: {part} is a tag of the {line} line; convert "
                                        f"takes release lines ({TARGET_KEY}={line} checks every {line}.x tag)")
                raise MigratorError(f"--target {TARGET_KEY}={spec}: unknown release {part!r} (known: "
                                    f"{', '.join(order)})")
        if not sep:
            return [self.releases[low]]
        start = order.index(low) if low else 0
        stop = order.index(high) if high else len(order) - 1
        if start > stop:
            raise MigratorError(f"--target {TARGET_KEY}={spec}: {low} is newer than {high}")
        return [self.releases[name] for name in order[start:stop + 1]]

    def absent(self, name: str, span: list[Release]) -> list[str]:
        """Tags of `span` where `name` (a `_target_` or `section.field`) does not exist."""
        if name not in self.names:
            raise MigratorError(f"{RULES_FILE}: {name} is not in the names table (scripts/bridge_names.py --write)")
        tags = {t for release in span for t in release.tags}
        return sorted(tags & set(self.names[name]))


def parse_target(text: str | None) -> str | None:
    """The `megatron-bridge=` part of `--target` ("megatron-bridge=0.3", "megatron-bridge=0.3..0.6"), or None.

    The syntax is the one `lint`/`migrate-config --to bridge` take (`migrator.versions.parse_version_set`; a
    `megatron-core=` part is accepted and does not matter to a checkpoint); the release names are checked by
    `BridgeTable.span`, where X..Y spans release lines."""
    from migrator.versions import parse_version_set

    if text is None or not text.strip():
        return None
    value = parse_version_set(text, option="--target", bridge=True).get(TARGET_KEY)
    return str(value).strip() if value is not None else None


def rules_path() -> Path:
    from migrator.engine.table import rules_dir

    path = rules_dir() / RULES_FILE
    if not path.is_file():
        raise MigratorError(f"{RULES_FILE}: not found in {path.parent} (broken installation)")
    return path


def parse_bridge_table(data: dict[str, Any], source: str) -> BridgeTable:
    try:
        releases = {str(name): Release(str(name), tuple(r["tags"]), str(r["megatron_core"]))
                    for name, r in data["releases"].items()}
        table = BridgeTable(
            releases=releases,
            providers={str(k): str(v) for k, v in data["providers"].items()},
            callables={str(k): str(v) for k, v in data["callables"].items()},
            tokenizer=str(data["tokenizer"]),
            checkpoint=str(data["checkpoint"]),
            names={str(k): tuple((v or {}).get("absent_in") or ()) for k, v in (data.get("names") or {}).items()},
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise MigratorError(f"{source}: malformed Bridge table ({type(e).__name__}: {e})") from None
    return table


@lru_cache(maxsize=4)
def load_bridge_table(path: Path | None = None) -> BridgeTable:
    from migrator.engine.table import cached_data

    path = path or rules_path()

    def parse() -> dict[str, Any]:
        from ruamel.yaml import YAML

        with path.open(encoding="utf-8") as f:
            return YAML(typ="safe", pure=True).load(f)

    return parse_bridge_table(cached_data("bridge-models", [path], parse), path.name)
