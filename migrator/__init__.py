"""nemo-migrator: move NeMo 1.0 training setups to NeMo 2.0."""

__version__ = "0.1.0"
