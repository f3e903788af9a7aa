"""Module-level PSI role wrappers, importable by spawned processes."""

from __future__ import annotations

import numpy as np

from sharelearn.core.link import Link
from sharelearn.operators.psi import PsiParams, psi_follower, psi_leader


def leader(
    link: Link, ids: list[str], followers: list[str], receivers: list[str], batch: int, seed: int = 0
) -> np.ndarray:
    return psi_leader(
        link, ids, followers=followers, receivers=receivers, params=PsiParams(batch_size=batch, seed=seed)
    ).rows


def follower(
    link: Link, ids: list[str], leader: str, receiver: bool, batch: int, seed: int = 0
) -> np.ndarray | None:
    params = PsiParams(batch_size=batch, seed=seed)
    out = psi_follower(link, ids, leader=leader, receiver=receiver, params=params)
    return None if out is None else out.rows
