"""OT sender/receiver roles: base OT + IKNP extension over the link, chosen-message and correlated."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
from mpc_ot_roles import receiver, sender  # type: ignore[import-not-found]

from sharelearn.crypto.garble import new_delta
from sharelearn.testing.roles import RoleRun, run_roles

pytestmark = pytest.mark.timeout(180)


def _case(
    m: int, m_cot: int, seed: int
) -> tuple[dict[str, object], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x0 = rng.integers(0, 2**63, size=(m, 2), dtype=np.uint64)
    x1 = rng.integers(0, 2**63, size=(m, 2), dtype=np.uint64)
    choices = rng.integers(0, 2, size=m, dtype=np.uint8)
    cot_choices = rng.integers(0, 2, size=m_cot, dtype=np.uint8)
    delta = new_delta()
    roles = {
        "send": partial(sender, x0=x0, x1=x1, delta=delta, m_cot=m_cot),
        "recv": partial(receiver, choices=choices, cot_choices=cot_choices),
    }
    return roles, x0, x1, choices, cot_choices, delta


def test_one_million_chosen_message_ots_deliver_exactly_the_chosen_messages() -> None:
    roles, x0, x1, choices, cot_choices, delta = _case(1_000_000, 1000, 1)

    out = run_roles(roles, timeout=150)  # type: ignore[arg-type]

    _check_delivery(out, x0, x1, choices, cot_choices, delta)


def _check_delivery(
    out: RoleRun,
    x0: np.ndarray,
    x1: np.ndarray,
    choices: np.ndarray,
    cot_choices: np.ndarray,
    delta: np.ndarray,
) -> None:
    got, labels = out["recv"]
    np.testing.assert_array_equal(got, np.where(choices[:, None].astype(bool), x1, x0))
    assert not np.any(np.all(got == np.where(choices[:, None].astype(bool), x0, x1), axis=1))
    zero = out["send"]
    np.testing.assert_array_equal(labels, zero ^ (cot_choices[:, None].astype(np.uint64) * delta))


def test_sender_receives_only_the_base_ot_points_and_the_extension_matrix() -> None:
    roles, *_ = _case(4096, 64, 2)

    out = run_roles(roles, timeout=60)  # type: ignore[arg-type]

    tags = sorted({m.tag.split("/")[-1] for m in out.audit.messages if m.dst == "send"})
    assert tags == ["base_s", "u"]
    assert out.stats["send"]["bytes_received"] < 4096 * 16 + 128 * 8 * 2 * 16 + 2000


def test_ot_roles_over_both_transports(run_parties: Callable[..., RoleRun]) -> None:
    roles, x0, x1, choices, cot_choices, delta = _case(20_000, 5000, 3)

    out = run_parties(roles, timeout=120)

    _check_delivery(out, x0, x1, choices, cot_choices, delta)
