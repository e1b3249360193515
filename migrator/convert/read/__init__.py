"""Sources, one module per kind: containers (source: tar, compressed tar, folder), the torch_dist index, zarr,
model_config.yaml, a NeMo 2.0 context (io.json)."""
