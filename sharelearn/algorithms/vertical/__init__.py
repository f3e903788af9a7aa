"""Vertical (feature-split) learning: hetero LR, SecureBoost; parties hold different columns of the same rows."""

__all__: list[str] = []
