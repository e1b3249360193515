"""The model-id table: which NeMo 2.0 model and config classes a `--model_id` selects, and their preset values.

The data lives in `rules/nemo2_models.yaml` (shipped as `migrator/_rules/` in a wheel). It is read with plain
ruamel.yaml (cached as JSON, see `load_model_table`) into frozen dataclasses, so loading it costs no pydantic
import; the test suite validates the file against a pydantic schema instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from migrator.errors import MigratorError

RULES_FILE = "nemo2_models.yaml"


@dataclass(frozen=True)
class ModelEntry:
    """One id of NeMo's `MODEL_CONFIG_MAPPING`."""

    model_id: str
    family: str
    model_class: str
    config_class: str
    since: str  # first NeMo release that knows the id and has the config class


@dataclass(frozen=True)
class FamilyEntry:
    """A model family: its NeMo 2.0 model class and the generic config class used when the family is inferred."""

    name: str
    kind: str  # "gpt" (megatron-core GPTModel layout) or "mamba" (hybrid Mamba layout)
    model_class: str
    config_class: str
    rope_scaling_config_class: str | None = None  # llama: the class that applies Llama 3.1 rope scaling


@dataclass(frozen=True)
class ModelTable:
    models: dict[str, ModelEntry]
    families: dict[str, FamilyEntry]
    presets: dict[str, dict[str, Any]]  # config class -> {NeMo 2.0 field: default}
    presets_from: str

    def entry(self, model_id: str) -> ModelEntry:
        """The entry for `model_id`; an unknown id is a MigratorError that lists the valid ones."""
        try:
            return self.models[model_id]
        except KeyError:
            valid = ", ".join(self.models)
            raise MigratorError(f"--model_id {model_id}: unknown model id; valid ids: {valid} "
                                f"(or a path to a NeMo 2.0 checkpoint)") from None

    def family_for_model_class(self, model_class: str) -> FamilyEntry | None:
        for family in self.families.values():
            if family.model_class == model_class:
                return family
        return None

    def preset(self, config_class: str) -> dict[str, Any] | None:
        return self.presets.get(config_class)


def rules_path() -> Path:
    """`migrator/_rules/` in an installed wheel, else `rules/` at the repository root (editable install)."""
    from migrator.engine.table import rules_dir

    path = rules_dir() / RULES_FILE
    if not path.is_file():
        raise MigratorError(f"{RULES_FILE}: not found in {path.parent} (broken installation)")
    return path


def parse_model_table(data: dict[str, Any], source: str) -> ModelTable:
    """Build the table from the parsed YAML; structural errors name the file and the entry."""
    try:
        families = {
            name: FamilyEntry(name=name, kind=f["kind"], model_class=f["model_class"],
                              config_class=f["config_class"],
                              rope_scaling_config_class=f.get("rope_scaling_config_class"))
            for name, f in data["families"].items()
        }
        models = {
            str(mid): ModelEntry(model_id=str(mid), family=m["family"], model_class=m["model_class"],
                                 config_class=m["config_class"], since=str(m["since"]))
            for mid, m in data["models"].items()
        }
        presets = {cls: dict(values) for cls, values in data["presets"].items()}
    except (KeyError, TypeError, AttributeError) as e:
        raise MigratorError(f"{source}: malformed model table ({type(e).__name__}: {e})") from None
    for entry in models.values():
        if entry.family not in families:
            raise MigratorError(f"{source}: models.{entry.model_id}: unknown family {entry.family}")
        if entry.config_class not in presets:
            raise MigratorError(f"{source}: models.{entry.model_id}: no presets for {entry.config_class}")
    return ModelTable(models=models, families=families, presets=presets,
                      presets_from=str(data.get("presets_from", "")))


@lru_cache(maxsize=4)
def load_model_table(path: Path | None = None) -> ModelTable:
    """Read the model table (default: the one shipped with the package); the parsed YAML is cached as JSON keyed
    by the file's content, like the lint rule table (pure-Python YAML parsing of it costs ~0.25 s)."""
    from migrator.engine.table import cached_data

    path = path or rules_path()

    def parse() -> dict[str, Any]:
        from ruamel.yaml import YAML

        with path.open(encoding="utf-8") as f:
            return YAML(typ="safe", pure=True).load(f)

    return parse_model_table(cached_data("models", [path], parse), str(path.name))
