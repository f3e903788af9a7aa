from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from psi_roles import follower, leader  # type: ignore[import-not-found]

from sharelearn.crypto.kernels import mbx
from sharelearn.operators.psi import common_order, hash_ids
from sharelearn.testing.processes import run_roles_grpc
from sharelearn.testing.roles import run_roles


def _ids(rng: np.random.Generator, universe: int, n: int) -> list[str]:
    return [f"cust-{i:09d}" for i in rng.choice(universe, size=n, replace=False)]


def _psi_roles(
    a: list[str], b: list[str], receivers: list[str], batch: int = 700, seed: int = 0
) -> dict[str, Callable[..., Any]]:
    return {
        "bank": partial(leader, ids=a, followers=["shop"], receivers=receivers, batch=batch, seed=seed),
        "shop": partial(follower, ids=b, leader="bank", receiver="shop" in receivers, batch=batch, seed=seed),
    }


@pytest.fixture(params=["mbx", "openssl"])
def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "mbx" and not mbx.is_available():
        pytest.skip("libcrypto_mb with AVX512-IFMA is not available on this machine")
    mbx.force_portable(request.param == "openssl")
    yield request.param
    mbx.force_portable(False)


@pytest.mark.timeout(60)
def test_psi_reveals_only_intersection_in_a_common_order(backend: str) -> None:
    rng = np.random.default_rng(7)
    a, b = _ids(rng, 6000, 2500), _ids(rng, 6000, 3100)

    out = run_roles(_psi_roles(a, b, ["bank", "shop"]))

    common_a = [a[i] for i in out["bank"]]
    common_b = [b[i] for i in out["shop"]]
    assert common_a == common_b
    assert set(common_a) == set(a) & set(b)
    outside_a = sorted(set(a) - set(b))
    outside_b = sorted(set(b) - set(a))
    assert out.audit.count_leaks("shop", outside_a) == 0
    assert out.audit.count_leaks("bank", outside_b) == 0


def test_psi_non_receiver_learns_nothing_but_the_leader_does() -> None:
    rng = np.random.default_rng(8)
    a, b = _ids(rng, 3000, 1000), _ids(rng, 3000, 1000)

    out = run_roles(_psi_roles(a, b, ["bank"]))

    assert out["shop"] is None
    assert {a[i] for i in out["bank"]} == set(a) & set(b)
    assert "result" not in {m.tag for m in out.audit.messages if m.dst == "shop"}


def test_psi_three_parties_intersect_all_of_them() -> None:
    rng = np.random.default_rng(9)
    a, b, c = (_ids(rng, 2000, 1200) for _ in range(3))

    out = run_roles(
        {
            "bank": partial(
                leader, ids=a, followers=["shop", "telco"], receivers=["bank", "shop", "telco"], batch=500
            ),
            "shop": partial(follower, ids=b, leader="bank", receiver=True, batch=500),
            "telco": partial(follower, ids=c, leader="bank", receiver=True, batch=500),
        }
    )

    rows = [[ids[i] for i in out[p]] for p, ids in (("bank", a), ("shop", b), ("telco", c))]
    assert rows[0] == rows[1] == rows[2]
    assert set(rows[0]) == set(a) & set(b) & set(c)


@pytest.mark.timeout(60)
def test_psi_common_order_is_the_same_every_run_with_the_same_seed() -> None:
    rng = np.random.default_rng(11)
    a, b = _ids(rng, 3000, 1200), _ids(rng, 3000, 1500)

    first = run_roles(_psi_roles(a, b, ["bank", "shop"], seed=5))
    again = run_roles(_psi_roles(a, b, ["bank", "shop"], seed=5))
    other = run_roles(_psi_roles(a, b, ["bank", "shop"], seed=6))

    np.testing.assert_array_equal(first["bank"], again["bank"])
    np.testing.assert_array_equal(first["shop"], again["shop"])
    assert [a[i] for i in other["bank"]] != [a[i] for i in first["bank"]]
    assert {a[i] for i in other["bank"]} == {a[i] for i in first["bank"]}


def test_psi_common_order_reveals_nothing_beyond_the_set_and_the_seed() -> None:
    # The adversary (a receiver) predicts the order from what it already knows: its common ids
    # and the public seed. The order does not depend on either side's row order either.
    rng = np.random.default_rng(12)
    a, b = _ids(rng, 2000, 800), _ids(rng, 2000, 900)
    shuffled_a = [a[i] for i in rng.permutation(len(a))]

    out = run_roles(_psi_roles(a, b, ["bank", "shop"], seed=3))
    out_shuffled = run_roles(_psi_roles(shuffled_a, b, ["bank", "shop"], seed=3))

    mine = [b[i] for i in out["shop"]]
    predicted = sorted(mine)
    points = hash_ids(predicted)
    predicted = [predicted[i] for i in common_order(points, 3)]
    assert mine == predicted
    assert [b[i] for i in out_shuffled["shop"]] == mine
    # the order is not the id order nor the shop's row order
    assert mine != sorted(mine) and mine != [i for i in b if i in set(mine)]


def test_psi_handles_empty_and_disjoint_sets() -> None:
    out = run_roles(_psi_roles(["x-00001", "x-00002"], ["y-00001"], ["bank", "shop"]))

    assert out["bank"].size == 0 and out["shop"].size == 0


@pytest.mark.grpc
@pytest.mark.timeout(120)
def test_psi_same_roles_over_grpc_and_mutual_tls() -> None:
    rng = np.random.default_rng(10)
    a, b = _ids(rng, 5000, 2000), _ids(rng, 5000, 2000)

    out = run_roles_grpc(_psi_roles(a, b, ["bank", "shop"], batch=512))

    assert [a[i] for i in out["bank"]] == [b[i] for i in out["shop"]]
    assert {a[i] for i in out["bank"]} == set(a) & set(b)
    assert out.audit.count_leaks("shop", sorted(set(a) - set(b))) == 0
