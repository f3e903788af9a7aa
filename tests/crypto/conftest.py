"""Shared fixtures for the crypto tests: small HE keys (generated once per session), both backends."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from sharelearn.crypto import mbx, ou, paillier

TEST_KEY_BITS = 1024  # ~80-bit security: fast, and still in the mbx kernels' size classes


def _seeded(seed: int) -> Any:
    return random.Random(seed).randbytes


@pytest.fixture(scope="session")
def paillier_keypair() -> tuple[paillier.PublicKey, paillier.PrivateKey]:
    return paillier.keygen(TEST_KEY_BITS, rng=_seeded(1))


@pytest.fixture(scope="session")
def ou_keypair() -> tuple[ou.PublicKey, ou.PrivateKey]:
    return ou.keygen(TEST_KEY_BITS, rng=_seeded(2))


@pytest.fixture(scope="session", params=["paillier", "ou"])
def he_keypair(request: pytest.FixtureRequest) -> Any:
    """Both schemes, for tests of the shared EncArray behaviour."""
    return request.getfixturevalue(f"{request.param}_keypair")


@pytest.fixture(params=["mbx", "portable"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test with the ipp-crypto kernels and again with the gmpy2-only fallback."""
    if request.param == "mbx" and not mbx.is_available():
        pytest.skip("libcrypto_mb is not usable on this machine")
    mbx.force_portable(request.param == "portable")
    try:
        yield request.param
    finally:
        mbx.force_portable(False)


@pytest.fixture
def portable() -> Iterator[None]:
    """Run a test on the gmpy2-only path (worker processes instead of the IFMA kernel's threads)."""
    mbx.force_portable(True)
    try:
        yield
    finally:
        mbx.force_portable(False)
