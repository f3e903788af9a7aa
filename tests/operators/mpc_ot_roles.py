"""OT sender/receiver role functions for the OT tests (importable by spawned processes)."""

from __future__ import annotations

import numpy as np

from sharelearn.core.link import Link
from sharelearn.operators.ot import (
    cot_receive,
    cot_send,
    ot_receive,
    ot_receiver_setup,
    ot_send,
    ot_sender_setup,
)


def sender(link: Link, *, x0: np.ndarray, x1: np.ndarray, delta: np.ndarray, m_cot: int) -> np.ndarray:
    session = ot_sender_setup(link, peer="recv")
    ot_send(session, x0, x1)
    zero, _ = cot_send(session, delta, m_cot)
    return zero


def receiver(link: Link, *, choices: np.ndarray, cot_choices: np.ndarray) -> list[np.ndarray]:
    session = ot_receiver_setup(link, peer="send")
    return [ot_receive(session, choices), cot_receive(session, cot_choices)]
