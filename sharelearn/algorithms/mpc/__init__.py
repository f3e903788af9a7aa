"""Algorithms on secret shares (the MPC route): SS logistic regression."""

__all__: list[str] = []
