"""Sources: one module per kind of input."""
