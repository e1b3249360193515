"""Values carried unchecked (issue 14): architecture values of model_config.yaml are checked for type and range
before anything is written, the `tokenizer:` section for its shape, and the Hugging Face tokenizer folder beside
the checkpoint is confined to that place and announced. Each refusal is one line naming the file (and line), the
key, the value and what is expected, exit 2, for `--to nemo2`, `--to bridge` and `--dry-run`."""
from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path

import pytest
import yaml

from migrator.convert.model.tokenizer import resolve_tokenizer
from migrator.convert.read.model_config import load_model_config
from migrator.errors import MigratorError
from tests.conftest import SHARED
from tests.convert.conftest import FIXTURES, LLAMA_ID, NEMO1, fixture_nemo, need, run_cli, with_settings

WHAT = "model.nemo: model_config.yaml"

# (key, YAML text of the value, what the message must say is expected)
BAD_VALUES = [
    ("layernorm_epsilon", "tiny", "a number >= 0"),
    ("layernorm_epsilon", "-1e-5", "a number >= 0"),
    ("layernorm_epsilon", ".nan", "a number >= 0"),
    ("layernorm_epsilon", "'1e-5'", "a number >= 0"),  # quoted: a string, which torch's LayerNorm refuses
    ("rotary_base", "[1, 2]", "a number > 0"),
    ("rotary_base", "0", "a number > 0"),
    ("rotary_base", ".inf", "a number > 0"),
    ("rotary_base", "{a: 1}", "a number > 0"),
    ("rotary_percentage", "1.5", "a number > 0 and <= 1"),
    ("num_layers", "-2", "a positive integer"),
    ("num_layers", "0", "a positive integer"),
    ("num_layers", "2.5", "a positive integer"),
    ("num_layers", "2.0", "a positive integer"),
    ("num_layers", "yes", "a positive integer"),
    ("num_layers", "100000000", "a positive integer <= 65536"),
    ("hidden_size", "0", "a positive integer"),
    ("hidden_size", "-64", "a positive integer"),
    ("hidden_size", "'64'", "a positive integer"),
    ("num_attention_heads", "0", "a positive integer"),
    ("num_attention_heads", "on", "a positive integer"),
    ("ffn_hidden_size", "-1", "a positive integer"),
    ("num_query_groups", "0", "a positive integer"),
    ("num_query_groups", "1.5", "a positive integer"),
    ("kv_channels", "-16", "a positive integer"),
    ("encoder_seq_length", "99999999999999", "a positive integer <= 2147483647"),
    ("max_position_embeddings", "0", "a positive integer"),
    ("max_position_embeddings", "${multiply:2,${.hidden_size}}", "an OmegaConf interpolation"),
    ("make_vocab_size_divisible_by", "0", "a positive integer"),
    ("hidden_dropout", "2", "a number >= 0 and <= 1"),
    ("attention_dropout", "-0.1", "a number >= 0 and <= 1"),
    ("init_method_std", "no", "a number >= 0"),
    ("seq_len_interpolation_factor", "0", "a number > 0 or null"),
    ("activation", "SwiGLU", "one of gelu, geglu"),
    ("activation", "5", "one of gelu, geglu"),
    ("normalization", "batchnorm", "one of layernorm"),
    ("position_embedding_type", "sinusoidal", "one of learned_absolute, rope"),
    ("position_embedding_type", "true", "one of learned_absolute, rope"),
    ("bias", "'false'", "a boolean"),  # a non-empty string is truthy: NeMo would build the biases
    ("share_embeddings_and_output_weights", "2", "a boolean"),
    ("window_size", "[1, 2, 3]", "a list of two integers"),
    ("window_size", "4096", "a list of two integers"),
    ("num_moe_experts", "0", "a positive integer"),
    ("moe_router_topk", "1.5", "a positive integer"),
    ("moe_token_dispatcher_type", "broadcast", "one of allgather, alltoall"),
    ("fp8_amax_compute_algo", "mean", "one of max, most_recent"),
    ("mamba_state_dim", "-128", "a positive integer"),
]


def llama_text() -> str:
    return need(NEMO1 / "tiny_llama_torch_dist.model_config.yaml").read_text()


