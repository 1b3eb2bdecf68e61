"""Benchmarks of keras-vit against its peers (not part of the package)."""
