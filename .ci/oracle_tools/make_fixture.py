"""Run ../shared/oracle/make_nemo1_fixture.py unmodified, with extra presets added to its PRESETS dict.

The maker script picks its preset with `preset_name = sys.argv[1]` right after defining PRESETS. This runner
executes the script as __main__ and, through a line trace limited to the script's module frame, adds the presets
below to PRESETS just before that line runs (they are built from the script's own BASE dict, so they inherit
every default of the shared fixtures). The maker fixes some architecture keys in code (normalization,
activation, bias, position embeddings); a preset's "cfg_overrides" are applied to its model config at the line
`import nemo1_cpu_patches`, right after the config is built and before the model is. Nothing is copied from the
script. (megatron-core's CPU layer norm has no zero-centred gamma, so `layernorm1p` cannot be made here.)

Usage (oracle venv): python make_fixture.py MAKER_SCRIPT OUT_ROOT PRESET [PRESET ...]
Writes each preset's files into OUT_ROOT/PRESET; all presets run in one process (NeMo is imported once).
"""
import os
import runpy
import sys


def extra_presets(base: dict) -> dict:
    return {
        # tied embeddings: no output_layer.weight in the checkpoint
        "tied": dict(base, name="tiny_llama_tied", share_embeddings_and_output_weights=True),
        # a Hugging Face (GPT-2 style byte-level BPE) tokenizer written next to the .nemo as <name>.hf_tokenizer/
        "hf_tokenizer": dict(base, name="tiny_llama_hf", tokenizer="huggingface"),
        # another size: 4 layers, MHA (num_query_groups null), wider ffn, other rope base and vocab padding
        "mha_deep": dict(base, name="tiny_gpt_mha", num_layers=4, hidden_size=96, ffn_hidden_size=256,
                         num_attention_heads=6, num_query_groups=None, seq_length=128, rotary_base=500000,
                         make_vocab_size_divisible_by=8),
        # GPT-3 style: LayerNorm with biases, GELU (not gated), linear biases, learned positions, tied embeddings
        "gpt_layernorm": dict(base, name="tiny_gpt_layernorm", num_query_groups=None,
                              share_embeddings_and_output_weights=True,
                              cfg_overrides=dict(normalization="layernorm", activation="gelu", bias=True,
                                                 position_embedding_type="learned_absolute")),
        # Nemotron style: LayerNorm, squared ReLU, half-rotary, no bias
        "nemotron_like": dict(base, name="tiny_nemotron_like", ffn_hidden_size=256,
                              cfg_overrides=dict(normalization="layernorm", activation="squared-relu",
                                                 rotary_percentage=0.5)),
    }


def run_maker(script: str, lines: list[str], preset: str, out_dir: str) -> None:
    """One run of the maker script as __main__ with the extra presets and config overrides hooked in."""
    marker = next((i + 1 for i, line in enumerate(lines) if line.startswith("preset_name = sys.argv[1]")), None)
    patches = next((i + 1 for i, line in enumerate(lines) if line.startswith("import nemo1_cpu_patches")), None)
    if marker is None or patches is None:
        raise SystemExit(f"{script}: no `preset_name = sys.argv[1]` or `import nemo1_cpu_patches` line; "
                         f"cannot add presets")

    def local_trace(frame, event, arg):
        if event == "line" and frame.f_lineno == marker:
            frame.f_globals["PRESETS"].update(extra_presets(frame.f_globals["BASE"]))
        elif event == "line" and frame.f_lineno == patches:
            g = frame.f_globals
            overrides = g["P"].get("cfg_overrides") or {}
            if overrides:
                from omegaconf import open_dict

                with open_dict(g["cfg"]):
                    for key, value in overrides.items():
                        g["cfg"][key] = value
            sys.settrace(None)
            return None
        return local_trace

    def global_trace(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == script and frame.f_code.co_name == "<module>":
            return local_trace
        return None

    sys.argv = [script, preset, out_dir]
    sys.settrace(global_trace)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.settrace(None)


def reset_between_runs(cwd: str) -> None:
    """The maker leaves process-wide state that a second run in the same process must not find."""
    os.chdir(cwd)  # the Hugging Face preset changes into its output folder
    try:  # NeMo 1.0 initialises megatron-core's global micro-batch calculator once per process
        import megatron.core.num_microbatches_calculator as calculator

        calculator._GLOBAL_NUM_MICROBATCHES_CALCULATOR = None
    except ImportError:
        pass


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    script, out_root, presets = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3:]
    with open(script, encoding="utf-8") as f:
        lines = f.read().splitlines()
    cwd = os.getcwd()
    for preset in presets:
        print(f"[make_fixture] {preset}", flush=True)
        run_maker(script, lines, preset, os.path.join(out_root, preset))
        reset_between_runs(cwd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