def one_error(result) -> str:
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("key, text, expected", BAD_VALUES, ids=[f"{k}={t}" for k, t, _ in BAD_VALUES])
def test_a_bad_value_is_refused_naming_file_line_key_value_and_expectation(key, text, expected):
    config = with_settings(llama_text(), **{key: text})
    line = 1 + config.splitlines().index(f"{key}: {text}")
    with pytest.raises(MigratorError) as caught:
        load_model_config(config.encode(), WHAT)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{WHAT}:{line}: {key}: "), message
    assert expected in message, message
    assert text.strip("'") in message or text in ("{a: 1}", "[1, 2]", "[1, 2, 3]"), message


def test_yaml11_booleans_are_named_as_such():
    with pytest.raises(MigratorError, match=r"num_layers: expected a positive integer .*"
                                            r"got yes \(a boolean; YAML 1\.1"):
        load_model_config(with_settings(llama_text(), num_layers="yes"), WHAT)


@pytest.mark.parametrize("settings", [
    {"layernorm_epsilon": "1", "rotary_base": "500000", "init_method_std": "0", "hidden_dropout": "1"},  # ints
    {"normalization": "RMSNorm"},  # NeMo lowers it
    {"bias": "0", "qk_layernorm": "null", "rotary_interleaved": "1"},  # flags are tested by truthiness
    {"num_query_groups": "null", "kv_channels": "null", "seq_len_interpolation_factor": "null"},
    {"window_size": "[4096, 0]", "rotary_base": "1e6", "layernorm_epsilon": "1e-6"},
    {"activation": "approx-gelu", "position_embedding_type": "alibi"},  # NeMo's values (convert refuses later)
])
def test_what_nemo_accepts_is_accepted(settings):
    load_model_config(with_settings(llama_text(), **settings), WHAT)


def test_missing_keys_keep_their_defaults():
    kept = [line for line in llama_text().splitlines()
            if line.split(":", 1)[0] not in {"layernorm_epsilon", "rotary_base", "rotary_percentage", "bias",
                                              "normalization", "activation", "hidden_dropout", "num_query_groups"}]
    config = load_model_config("\n".join(kept), WHAT)
    assert "layernorm_epsilon" not in config and config["num_layers"] == 2


def test_a_reference_to_another_key_is_resolved_as_nemo_resolves_it():
    config = load_model_config(with_settings(llama_text(), max_position_embeddings="${.encoder_seq_length}"), WHAT)
    assert config["max_position_embeddings"] == config["encoder_seq_length"] == 64
    with pytest.raises(MigratorError, match=r"max_position_embeddings: .*interpolation nemo-migrate does not resolve"):
        load_model_config(with_settings(llama_text(), max_position_embeddings="${.nowhere}"), WHAT)


def real_configs() -> list[Path]:
    return sorted((SHARED / "fixtures" / "nemo-configs").glob("*.yaml"))


def fixture_model_configs() -> list[tuple[str, bytes]]:
    found = [(str(p), p.read_bytes()) for p in sorted(FIXTURES.rglob("*model_config.yaml"))]
    for nemo in sorted(FIXTURES.rglob("*.nemo")):
        with tarfile.open(nemo) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith("model_config.yaml"))
            found.append((f"{nemo}: model_config.yaml", archive.extractfile(member).read()))  # type: ignore[union-attr]
    return found


def test_no_real_nemo_config_and_no_fixture_model_config_is_rejected():
    """The 15 real NeMo 1.0 configs (their `model:` section, references resolved from there) and every
    model_config.yaml of the NeMo-made fixtures pass the check: 0 false rejections."""
    from migrator.convert.model.nemo1_values import FIELDS, check_model_config
    from migrator.convert.read.model_config import load_yaml11

    configs = real_configs()
    need(SHARED / "fixtures" / "nemo-configs")
    assert len(configs) == 15
    checked = 0
    for path in configs:
        data = load_yaml11(path.read_bytes(), str(path))
        model = data.get("model") if isinstance(data.get("model"), dict) else data  # llama_inference has none
        check_model_config(model, lambda key, path=path: str(path))
        checked += sum(key in model for key in FIELDS)
    fixtures = fixture_model_configs()
    assert len(fixtures) >= 16
    for what, text in fixtures:
        config = load_model_config(text, what)
        checked += sum(key in config for key in FIELDS)
    assert checked > 800  # the table is used: each config has tens of the keys it lists


