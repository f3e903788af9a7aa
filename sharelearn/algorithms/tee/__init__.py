"""Algorithms that run inside attested enclaves (the TEE route)."""

__all__: list[str] = []
