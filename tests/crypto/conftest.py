"""Shared fixtures for the crypto tests: small HE keys (generated once per session), both backends."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from sharelearn.core.executor import SERIAL, Executor
from sharelearn.crypto import ou, paillier
from sharelearn.crypto.kernels import mbx
from sharelearn.runtime.executors import ProcessExecutor, ThreadExecutor

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
    """Run a test on the gmpy2-only path (also in worker processes: the caller's choice travels)."""
    mbx.force_portable(True)
    try:
        yield
    finally:
        mbx.force_portable(False)


@pytest.fixture(scope="session")
def threads() -> Iterator[ThreadExecutor]:
    """Two threads (GIL-bound kernels on one worker process plus the caller), shared by the session."""
    executor = ThreadExecutor(2)
    yield executor
    executor.close()


@pytest.fixture(scope="session")
def processes() -> Iterator[ProcessExecutor]:
    """Every kernel on one worker process plus the caller, shared by the session."""
    executor = ProcessExecutor(2)
    yield executor
    executor.close()


@pytest.fixture(params=["serial", "threads", "processes"])
def executor(request: pytest.FixtureRequest) -> Executor:
    """Run a test in the caller, on threads and on worker processes: results must not change."""
    if request.param == "serial":
        return SERIAL
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]