# --- the real CLI: nothing is written, one line, exit 2, for every destination and --dry-run


@pytest.fixture(scope="module")
def bad_nemos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    extracted = folder / "extracted"
    with tarfile.open(fixture_nemo("tiny_llama_torch_dist")) as archive:
        archive.extractall(extracted, filter="data")
    text = (extracted / "model_config.yaml").read_text()
    made = {}
    for name, settings in {"epsilon": {"layernorm_epsilon": "tiny"}, "rotary": {"rotary_base": "[1, 2]"},
                           "layers": {"num_layers": "2.5"}, "dropout": {"hidden_dropout": "2"}}.items():
        (extracted / "model_config.yaml").write_text(with_settings(text, **settings))
        made[name] = folder / f"{name}.nemo"
        with tarfile.open(made[name], "w") as archive:
            for member in sorted(extracted.rglob("*")):
                archive.add(member, arcname=f"./{member.relative_to(extracted)}", recursive=False)
    (extracted / "model_config.yaml").write_text(with_settings(text, layernorm_epsilon="tiny"))
    made["extracted"] = extracted
    return made


@pytest.mark.parametrize("mode", [["--to", "nemo2"], ["--to", "bridge"], ["--dry-run"],
                                  ["--to", "bridge", "--dry-run"]])
@pytest.mark.parametrize("case, needle", [
    ("epsilon", "model_config.yaml:26: layernorm_epsilon: expected a number >= 0, got 'tiny' (a string)"),
    ("rotary", "rotary_base: expected a number > 0, got a list of 2"),
    ("layers", "num_layers: expected a positive integer <= 65536, got 2.5 (a float)"),
    ("dropout", "hidden_dropout: expected a number >= 0 and <= 1, got 2"),
])
def test_convert_refuses_a_bad_value_before_writing_anything(bad_nemos, tmp_path, mode, case, needle):
    out = tmp_path / "out"
    result = run_cli("convert", "--input_path", bad_nemos[case], "--output_path", out, "--model_id", LLAMA_ID, *mode)
    line = one_error(result)
    assert f"{bad_nemos[case]}: model_config.yaml:" in line and needle in line, line
    assert list(tmp_path.iterdir()) == []


def test_the_model_config_flag_and_an_extracted_folder_are_named_as_given(bad_nemos, tmp_path):
    folder = bad_nemos["extracted"]
    config = tmp_path / "my_config.yaml"
    config.write_text((folder / "model_config.yaml").read_text())
    tokenizer = next(folder.glob("*_tokenizer.model"))
    line = one_error(run_cli("convert", "--input_path", folder / "model_weights", "--model_config", config,
                             "--tokenizer_path", tokenizer, "--output_path", tmp_path / "out", "--model_id", LLAMA_ID))
    assert f"{config}:26: layernorm_epsilon:" in line, line
    line = one_error(run_cli("convert", "--input_path", folder, "--output_path", tmp_path / "out2", "--to", "bridge"))
    assert "model_config.yaml:26: layernorm_epsilon: expected a number" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_config.yaml"]


# --- the tokenizer section's shape


