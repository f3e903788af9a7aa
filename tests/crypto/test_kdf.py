"""KDFs: RFC 5869 test vectors for HKDF-SHA256, and the one-step KDF against its definition."""

from __future__ import annotations

import hashlib

import pytest

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import kdf

# RFC 5869 appendix A: test cases 1 (with salt and info) and 3 (zero-length salt and info).
RFC5869 = [
    (
        bytes([0x0B]) * 22,
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes([0x0B]) * 22,
        b"",
        b"",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "okm"), RFC5869)
def test_hkdf_sha256_matches_rfc5869(ikm: bytes, salt: bytes, info: bytes, okm: str) -> None:
    assert kdf.hkdf_sha256(ikm, salt=salt, info=info, length=42).hex() == okm


def test_hkdf_none_salt_is_hashlen_zeros() -> None:
    ikm = b"secret"

    assert kdf.hkdf_sha256(ikm, salt=None, info=b"i", length=32) == kdf.hkdf_sha256(
        ikm, salt=bytes(32), info=b"i", length=32
    )


def test_hkdf_separates_purposes_and_lengths() -> None:
    a = kdf.hkdf_sha256(b"z" * 32, salt=None, info=b"enc", length=32)
    b = kdf.hkdf_sha256(b"z" * 32, salt=None, info=b"mac", length=32)

    assert a != b
    assert kdf.hkdf_sha256(b"z" * 32, salt=None, info=b"enc", length=16) == a[:16]  # a prefix, by RFC


def test_one_step_is_sp800_56c_single_block() -> None:
    z, info = bytes(range(32)), b"sharelearn/test"

    out = kdf.one_step_sha256(z, info=info, length=16)

    assert out == hashlib.sha256(b"\x00\x00\x00\x01" + z + info).digest()[:16]


@pytest.mark.parametrize("length", [0, 33])
def test_one_step_refuses_lengths_beyond_one_block(length: int) -> None:
    with pytest.raises(CryptoError, match=r"length must be in 1\.\.32"):
        kdf.one_step_sha256(b"z", info=b"", length=length)


def test_hkdf_refuses_lengths_beyond_rfc_limit() -> None:
    with pytest.raises(CryptoError, match="length must be in"):
        kdf.hkdf_sha256(b"z", salt=None, info=b"", length=255 * 32 + 1)
