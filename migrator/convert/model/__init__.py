"""Architecture derivation and checks."""