@pytest.mark.parametrize("section, needle", [
    ("tokenizer: [sentencepiece, x.model]", "tokenizer: expected a mapping"),
    ("tokenizer: sentencepiece", "tokenizer: expected a mapping"),
    ("tokenizer:\n  library: 5\n  model: nemo:x.model", "tokenizer.library: expected a string or null, got 5"),
    ("tokenizer:\n  library: sentencepiece\n  model: [a, b]", "tokenizer.model: expected a string or null, got a list"),
    ("tokenizer:\n  library: sentencepiece\n  model: 12", "tokenizer.model: expected a string or null, got 12"),
    ("tokenizer:\n  library: huggingface\n  type: {a: 1}", "tokenizer.type: expected a string or null, got a mapping"),
    ("tokenizer:\n  library: sentencepiece\n  sentencepiece_legacy: 'yes'",
     "tokenizer.sentencepiece_legacy: expected a boolean"),
    ("tokenizer:\n  library: sentencepiece\n  special_tokens: 5",
     "tokenizer.special_tokens: expected a mapping or a list"),
])
def test_a_tokenizer_section_of_the_wrong_shape_is_one_line(section, needle):
    text = re.sub(r"(?ms)^tokenizer:\n(  .*?\n)+", "", llama_text()) + section + "\n"
    with pytest.raises(MigratorError, match=re.escape(needle)) as caught:
        load_model_config(text, WHAT)
    assert str(caught.value).startswith(f"{WHAT}:") and "\n" not in str(caught.value)
    with pytest.raises(MigratorError, match=re.escape(needle)):  # resolve_tokenizer checks a config it is given too
        resolve_tokenizer(yaml.safe_load(text), None, None, None, None, None)


def test_convert_with_a_list_for_the_tokenizer_is_one_line(bad_nemos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    source = bad_nemos["extracted"]
    (folder / "model_weights").symlink_to(source / "model_weights")
    text = re.sub(r"(?ms)^tokenizer:\n(  .*?\n)+", "tokenizer: [sentencepiece]\n",
                  with_settings((source / "model_config.yaml").read_text(), layernorm_epsilon="1.0e-05"))
    (folder / "model_config.yaml").write_text(text)
    for mode in (["--to", "nemo2"], ["--to", "bridge"], ["--dry-run"]):
        line = one_error(run_cli("convert", "--input_path", folder, "--output_path", tmp_path / "out",
                                 "--model_id", LLAMA_ID, *mode))
        assert "model_config.yaml:" in line and "tokenizer: expected a mapping" in line and "a list of 1" in line
        assert not (tmp_path / "out").exists()


# --- the Hugging Face tokenizer folder beside the checkpoint


def hf_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    vocab = {f"t{i}": i for i in range(50)}
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []},
                                                       "added_tokens": [{"id": 50, "content": "<|endoftext|>"}]}))
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def hf_config(type_: str) -> dict:
    return {"tokenizer": {"library": "huggingface", "type": type_, "model": None}}


def resolve_beside(type_: str, input_dir: Path, notes: list[str] | None = None):
    return resolve_tokenizer(hf_config(type_), None, None, None, None, None, input_dir=input_dir,
                             note=None if notes is None else notes.append)


def test_the_folder_beside_the_checkpoint_is_used_and_announced(tmp_path):
    folder = hf_folder(tmp_path / "hf_tok")
    notes: list[str] = []
    spec = resolve_beside("hf_tok", tmp_path, notes)
    assert spec.files == {"nemo_tokenizer": folder} and spec.vocab_size == 51
    assert notes == [f"using the Hugging Face tokenizer folder {folder} beside the checkpoint (model_config.yaml "
                     "tokenizer.type 'hf_tok'); --tokenizer_path chooses another"]
    (folder / "sub").mkdir()
    (folder / "sub" / "extra.txt").write_text("x")
    (folder / "vocab_link.json").symlink_to("tokenizer.json")  # a link inside the folder is fine
    assert resolve_beside("./hf_tok/", tmp_path).files == {"nemo_tokenizer": tmp_path / "hf_tok/"}


@pytest.mark.parametrize("case", ["dotdot", "absolute", "home", "folder_link_out", "file_link_out", "dir_link",
                                  "dangling", "fifo", "itself", "through_link"])
