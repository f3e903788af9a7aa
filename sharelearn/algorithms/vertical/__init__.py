"""Vertical (feature-split) learning: parties hold different columns of the same rows."""

__all__: list[str] = []
