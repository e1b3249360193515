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
    # a merge key without `<<`: an explicit merge tag (the reader converts such a text whole, as with `<<`)
    "b: &b {k: 1}\nc: {!!merge x: *b, j: 2}\n",
    "%TAG !m! tag:yaml.org,2002:\n---\nb: &b {k: 1}\nc: {!m!merge x: *b, j: 2}\n",
    "b: &b {k: 1}\nc: {!<tag:yaml.org,2002:%6Derge> x: *b, j: 2}\n",
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


MERGE_CASES = [
    "b: &b {k: 1}\nc:\n  <<: *b\n  j: 2\n",
    "b: &b {k: 1}\nc:\n  \"<<\": *b\n  '<<': 3\n  x: <<\n",  # quoted: no merge key; `<<` as a value
    "b: &b {k: 1}\nc:\n  !!merge <<: *b\n  ! <<: 4\n",  # explicit tags
    "a: &a\n  x: 1\n  self: *a\n  <<: [{y: 2}, {z: 3}]\n",
]


@pytest.mark.parametrize("composer", ["fast", "pure"])
def test_our_composers_read_what_pyyaml_safeloader_reads(composer):
    """The composers resolve only the merge tag (every other value is resolved by migrator.yaml.document): their
    trees, merge keys, values, styles and positions are PyYAML SafeLoader's, on the shared configs and merge
    cases."""
    from migrator.yaml.document import _composers

    loader = _composers()[0 if composer == "fast" else 1]
    if loader is None:
        pytest.skip("PyYAML built without libyaml")
    texts = [p.read_text() for p in sorted(need_shared(NEMO_CONFIGS).glob("*.yaml"))] + MERGE_CASES
    for text in texts:
        ours = [_dump(n) for n in yaml.compose_all(text, Loader=loader)]
        pyyaml = [_dump(n) for n in yaml.compose_all(text, Loader=yaml.SafeLoader)]
        assert ours == pyyaml, text[:200]


def _dump(node, out=None, active=None):
    """Everything the reader takes from a PyYAML node: kind, merge tag or not, value, style, marks."""
    out, active = ([], set()) if out is None else (out, active)
    # (libyaml and PyYAML put the end of a document's last block at different rows: the end index is the same)
    marks = (node.start_mark.index, node.start_mark.line, node.start_mark.column, node.end_mark.index)
    merge = node.tag == "tag:yaml.org,2002:merge"
    if isinstance(node, yaml.ScalarNode):
        out.append(("scalar", merge, node.value, node.style or None, marks))  # libyaml: "" for plain
        return out
    out.append((type(node).__name__, merge, len(node.value), marks))
    if id(node) in active:  # a recursive alias
        return out
    active.add(id(node))
    for item in node.value:
        for child in (item if isinstance(node, yaml.MappingNode) else (item,)):
            _dump(child, out, active)
    active.discard(id(node))
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


@pytest.mark.parametrize("depth", [99, 100, 101])
@pytest.mark.parametrize("nodes", [9, 10, 11])
def test_the_no_alias_bounds_count_refuses_exactly_what_the_full_check_refuses(monkeypatch, depth, nodes):
    """A text without `*` has no aliases: the bounds pass it after a count; the verdict (and its words) must be the
    full check's, at both limits."""
    from migrator.yaml import bounds
    from migrator.yaml.document import compose_all

    monkeypatch.setattr(bounds, "MAX_NODES", 10)
    texts = ["[" * depth + "]" * depth, "[" * depth + "1" + "]" * depth,
             "a:\n" + "".join(" " * (2 * i) + f"k{i}:\n" for i in range(1, depth)) + " " * (2 * depth) + "x: 1\n",
             "[" + ",".join(["1"] * nodes) + "]", "{" + ",".join(f"k{i}: 1" for i in range(nodes)) + "}"]
    for text in texts:
        roots = [n for n in compose_all(text) if n is not None]
        verdicts = []
        for aliases in (True, False):
            try:
                bounds.check_tree(roots, "f.yaml", aliases=aliases)
                verdicts.append(None)
            except MigratorError as exc:
                verdicts.append(str(exc))
        assert verdicts[0] == verdicts[1], text[:40]