def test_the_folder_may_not_leave_its_place(tmp_path, case):
    here = tmp_path / "ckpts"
    here.mkdir()
    outside = hf_folder(tmp_path / "elsewhere")
    name = "hf_tok"
    if case == "dotdot":
        name = "../elsewhere"
    elif case == "absolute":
        name = str(outside)
    elif case == "home":
        name = "~/hf_tok"
    elif case == "folder_link_out":
        (here / "hf_tok").symlink_to(outside)
    elif case == "through_link":
        (here / "sub").symlink_to(tmp_path)
        name = "sub/elsewhere"
    elif case == "itself":
        name = "."
        hf_folder(here / "x")
        (here / "tokenizer.json").write_text("{}")
    else:
        folder = hf_folder(here / "hf_tok")
        if case == "file_link_out":
            (folder / "tokenizer.json").unlink()
            (folder / "tokenizer.json").symlink_to(outside / "tokenizer.json")
        elif case == "dir_link":
            (folder / "more").symlink_to(folder)
        elif case == "dangling":
            (folder / "merges.txt").symlink_to(here / "nowhere")
        elif case == "fifo":
            os.mkfifo(folder / "merges.txt")
    with pytest.raises(MigratorError) as caught:
        resolve_beside(name, here)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("pass the folder with --tokenizer_path"), message
    assert message.startswith(f"model_config.yaml: tokenizer.type {name!r} "), message


def test_a_hub_name_without_a_folder_still_asks_for_tokenizer_path(tmp_path):
    with pytest.raises(MigratorError, match=r"not a local folder; pass its folder with --tokenizer_path"):
        resolve_beside("meta-llama/Meta-Llama-3-8B", tmp_path)


def hf_nemo(tmp_path: Path, type_: str) -> Path:
    with tarfile.open(fixture_nemo("tiny_llama_torch_dist")) as archive:
        archive.extractall(tmp_path / "x", filter="data")
    config = yaml.safe_load((tmp_path / "x" / "model_config.yaml").read_text())
    config["tokenizer"] = {"library": "huggingface", "type": type_, "model": None, "use_fast": True}
    (tmp_path / "x" / "model_config.yaml").write_text(yaml.safe_dump(config))
    for member in (tmp_path / "x").glob("*_tokenizer.model"):
        member.unlink()
    nemo = tmp_path / "ckpts" / "hf.nemo"
    nemo.parent.mkdir()
    with tarfile.open(nemo, "w") as archive:
        for member in sorted((tmp_path / "x").rglob("*")):
            archive.add(member, arcname=f"./{member.relative_to(tmp_path / 'x')}", recursive=False)
    return nemo


def test_convert_uses_the_folder_beside_and_says_so_and_refuses_a_link_out(tmp_path):
    nemo = hf_nemo(tmp_path, "hf_tok")
    folder = hf_folder(nemo.parent / "hf_tok")
    for mode in (["--to", "nemo2"], ["--to", "bridge"]):
        out = tmp_path / f"out_{mode[1]}"
        result = run_cli("convert", "--input_path", nemo, "--output_path", out, "--model_id", LLAMA_ID, *mode)
        assert result.returncode == 0, result.stderr
        said = [line for line in (result.stdout + result.stderr).splitlines()
                if "Hugging Face tokenizer folder" in line]
        assert len(said) == 1 and f"using the Hugging Face tokenizer folder {folder} beside the checkpoint" in said[0]
    assert (tmp_path / "out_nemo2" / "context" / "nemo_tokenizer" / "tokenizer.json").is_file()
    secret = tmp_path / "secret.txt"
    secret.write_text("not a tokenizer")
    (folder / "merges.txt").symlink_to(secret)
    for mode in (["--to", "nemo2"], ["--to", "bridge"], ["--dry-run"]):
        line = one_error(run_cli("convert", "--input_path", nemo, "--output_path", tmp_path / "refused",
                                 "--model_id", LLAMA_ID, *mode))
        assert f"a link to {secret}, outside the folder" in line and "--tokenizer_path" in line, line
        assert not (tmp_path / "refused").exists() and not (tmp_path / "refused.partial").exists()


def test_convert_refuses_an_absolute_or_climbing_type(tmp_path):
    outside = hf_folder(tmp_path / "elsewhere")
    for type_ in (str(outside), "../elsewhere"):
        nemo = hf_nemo(tmp_path / type_.replace("/", "_"), type_)
        line = one_error(run_cli("convert", "--input_path", nemo, "--output_path", tmp_path / "out",
                                 "--model_id", LLAMA_ID))
        assert "pass the folder with --tokenizer_path" in line and repr(type_) in line, line


