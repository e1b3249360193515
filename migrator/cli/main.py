"""`nemo-migrate` command group with lazily imported subcommands."""
from __future__ import annotations

import importlib

import click

from migrator import __version__

# name -> "module:attribute"; modules are imported only when the subcommand runs or help is shown.
SUBCOMMANDS: dict[str, str] = {
    "lint": "migrator.cli.lint_cmd:lint",
    "rule": "migrator.cli.rule_cmd:rule",
    "schema": "migrator.cli.schema_cmd:schema",
    "convert": "migrator.cli.convert_cmd:convert",
    "verify": "migrator.cli.convert_cmd:verify",
    "config": "migrator.cli.config_cmd:config",
    "patch": "migrator.cli.config_cmd:patch",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nemo-migrate")
def cli() -> None:
    """Move NeMo 1.0 training setups to NeMo 2.0: lint configs and code, rewrite them, convert checkpoints."""


def main() -> None:
    cli(prog_name="nemo-migrate")


def migrate_config_main() -> None:
    """`migrate-config OLD.yaml ...` is `nemo-migrate config OLD.yaml ...`."""
    command = LazyGroup().get_command(click.Context(cli), "config")
    if command is None:  # pragma: no cover - wired up by the rewriter
        raise SystemExit("migrate-config: not available in this build")
    command(prog_name="migrate-config")
