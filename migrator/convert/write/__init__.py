"""Destinations: one module per output format."""