# --- the same table under megatron-core's names: a NeMo 2.0 checkpoint converted --to bridge, and verify --load


def test_a_nemo2_checkpoint_with_a_bad_value_is_refused_for_bridge(tmp_path):
    import shutil

    source = tmp_path / "nemo2"
    shutil.copytree(need(FIXTURES / "nemo2_reference" / "tiny_llama"), source)
    model_yaml = source / "context" / "model.yaml"
    text, n = re.subn(r"(?m)^  layernorm_epsilon: .*$", "  layernorm_epsilon: tiny", model_yaml.read_text())
    assert n == 1
    model_yaml.write_text(text)
    for mode in ([], ["--dry-run"]):
        line = one_error(run_cli("convert", "--input_path", source, "--output_path", tmp_path / "out", "--to", "bridge",
                                 *mode))
        assert f"{source}: context/model.yaml: layernorm_epsilon: expected a number >= 0, got 'tiny'" in line, line
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_verify_load_refuses_a_converted_checkpoint_with_a_bad_value(tmp_path):
    out = tmp_path / "out"
    result = run_cli("convert", "--input_path", fixture_nemo("tiny_llama_torch_dist"), "--output_path", out,
                     "--model_id", LLAMA_ID)
    assert result.returncode == 0, result.stderr
    io_json = out / "context" / "io.json"
    text, n = re.subn(r'"value": 1e-05, "paths": \["<root>\.model\.config\.layernorm_epsilon"',
                      '"value": "tiny", "paths": ["<root>.model.config.layernorm_epsilon"', io_json.read_text())
    assert n == 1
    io_json.write_text(text)
    line = one_error(run_cli("verify", out, "--load"))
    assert f"{io_json}: layernorm_epsilon: expected a number >= 0, got 'tiny' (a string)" in line, line


def test_every_nemo2_preset_and_reference_context_passes_the_megatron_core_view():
    from migrator.convert.model.models import load_model_table
    from migrator.convert.model.nemo1_values import MCORE_FIELDS, check_mcore_values
    from migrator.convert.read.nemo2_dir import _read_model_yaml

    table = load_model_table()
    # the base classes (GPTConfig, LlamaConfig, NemotronHConfigBase) keep megatron-core's num_layers/hidden_size 0
    concrete = [cls for cls in table.presets
                if all((table.preset(cls) or {}).get(k) for k in ("num_layers", "hidden_size"))]
    assert len(concrete) >= 18
    for cls in concrete:
        check_mcore_values(table.preset(cls), cls)
    references = sorted((FIXTURES / "nemo2_reference").glob("*/context/model.yaml"))
    assert len(references) == 2
    for path in references:
        values = _read_model_yaml(path).values
        check_mcore_values(values, str(path))
        assert sum(key in values for key in MCORE_FIELDS) > 30


def test_a_tokenizer_path_folder_may_hold_links_but_only_regular_files(tmp_path):
    outside = hf_folder(tmp_path / "elsewhere")
    folder = hf_folder(tmp_path / "mine")
    (folder / "merges.txt").symlink_to(outside / "tokenizer.json")  # the user named this folder: links are theirs
    spec = resolve_tokenizer(None, None, str(folder), "huggingface", None, None)
    assert spec.files == {"nemo_tokenizer": folder}
    os.mkfifo(folder / "vocab.txt")
    with pytest.raises(MigratorError, match=r"^--tokenizer_path .*mine: has .*vocab\.txt, which is not a "
                                            r"regular file$"):
        resolve_tokenizer(None, None, str(folder), "huggingface", None, None)


def test_the_architecture_mapping_uses_the_same_table_for_a_config_given_directly():
    from migrator.convert.model.nemo1_arch import gpt_fields

    config = yaml.safe_load(llama_text())
    for key, value, shown in (("num_layers", 2.5, "2.5 (a float)"), ("hidden_size", True, "true (a boolean)"),
                              ("num_layers", 10**6, "1000000")):
        with pytest.raises(MigratorError, match=re.escape(f"model_config.yaml: {key}: expected a positive integer")
                           + ".*" + re.escape(f"got {shown}")):
            gpt_fields({**config, key: value})
