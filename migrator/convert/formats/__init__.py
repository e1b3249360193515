"""Format types, no I/O policy: tensor/chunk records, dtypes, the torch.save byte format, the pickle allowlist."""
