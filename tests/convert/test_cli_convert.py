"""`nemo-migrate convert` as a real subprocess: outputs, flags, atomicity, and bad input (exit 2, one line)."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from migrator.convert.verify import verify_checkpoint
from tests.convert import checkpoint_factory as factory
from tests.convert.conftest import LLAMA_ID, REPO, fixture_nemo, run_cli, with_settings
from tests.convert.context_helpers import load_graph


def assert_complete(out: Path) -> None:
    names = {p.name for p in (out / "weights").iterdir()}
    data = {n for n in names if re.fullmatch(r"__\d+_\d+\.distcp", n)}
    assert data and names == {".metadata", "common.pt", "metadata.json"} | data  # nothing else left behind
    assert {"io.json", "model.yaml"} <= {p.name for p in (out / "context").iterdir()}
    assert not out.with_name(out.name + ".partial").exists()


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemo-migrate: error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name,model_id", [("tiny_llama_torch_dist", LLAMA_ID), ("tiny_llama_zarr", LLAMA_ID),
                                           ("tiny_mixtral_moe", None)])
def test_convert_fixtures_then_verify(tmp_path: Path, name: str, model_id: str | None) -> None:
    out = tmp_path / "out"
    args = ["convert", "--input_path", fixture_nemo(name), "--output_path", out]
    result = run_cli(*args, *(["--model_id", model_id] if model_id else []))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    assert_complete(out)
    report = verify_checkpoint(out, fixture_nemo(name))  # in-process: the CLI form is tested in test_verify
    assert report.ok and "bit-equal" in report.lines()[-2], report.lines()


def test_dash_aliases_and_dry_run_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out"
    result = run_cli("convert", "--input-path", fixture_nemo("tiny_llama_torch_dist"), "--output-path", out,
                     "--model-id", LLAMA_ID, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert_nothing_written(out)
    assert not out.parent.exists()
    text = result.stdout
    assert "route: copy the data files unchanged" in text and "nothing written (--dry-run)" in text
    assert re.search(r"(?m)^  module\.decoder\.layers\.mlp\.linear_fc1\.weight +\[2, 352, 64\]  bfloat16  90\.1 KB  4$",
                     text), text
    assert "config: " in text and "num_layers=2" in text and "tokenizer: " in text and "output: " in text
    cast = run_cli("convert", "--input_path", fixture_nemo("tiny_llama_torch_dist"), "--output_path", out,
                   "--model_id", LLAMA_ID, "--dry-run", "--dtype", "fp32")
    assert "route: stream every chunk" in cast.stdout and "bfloat16 -> float32" in cast.stdout
    assert_nothing_written(out)


def test_dry_run_shows_the_vocab_size_the_real_run_writes(tmp_path: Path, llama_config_text: str) -> None:
    """A checkpoint whose 128 embedding rows NeMo 2.0 would not rebuild from the tokenizer (100 tokens padded to a
    multiple of 16 is 112): the real run writes vocab_size=128, and --dry-run must show the same config."""
    text = with_settings(llama_config_text, make_vocab_size_divisible_by=16)
    nemo = _tar_with(tmp_path / "t.nemo", fixture_nemo("tiny_llama_torch_dist"), {"model_config.yaml": text.encode()})
    base = ["convert", "--input_path", nemo, "--model_id", LLAMA_ID]
    dry = run_cli(*base, "--output_path", tmp_path / "dry", "--dry-run")
    real = run_cli(*base, "--output_path", tmp_path / "out")
    assert dry.returncode == 0 and real.returncode == 0, dry.stderr + real.stderr
    written = load_graph(tmp_path / "out" / "context" / "io.json")["model"]["config"]["vocab_size"]
    assert written == 128
    config = next(line for line in dry.stdout.splitlines() if line.startswith("config: "))
    assert "vocab_size=128" in config.split(", "), config
    warning = "writing vocab_size=128"
    assert warning in dry.stderr and warning in real.stderr


def test_existing_output_is_refused_and_replaced_with_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["convert", "--input_path", fixture_nemo("tiny_llama_torch_dist"), "--output_path", out,
            "--model_id", LLAMA_ID]
    assert run_cli(*base).returncode == 0
    (out / "stale-marker").write_text("old")
    assert_one_line_error(run_cli(*base), "already exists; pass --force")
    assert (out / "stale-marker").exists()
    result = run_cli(*base, "--force")
    assert result.returncode == 0, result.stderr
    assert_complete(out)
    assert not (out / "stale-marker").exists()
    assert not list(tmp_path.glob("out.replaced-*"))


def test_link_hard_links_an_extracted_folder(tmp_path: Path) -> None:
    folder = tmp_path / "extracted"
    with tarfile.open(fixture_nemo("tiny_llama_torch_dist")) as archive:
        archive.extractall(folder, filter="data")
    out = tmp_path / "out"
    result = run_cli("convert", "--input_path", folder, "--output_path", out, "--model_id", LLAMA_ID, "--link")
    assert result.returncode == 0, result.stderr
    assert "hard-linked" in result.stdout
    for name in ("__0_0.distcp", "__0_1.distcp"):
        assert os.stat(out / "weights" / name).st_ino == os.stat(folder / "model_weights" / name).st_ino
    assert os.stat(out / "weights" / ".metadata").st_ino != os.stat(folder / "model_weights" / ".metadata").st_ino
    assert verify_checkpoint(out, folder).ok


def test_bare_model_weights_with_model_config_and_tokenizer_path(tmp_path: Path) -> None:
    folder = tmp_path / "extracted"
    with tarfile.open(fixture_nemo("tiny_llama_zarr")) as archive:
        archive.extractall(folder, filter="data")
    tokenizer = next(folder.glob("*_tokenizer.model"))
    out = tmp_path / "out"
    result = run_cli("convert", "--input_path", folder / "model_weights", "--output_path", out, "--model_id",
                     LLAMA_ID, "--model_config", folder / "model_config.yaml", "--tokenizer_path", tokenizer,
                     "--tokenizer_library", "sentencepiece")
    assert result.returncode == 0, result.stderr
    assert_complete(out)
    assert (out / "context" / tokenizer.name).read_bytes() == tokenizer.read_bytes()


def _tar_with(path: Path, source: Path, replace: dict[str, bytes | None] = {},
              extra: list[tarfile.TarInfo] = []) -> Path:
    """A copy of a .nemo with some members replaced (None: dropped) and some entries added."""
    with tarfile.open(source) as original, tarfile.open(path, "w:") as archive:
        for info in original.getmembers():
            name = info.name.removeprefix("./")
            if name in replace:
                if replace[name] is None:
                    continue
                info.size = len(replace[name])
                archive.addfile(info, io.BytesIO(replace[name]))
            else:
                archive.addfile(info, original.extractfile(info) if info.isfile() else None)
        for info in extra:
            archive.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


def _bad_input(case: str, tmp_path: Path, config_text: str) -> tuple[list, str]:
    nemo = fixture_nemo("tiny_llama_torch_dist")
    if case == "not a tar":
        junk = tmp_path / "junk.nemo"
        junk.write_bytes(b"\x00not a tar" * 999)
        return [junk], "junk.nemo: not a .nemo file (not a tar archive)"
    if case == "traversal":
        return [_tar_with(tmp_path / "t.nemo", nemo, extra=[_entry("../../evil.txt")])], "'../../evil.txt' points outside"
    if case == "absolute":
        return [_tar_with(tmp_path / "t.nemo", nemo, extra=[_entry("/tmp/evil.txt")])], "'/tmp/evil.txt' has an absolute"
    if case == "symlink":
        return [_tar_with(tmp_path / "t.nemo", nemo, extra=[_entry("./x", tarfile.SYMTYPE, "/etc/passwd")])], \
            "member './x' is a link"
    if case == "missing model_config.yaml":
        return [_tar_with(tmp_path / "t.nemo", nemo, {"model_config.yaml": None})], "no model_config.yaml member"
    if case == "missing metadata.json":
        return [_tar_with(tmp_path / "t.nemo", nemo, {"model_weights/metadata.json": None})], \
            "model_weights/metadata.json: missing"
    if case == "truncated data file":
        with tarfile.open(nemo) as original:
            data = original.extractfile("./model_weights/__0_1.distcp").read()  # type: ignore[union-attr]
        return [_tar_with(tmp_path / "t.nemo", nemo, {"model_weights/__0_1.distcp": data[:-500]})], \
            "model_weights/__0_1.distcp: truncated"
    if case == "unknown model id":
        return [nemo, "--model_id", "acme/not-a-model"], "acme/not-a-model"
    if case == "shape mismatch":
        text = with_settings(config_text, ffn_hidden_size=192)
        return [_tar_with(tmp_path / "t.nemo", nemo, {"model_config.yaml": text.encode()})], "linear_fc"
    if case == "unsupported tokenizer":
        text = config_text.replace("library: sentencepiece", "library: megatron").replace("type: null",
                                                                                           "type: GPT2BPETokenizer")
        return [_tar_with(tmp_path / "t.nemo", nemo, {"model_config.yaml": text.encode()})], "tokenizer"
    if case == "bare weights without --model_config":
        folder = tmp_path / "x"
        with tarfile.open(nemo) as archive:
            archive.extractall(folder, filter="data")
        return [folder / "model_weights"], "needs --model_config"
    raise AssertionError(case)


BAD_INPUTS = ["not a tar", "traversal", "absolute", "symlink", "missing model_config.yaml", "missing metadata.json",
              "truncated data file", "unknown model id", "shape mismatch", "unsupported tokenizer",
              "bare weights without --model_config"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, llama_config_text: str, case: str) -> None:
    (source, *more), fragment = _bad_input(case, tmp_path, llama_config_text)
    out = tmp_path / "out"
    if "--model_id" not in more:
        more += ["--model_id", LLAMA_ID]
    result = run_cli("convert", "--input_path", source, "--output_path", out, *more)
    assert_one_line_error(result, fragment)
    assert_nothing_written(out)


def test_strict_refuses_unknown_keys_and_default_carries_them(tmp_path: Path, make_nemo) -> None:
    tensors = factory.tiny_llama_tensors()
    import torch

    tensors["model.decoder.layers.self_attention.linear_proj.extra_scale"] = torch.ones(2, 64, dtype=torch.bfloat16)
    nemo = make_nemo(tensors)
    out = tmp_path / "out"
    strict = run_cli("convert", "--input_path", nemo, "--output_path", out, "--model_id", LLAMA_ID, "--strict")
    assert_one_line_error(strict, "module.decoder.layers.self_attention.linear_proj.extra_scale: not a key of")
    assert_nothing_written(out)
    lenient = run_cli("convert", "--input_path", nemo, "--output_path", out, "--model_id", LLAMA_ID)
    assert lenient.returncode == 0, lenient.stderr
    assert "warning: module.decoder.layers.self_attention.linear_proj.extra_scale: not a key of" in lenient.stderr
    assert verify_checkpoint(out, nemo).ok


def test_failure_midway_leaves_no_output(tmp_path: Path, make_nemo) -> None:
    from migrator.convert.read.source import open_source

    folder = make_nemo(extracted=True)
    with open_source(folder) as source:
        chunk = source.chunks["model.decoder.layers.mlp.linear_fc2.weight"][1]
    data = folder / chunk.member
    blob = bytearray(data.read_bytes())
    blob[chunk.byte_offset:chunk.byte_offset + 64] = b"\xff" * 64  # the chunk's torch.save header (checked against
    data.write_bytes(bytes(blob))  # the index when the source is opened, and again when the cast decodes the chunk)
    out = tmp_path / "out"
    result = run_cli("convert", "--input_path", folder, "--output_path", out, "--model_id", LLAMA_ID,
                     "--dtype", "fp32")
    assert_one_line_error(result, f"{chunk.member.split('/')[-1]} (model.decoder.layers.mlp.linear_fc2.weight at "
                                  f"{list(chunk.offsets)}): ")
    assert_nothing_written(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_output(tmp_path: Path, make_nemo, llama_config_text: str, sig: int) -> None:
    import torch

    sizes = dict(layers=8, hidden=1024, ffn=2816, heads=8, groups=8)
    tensors = {k: torch.zeros(v.shape, dtype=torch.bfloat16)
               for k, v in factory.tiny_llama_tensors(**sizes).items()}  # about 200 MB
    config = with_settings(llama_config_text, num_layers=8, hidden_size=1024, ffn_hidden_size=2816,
                           num_attention_heads=8, num_query_groups=8, dist_ckpt_format="zarr")
    nemo = make_nemo(tensors, objects=factory.extra_states(layers=8), backend="zarr", config=config)
    out = tmp_path / "out"
    partial = tmp_path / "out.partial"
    process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "migrator", "convert", "--input_path",
                                str(nemo), "--output_path", str(out), "--model_id", LLAMA_ID, "--dtype", "fp32"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (partial / "weights").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the conversion ended before it could be interrupted"
    process.send_signal(sig)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # show where it hangs (faulthandler dumps every thread on SIGABRT)
        process.send_signal(signal.SIGABRT)
        _, stderr = process.communicate()
        raise AssertionError("no exit 60 s after the signal:\n" + stderr[-8000:]) from None
    assert process.returncode == 128 + sig, stderr  # 130 SIGINT, 143 SIGTERM
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert_nothing_written(out)


def test_a_leftover_partial_output_is_removed_under_the_lock(tmp_path: Path) -> None:
    # no other run holds out.lock, so out.partial is an interrupted run's: removed, saying so, without --force
    # (a running conversion's is refused: tests/convert/test_reliability_outlock.py)
    out = tmp_path / "out"
    leftover = tmp_path / "out.partial"
    (leftover / "weights").mkdir(parents=True)
    base = ["convert", "--input_path", fixture_nemo("tiny_llama_torch_dist"), "--output_path", out,
            "--model_id", LLAMA_ID]
    result = run_cli(*base)
    assert result.returncode == 0, result.stderr
    assert f"{leftover}: removed, left by an interrupted run" in result.stdout
    assert_complete(out)


def test_help_and_the_command_module_do_not_import_torch() -> None:
    code = ("import sys; import migrator.cli.convert_cmd, migrator.cli.main; "
            "from click.testing import CliRunner; r = CliRunner().invoke(migrator.cli.main.cli, ['convert', '--help']); "
            "assert r.exit_code == 0 and '--input_path' in r.output and '--input-path' in r.output, r.output; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('migrator.convert')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_flag_of_nemos_converter_is_accepted(tmp_path: Path) -> None:
    result = run_cli("convert", "--help")
    for flag in ("--input_path", "--output_path", "--model_id", "--tokenizer_path", "--tokenizer_library",
                 "--tokenizer_vocab_file", "--tokenizer_model_name", "--model_config", "--dtype", "--dry-run",
                 "--force", "--link", "--strict", "--workers", "--reset-attention-extra-state"):
        assert flag in result.stdout, flag


def test_plain_progress_lines() -> None:
    from migrator.convert.storage.progress import PlainProgress, make_progress

    stream = io.StringIO()
    assert isinstance(make_progress(stream), PlainProgress)  # not a terminal
    progress = PlainProgress(stream, interval=0.0)
    progress.start(2000, "writing weights")
    progress.advance(1000)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "nemo-migrate: writing weights: 2.0 KB"
    assert "1.0 KB of 2.0 KB (50%)" in lines[1] and lines[2].startswith("nemo-migrate: writing weights: done, 1.0 KB")


def test_two_conversions_at_once_do_not_collide(tmp_path: Path) -> None:
    """No fixed temporary path (NeMo's script shares /tmp/nemo_tokenizer between runs)."""
    processes = []
    for name in ("tiny_llama_torch_dist", "tiny_llama_zarr"):
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "migrator", "convert", "--input_path", str(fixture_nemo(name)), "--output_path",
             str(tmp_path / name), "--model_id", LLAMA_ID], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE))
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    for name in ("tiny_llama_torch_dist", "tiny_llama_zarr"):
        assert_complete(tmp_path / name)
        assert verify_checkpoint(tmp_path / name, fixture_nemo("tiny_llama_torch_dist")).ok
