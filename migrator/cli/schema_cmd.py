"""`nemo-migrate schema`: the JSON Schema of a NeMo 1.0 config's checkpoint settings, for YAML editors."""
from __future__ import annotations

import json

import click


@click.command()
def schema():
    """Print the JSON Schema (draft-07) of the NeMo 1.0 `model.dist_ckpt_*` block and
    `exp_manager.checkpoint_callback_params.async_save`, for yaml-language-server (VS Code, Neovim, ...).

    Save it and point a config at it with a first-line modeline:

        # yaml-language-server: $schema=../nemo-migrator.schema.json
    """
    from migrator.engine.table import load_table
    from migrator.schema import json_schema

    click.echo(json.dumps(json_schema(load_table()), indent=2, ensure_ascii=False))
