"""Release numbers and the `--target` / `--source` version sets (pluto-style: verdicts depend on them)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from migrator.errors import MigratorError

_VERSION_RE = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[.-]?(rc|a|b|dev)\.?(\d+))?$")

# The components a target may name, and the aliases users type for them.
COMPONENT_ALIASES = {
    "nemo": "nemo",
    "nemo_toolkit": "nemo",
    "megatron-core": "megatron-core",
    "megatron_core": "megatron-core",
    "mcore": "megatron-core",
}
# Megatron-Bridge releases (`--to bridge`); a separate set so that a NeMo 2.0 target never accepts one silently.
BRIDGE_ALIASES = {
    "megatron-bridge": "megatron-bridge",
    "megatron_bridge": "megatron-bridge",
    "bridge": "megatron-bridge",
}


@dataclass(frozen=True, order=True)
class Version:
    """A release number compared numerically; a pre-release (rc) sorts before its final release."""

    major: int
    minor: int = 0
    patch: int = 0
    pre: tuple[int, int] = field(default=(1, 0), compare=True)  # (0, n) for rcN, (1, 0) for a final release
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION_RE.match(text.strip())
        if not match:
            raise ValueError(f"not a version number: {text!r}")
        major, minor, patch, pre_kind, pre_num = match.groups()
        pre = (0, int(pre_num)) if pre_kind else (1, 0)
        return cls(int(major), int(minor or 0), int(patch or 0), pre, text.strip().lstrip("v"))

    def __str__(self) -> str:
        return self.text or f"{self.major}.{self.minor}.{self.patch}"

    def at_most(self, bound: str) -> bool:
        """`2.5.3` is at most `2.5`: compare only as many components as the bound names."""
        parts = bound.split(".")
        return (self.major, self.minor, self.patch)[: len(parts)] <= tuple(int(p) for p in parts)


def parse_version_set(spec: str, *, option: str, defaults: dict[str, Version] | None = None,
                      bridge: bool = False) -> dict[str, Version]:
    """Parse `nemo=2.1,megatron-core=0.16` into {"nemo": 2.1, "megatron-core": 0.16}, filling in defaults. With
    `bridge`, the components are megatron-bridge and megatron-core (`--to bridge`)."""
    result = dict(defaults or {})
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        lowered = name.strip().lower()
        if sep and bridge and COMPONENT_ALIASES.get(lowered) == "nemo":
            raise MigratorError(f"{option}: {name.strip()}= names a NeMo release, but the destination is "
                                "Megatron-Bridge (--to bridge); use megatron-bridge=X, or --to nemo2")
        if sep and not bridge and lowered in BRIDGE_ALIASES:
            raise MigratorError(f"{option}: {name.strip()}= names a Megatron-Bridge release: use it with --to bridge "
                                "(the destination is NeMo 2.0)")
        component = BRIDGE_ALIASES.get(lowered) or COMPONENT_ALIASES.get(lowered) if bridge else \
            COMPONENT_ALIASES.get(lowered)
        if not sep or component is None:
            known = ", ".join(sorted({"megatron-bridge", "megatron-core"} if bridge
                                     else set(COMPONENT_ALIASES.values())))
            raise MigratorError(f"{option}: expected COMPONENT=VERSION with COMPONENT one of {known}, got {part!r}")
        if component == "megatron-bridge":
            result[component] = value.strip()  # resolved against the known releases by the caller
            continue
        try:
            result[component] = Version.parse(value)
        except ValueError as exc:
            raise MigratorError(f"{option}: {exc}") from None
    return result


@dataclass(frozen=True)
class Target:
    """The NeMo 2.0 stack a migration aims at."""

    nemo: Version
    megatron_core: Version

    def describe(self) -> str:
        return f"nemo={self.nemo}, megatron-core={self.megatron_core}"

    def reached(self, *, nemo: str | None = None, megatron_core: str | None = None) -> bool:
        """True when the target is at or past either named release (e.g. where a value was removed)."""
        if nemo is not None and self.nemo >= Version.parse(nemo):
            return True
        return megatron_core is not None and self.megatron_core >= Version.parse(megatron_core)


@dataclass(frozen=True)
class Source:
    """The NeMo release a NeMo 1.0 config came from; None when the user did not say."""

    nemo: Version | None = None

    def describe(self) -> str:
        return f"nemo={self.nemo}" if self.nemo else "unknown"


@dataclass(frozen=True)
class BridgeTarget:
    """The Megatron-Bridge release a migration aims at (a known, tagged release) and the megatron-core under it
    (by default the one that release pins)."""

    bridge: Version
    megatron_core: Version

    def describe(self) -> str:
        return f"megatron-bridge={self.bridge}, megatron-core={self.megatron_core}"

    def reached(self, *, bridge: str | None = None, megatron_core: str | None = None) -> bool:
        if bridge is not None and self.bridge >= Version.parse(bridge):
            return True
        return megatron_core is not None and self.megatron_core >= Version.parse(megatron_core)
