"""Data layouts and benchmark-set builders (no torch)."""
