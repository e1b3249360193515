"""The model side: architecture derivation and shape checks, model ids and presets, the model spec, extra state,
the tokenizer."""
