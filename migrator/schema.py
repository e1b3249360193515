"""The editor JSON Schema of a NeMo 1.0 config's checkpoint settings (`nemo-migrate schema`).

pydantic models are built from the rule table (`rules/settings.yaml`: each setting's path, type, allowed values,
minimum, nullability, NeMo 1.0 default, description and NeMo 2.0 argument), and their JSON Schema is what
yaml-language-server validates while typing. The schema must never reject what NeMo accepts:

- every value may be an OmegaConf interpolation (`${...}`, anywhere in a string), resolved only by Hydra;
- an editor reads YAML 1.2, where `yes`/`no`/`on`/`off` (any case variant PyYAML knows) are strings, and NeMo
  reads YAML 1.1, where they are booleans: a boolean setting accepts those strings too; likewise an integer
  setting accepts YAML 1.1 integer spellings that YAML 1.2 reads as strings (`1_000`, `0b10`, `1:30`);
- null only where NeMo gives null a meaning (the table's `nullable`);
- every mapping stays open (`additionalProperties`): NeMo configs hold hundreds of other keys. Misspelled keys are
  the lint's job (NM103), not the schema's.

What a schema cannot see: a quoted `"yes"` is a string for NeMo too (NM101), and `2.0` for an integer reads as 2
in JSON. The lint reports both.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from migrator.engine.table import Setting, Table

DIALECT = "http://json-schema.org/draft-07/schema#"
INTERPOLATION_PATTERN = r"\$\{.*\}"
YAML11_BOOLEAN_STRINGS = ("yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF")
# YAML 1.1 integers (PyYAML's resolver) that a YAML 1.2 reader leaves as strings; plain decimals are 1.2 integers too
YAML11_ONLY_INT_PATTERN = (  # binary, with `_`, signed hex, sexagesimal (no look-ahead: editors, pydantic, re agree)
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]*_[0-7_]*|[-+]?[1-9][0-9_]*_[0-9_]*|[-+]0x[0-9a-fA-F_]+"
    r"|0x[0-9a-fA-F_]*_[0-9a-fA-F_]*|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"
)
TITLE = "NeMo 1.0 config: distributed-checkpoint settings (nemo-migrator)"


def _value_type(setting: Setting) -> Any:
    from pydantic import Field

    interpolation = Annotated[str, Field(pattern=INTERPOLATION_PATTERN, title="OmegaConf interpolation")]
    if setting.type == "bool":
        options: list[Any] = [bool, Literal[YAML11_BOOLEAN_STRINGS]]  # type: ignore[valid-type]
    elif setting.type == "int":
        number = Annotated[int, Field(ge=setting.minimum)] if setting.minimum is not None else int
        options = [number, Annotated[str, Field(pattern=YAML11_ONLY_INT_PATTERN, title="YAML 1.1 integer")]]
    elif setting.allowed:
        options = [Literal[tuple(setting.allowed)]]  # type: ignore[valid-type]
    else:
        options = [str]
    if setting.type != "str" or setting.allowed:
        options.append(interpolation)
    union = Union[tuple(options)] if len(options) > 1 else options[0]  # type: ignore[valid-type]
    return Optional[union] if setting.nullable else union


def _describe(setting: Setting) -> str:
    current = _yaml(setting.nemo1_default[-1].value)
    older = [f"{_yaml(d.value)} in configs from NeMo before {d.source_before}"
             for d in setting.nemo1_default if d.source_before]
    target = setting.target
    text = " ".join(setting.description.split())
    text += f" NeMo 1.0 default: {current}" + (f" ({'; '.join(older)})" if older else "") + "."
    if not setting.read_by_nemo1:
        text += " NeMo 1.0 never reads this key."
    for value, lifecycle in setting.values.items():
        for stage in (lifecycle.deprecated, lifecycle.removed):
            if stage is not None:
                text += f" {value}: {stage.message}."
    text += (f" NeMo 2.0: MegatronStrategy({target.argument}=...), default {_py(target.default)} (since NeMo "
             f"{target.since}).")
    return text


def _yaml(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "True", False: "False"}[value]
    return str(value)


def _py(value: Any) -> str:
    return repr(value)


def build_models(table: Table) -> Any:
    """The root pydantic model: `model` (and the top level, for the model_config.yaml inside a .nemo) hold the
    `model.*` settings; other settings sit at their dotted paths (`exp_manager.checkpoint_callback_params`)."""
    from pydantic import ConfigDict, Field, create_model

    config = ConfigDict(extra="allow", protected_namespaces=())
    interpolation = Annotated[str, Field(pattern=INTERPOLATION_PATTERN, title="OmegaConf interpolation")]

    def field(setting: Setting) -> tuple[Any, Any]:
        default = setting.nemo1_default[-1].value
        return _value_type(setting), Field(default=default, description=_describe(setting))

    tree: dict[str, Any] = {}
    model_fields: dict[str, Any] = {}
    for setting in table.settings.settings:
        if setting.in_model:
            model_fields[setting.key] = field(setting)
            continue
        node = tree
        *parents, leaf = setting.path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = field(setting)

    def make(name: str, fields: dict[str, Any], description: str, **extra: Any) -> Any:
        built = dict(extra)
        for key, value in fields.items():
            if isinstance(value, dict):  # a section on the way to a setting
                child = make("".join(p.title() for p in key.split("_")), value, f"The `{key}` section")
                built[key] = (Optional[Union[child, interpolation]], Field(default=None))
            else:
                built[key] = value
        return create_model(name, __config__=config, __doc__=description, **built)

    model = make("ModelSection", model_fields,
                 "The `model:` section of a training config: its dist_ckpt_* settings (other keys are allowed)")
    return make("NeMo1Config", {**tree, **model_fields}, TITLE,
                model=(Optional[Union[model, interpolation]], Field(default=None)))


def json_schema(table: Table) -> dict[str, Any]:
    from pydantic import TypeAdapter

    schema = TypeAdapter(build_models(table)).json_schema(ref_template="#/definitions/{model}")
    definitions = schema.pop("$defs", {})
    for definition in [schema, *definitions.values()]:
        for prop in definition.get("properties", {}).values():
            if prop.get("default", 0) is None and "anyOf" in prop and any("$ref" in o for o in prop["anyOf"]):
                prop.pop("default")  # a section, not a value: no default to suggest
    document = {
        "$schema": DIALECT,
        "title": TITLE,
        "description": (
            "The NeMo 1.0 distributed-checkpoint settings, checked while you type (types, allowed values, ranges) "
            "the way NeMo reads YAML (1.1 booleans, ${...} interpolations). Generated by `nemo-migrate schema` from "
            "nemo-migrator's rule table; `nemo-migrate lint` does the rest (unknown keys, target releases, fixes)."),
        "type": "object",
        **{k: v for k, v in schema.items() if k not in ("title", "description", "type")},
    }
    if definitions:
        document["definitions"] = definitions
    return document
