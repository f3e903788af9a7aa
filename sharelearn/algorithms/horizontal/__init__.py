"""Horizontal (sample-split) learning: FedAvg with secure aggregation and differential privacy."""

__all__: list[str] = []
