"""NeMo 1.0 `.nemo` -> NeMo 2.0 checkpoint directory, on CPU, without building the model.

Everything under this package may import torch; nothing outside it (and `migrator.cli.convert_cmd`) may.
"""
