"""`crypto.x25519` against RFC 7748's vectors and OpenSSL, on the multi-buffer kernel and without it."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import x25519

# RFC 7748 section 5.2, first vector: scalar, input u-coordinate, output u-coordinate.
RFC_SCALAR = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
RFC_U = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
RFC_OUT = bytes.fromhex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")


def _row(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).reshape(1, 32)


def _openssl(scalar: bytes, point: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(scalar).exchange(X25519PublicKey.from_public_bytes(point))


def test_rfc7748_vector(backend: str) -> None:
    assert x25519.scalarmult(RFC_SCALAR, _row(RFC_U)).tobytes() == RFC_OUT
    assert x25519.scalarmult_each(_row(RFC_SCALAR), _row(RFC_U)).tobytes() == RFC_OUT


@pytest.mark.parametrize("n", [1, 7, 8, 9, 32, 33])
def test_one_scalar_per_row_matches_openssl_for_every_batch_shape(backend: str, n: int) -> None:
    scalars = [os.urandom(32) for _ in range(n)]
    peers = [X25519PrivateKey.generate().public_key().public_bytes_raw() for _ in range(n)]

    out = x25519.scalarmult_each(
        np.frombuffer(b"".join(scalars), dtype=np.uint8).reshape(n, 32),
        np.frombuffer(b"".join(peers), dtype=np.uint8).reshape(n, 32),
    )

    assert [bytes(r) for r in out] == [_openssl(s, p) for s, p in zip(scalars, peers, strict=True)]


def test_shared_scalar_matches_openssl(backend: str) -> None:
    scalar = x25519.random_scalar()
    points = x25519.hash_to_point([b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i"])

    out = x25519.scalarmult(scalar, points)

    assert [bytes(r) for r in out] == [_openssl(scalar, bytes(p)) for p in points]


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(CryptoError, match="2 scalars for 3 points"):
        x25519.scalarmult_each(np.zeros((2, 32), np.uint8), np.zeros((3, 32), np.uint8))
    with pytest.raises(CryptoError, match=r"scalars must be a \(n, 32\) uint8 array"):
        x25519.scalarmult_each(np.zeros((2, 31), np.uint8), np.zeros((2, 32), np.uint8))
    with pytest.raises(CryptoError, match="scalar must be 32 bytes"):
        x25519.scalarmult(b"short", np.zeros((1, 32), np.uint8))
    assert x25519.scalarmult_each(np.zeros((0, 32), np.uint8), np.zeros((0, 32), np.uint8)).shape == (0, 32)
