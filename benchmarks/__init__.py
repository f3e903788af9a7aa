"""Benchmarks at real sizes; each prints ratios against a baseline measured in the same run."""
