"""The YAML reader: values and positions as NeMo (OmegaConf on PyYAML) reads the file."""
from __future__ import annotations

import json

import pytest
import yaml

from migrator.errors import MigratorError
from migrator.yaml.document import parse
from tests.conftest import NEMO_CONFIGS, need_shared, run_cli


def lint_json(path, *args):
    proc = run_cli("lint", "--output-format", "json", *args, str(path))
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else []), proc.stderr


def plain(node):
    """Our tree as plain Python values (the scalars' NeMo reading), merges applied."""
    if node.kind == "scalar":
        return node.value
    if node.kind == "sequence":
        return [plain(c) for c in node.children]
    return {k.value: plain(v) for k, v in node.items}


def test_flow_mapping_without_a_space_is_read_as_pyyaml_reads_it(files):
    # libyaml refuses `{splits:[1,2]}`, PyYAML (and so NeMo) reads {'splits': [1, 2]}: the file is linted
    path = files("flow.yaml", "model:\n  mcore_gpt: true\n  data: {splits:[1,2]}\n  dist_ckpt_format: zarr\n")
    code, findings, err = lint_json(path)
    assert code == 1, err
    assert ("NM106", 4, 21) in [(f["code"], f["location"]["row"], f["location"]["column"]) for f in findings]
    assert plain(parse(path.read_text(), "flow.yaml").roots[0])["model"]["data"] == {"splits": [1, 2]}


def test_merge_keys_are_applied_as_omegaconf_applies_them(files):
    text = ("_ckpt: &ckpt\n  dist_ckpt_parallel_load: false\n  dist_ckpt_format: zarr\n"
            "model:\n  mcore_gpt: true\n  <<: *ckpt\n  dist_ckpt_format: torch_dist\n")
    assert plain(parse(text, "m.yaml").roots[0]) == yaml.safe_load(text)
    code, findings, err = lint_json(files("merge.yaml", text))
    got = [(f["code"], f["location"]["row"]) for f in findings]
    # the merged false is judged where it is written; the overridden zarr is not judged; `<<` is no key of its own
    assert ("NM111", 2) in got and not [c for c, _ in got if c in ("NM104", "NM106", "NM103")], got
    assert code == 0, err


@pytest.mark.parametrize("text", [
    "a: &a {x: 1, y: 1}\nc: {<<: *a, x: 5}\n",
    "base: &base\n  k: 1\nmid: &mid\n  <<: *base\n  j: 2\ntop:\n  <<: *mid\n  k: 3\n",
])
def test_merge_semantics_match_pyyaml(text):
    assert plain(parse(text, "m.yaml").roots[0]) == yaml.safe_load(text)


def test_of_several_merged_mappings_the_first_listed_wins():
    # the YAML merge-key spec and PyYAML 6.0.1-6.0.3 (6.0.4 lets the last win for keys longer than one character)
    text = "a: &a {dist_ckpt_format: zarr}\nb: &b {dist_ckpt_format: torch_dist, y: 3}\nc:\n  <<: [*a, *b]\n"
    assert plain(parse(text, "m.yaml").roots[0])["c"] == {"dist_ckpt_format": "zarr", "y": 3}


def test_a_merge_of_a_scalar_is_a_yaml_error_with_its_line(files):
    proc = run_cli("lint", str(files("bad.yaml", "model:\n  <<: 3\n")))
    assert proc.returncode == 2 and "bad.yaml:2:7: YAML error: expected a mapping" in proc.stderr


def test_duplicate_keys_are_still_found_and_merged_keys_are_no_duplicates(files):
    text = "a: &a {dist_ckpt_format: zarr}\nmodel:\n  <<: *a\n  dist_ckpt_format: torch_dist\n  x: 1\n  x: 2\n"
    _, findings, _ = lint_json(files("d.yaml", text))
    assert [(f["code"], f["location"]["row"]) for f in findings if f["code"] == "NM105"] == [("NM105", 6)]


def test_yaml_pyyaml_rejects_is_exit_2_with_file_and_line(files):
    proc = run_cli("lint", str(files("broken.yaml", "model:\n  a: {b: 1\n  c: 2\n")))
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[0]
    assert "broken.yaml:" in line and "YAML syntax error" in line


def test_fast_and_pure_composers_agree_on_the_shared_configs():
    from migrator.yaml.document import compose_all

    if not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML built without libyaml")
    for path in sorted(need_shared(NEMO_CONFIGS).glob("*.yaml")):
        text = path.read_text()
        fast = [yaml.serialize(n, Dumper=yaml.SafeDumper) for n in compose_all(text)]
        pure = [yaml.serialize(n, Dumper=yaml.SafeDumper) for n in yaml.compose_all(text, Loader=yaml.SafeLoader)]
        assert fast == pure, path.name
        for node_fast, node_pure in zip(compose_all(text), yaml.compose_all(text, Loader=yaml.SafeLoader)):
            assert _marks(node_fast) == _marks(node_pure), path.name


def _marks(node, out=None):
    out = [] if out is None else out
    out.append((node.start_mark.index, node.start_mark.line, node.start_mark.column, node.end_mark.index))
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _marks(k, out)
            _marks(v, out)
    elif isinstance(node, yaml.SequenceNode):
        for c in node.value:
            _marks(c, out)
    return out


def test_positions_count_code_points_and_an_empty_value_sits_after_its_colon():
    doc = parse("model:\n  name: \"ĉĥ\"  # ü\n  dist_ckpt_parallel_save:\n  x: 1\n", "u.yaml")
    model = doc.roots[0].get("model")
    name = model.get("name")
    assert (name.start.row, name.start.column, name.end.column) == (2, 9, 13)
    empty = model.get("dist_ckpt_parallel_save")
    assert (empty.start.row, empty.start.column) == (3, 27)  # ruamel put it at the start of the next line


def test_a_pyyaml_error_names_the_line():
    with pytest.raises(MigratorError, match=r"^f.yaml:2:"):
        parse("a: 1\n\tb: 2\n", "f.yaml")
