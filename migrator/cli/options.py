"""Options shared by the commands that judge configs against a target (lint, config, patch)."""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any

import click

from migrator.errors import MigratorError
from migrator.versions import BridgeTarget, Source, Target, Version, parse_version_set


@functools.lru_cache(maxsize=None)
def default_target_text() -> str:
    from migrator.engine.table import load_table

    d = load_table().releases.default_target
    return f"nemo={d.nemo},megatron-core={d.megatron_core}"


def resolve_target(spec: str | None) -> Target:
    defaults = parse_version_set(default_target_text(), option="default target")
    versions = parse_version_set(spec or "", option="--target", defaults=defaults)
    return Target(nemo=versions["nemo"], megatron_core=versions["megatron-core"])


def resolve_bridge_target(spec: str | None) -> BridgeTarget:
    """`--to bridge --target megatron-bridge=0.3[,megatron-core=0.15]`: megatron-core defaults to the one the
    release pins; the release defaults to the newest the table knows."""
    from migrator.engine.bridge_table import load_bridge_table

    bridge = load_bridge_table()
    versions = parse_version_set(spec or "", option="--target", bridge=True)
    release = bridge.resolve(versions["megatron-bridge"]) if "megatron-bridge" in versions else bridge.newest
    core = versions.get("megatron-core") or Version.parse(release.megatron_core)
    return BridgeTarget(bridge=Version.parse(release.version), megatron_core=core)


def resolve_lint_targets(spec: str | None) -> tuple[Target, BridgeTarget | None]:
    """The lint judges NeMo files and Bridge files in one run: `--target nemo=2.5,megatron-bridge=0.3` splits into
    the NeMo 2.0 target and the Bridge target (megatron-core, when given, applies to both). No megatron-bridge part:
    None (the Bridge rules use the newest known release and the megatron-core it pins)."""
    from migrator.versions import BRIDGE_ALIASES

    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    bridge_parts = [p for p in parts if p.partition("=")[0].strip().lower() in BRIDGE_ALIASES]
    nemo_parts = [p for p in parts if p not in bridge_parts]
    core = [p for p in nemo_parts if p.partition("=")[0].strip().lower() in ("megatron-core", "megatron_core", "mcore")]
    target = resolve_target(",".join(nemo_parts))
    return target, (resolve_bridge_target(",".join(bridge_parts + core)) if bridge_parts else None)


def resolve_source(spec: str | None) -> Source:
    if not spec:
        return Source()
    versions = parse_version_set(spec, option="--source")
    if set(versions) - {"nemo"}:
        raise MigratorError("--source: only nemo=VERSION can be given (the NeMo release the config came from)")
    return Source(nemo=versions.get("nemo"))


def target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--source", "source_spec", metavar="nemo=X",
        help="NeMo release the NeMo 1.0 config came from, where it matters (dist_ckpt_format defaulted to zarr "
             "before 2.0.0). Default: the newest behaviour.",
    )(func)
    func = click.option(
        "--target", "target_spec", metavar="nemo=X,megatron-core=Y",
        help=f"NeMo 2.0 stack to migrate to; either part may be given alone. Default: {default_target_text()}. "
             "megatron-bridge=X[,megatron-core=Y] (with --to bridge; in the lint, for Bridge files, next to the "
             "NeMo parts): the one Megatron-Bridge release to judge against: X=0.3 means the newest known 0.3.x, "
             "X=0.3.0 exactly that tag; default: the newest known release and the megatron-core it pins. "
             "(`convert --target megatron-bridge=0.3` reads it otherwise: every 0.3.x tag must load the "
             "checkpoint.)",
    )(func)
    return func


def destination_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--to", "destination", type=click.Choice(["nemo2", "bridge"]), default="nemo2", show_default=True,
        help="Destination: NeMo 2.0 (nl.MegatronStrategy) or Megatron-Bridge (CheckpointConfig).",
    )(func)


def fail(message: str) -> None:
    """Print a one-line error and exit 2."""
    click.echo(f"nemo-migrate: error: {message}", err=True)
    raise SystemExit(2)


def check_version(text: str) -> Version:
    return Version.parse(text)


def unified_diff(before: str, after: str, filename: str) -> str:
    """`--diff` output for one file, as `git apply` and `patch -p1` take it (a/ and b/ prefixes unless the name is
    absolute). Lines are split at line feeds only, so a form feed never starts a diff line of its own."""
    import difflib

    def lines(text: str) -> list[str]:
        return [line for line in re.split(r"(?<=\n)", text) if line]

    def side(prefix: str) -> str:
        return filename if os.path.isabs(filename) else f"{prefix}/{filename}"

    return "".join(difflib.unified_diff(lines(before), lines(after), fromfile=side("a"), tofile=side("b")))
