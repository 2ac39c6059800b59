"""Benchmark-only scripts: comparisons with other packages, run in their own tox envs."""
