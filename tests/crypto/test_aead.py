"""AEAD: published test vectors, round trips, and every tamper raising CryptoError."""

from __future__ import annotations

import pytest

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import aead

# RFC 8439 section 2.8.2 (AEAD_CHACHA20_POLY1305 test vector).
RFC8439_KEY = bytes(range(0x80, 0xA0))
RFC8439_NONCE = bytes.fromhex("070000004041424344454647")
RFC8439_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
RFC8439_PT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
    b"sunscreen would be it."
)
RFC8439_CT = bytes.fromhex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b"
    "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
)
RFC8439_TAG = bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")

# The GCM specification (McGrew & Viega 2005), test case 16: AES-256, 60-byte plaintext, 20-byte AAD.
GCM16_KEY = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
GCM16_NONCE = bytes.fromhex("cafebabefacedbaddecaf888")
GCM16_AAD = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM16_PT = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525"
    "b16aedf5aa0de657ba637b39"
)
GCM16_CT = bytes.fromhex(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838"
    "c5f61e6393ba7a0abcc9f662"
)
GCM16_TAG = bytes.fromhex("76fc6ece0f4e1768cddf8853bb2d551b")

VECTORS = [
    ("chacha20poly1305", RFC8439_KEY, RFC8439_NONCE, RFC8439_AAD, RFC8439_PT, RFC8439_CT + RFC8439_TAG),
    ("aes256gcm", GCM16_KEY, GCM16_NONCE, GCM16_AAD, GCM16_PT, GCM16_CT + GCM16_TAG),
]


@pytest.mark.parametrize(("alg", "key", "nonce", "aad", "pt", "sealed"), VECTORS)
def test_seal_matches_published_vector(
    alg: aead.AeadAlg, key: bytes, nonce: bytes, aad: bytes, pt: bytes, sealed: bytes
) -> None:
    assert aead.seal(key, nonce, pt, aad, alg=alg) == sealed
    assert aead.open_(key, nonce, sealed, aad, alg=alg) == pt


@pytest.mark.parametrize(("alg", "key", "nonce", "aad", "pt", "sealed"), VECTORS)
def test_open_refuses_any_tamper(
    alg: aead.AeadAlg, key: bytes, nonce: bytes, aad: bytes, pt: bytes, sealed: bytes
) -> None:
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    bad_tag = sealed[:-1] + bytes([sealed[-1] ^ 0x80])
    other_nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    other_key = bytes([key[0] ^ 1]) + key[1:]

    cases = [
        (key, nonce, flipped, aad),
        (key, nonce, bad_tag, aad),
        (key, other_nonce, sealed, aad),
        (other_key, nonce, sealed, aad),
        (key, nonce, sealed, aad + b"x"),
        (key, nonce, sealed[:-1], aad),
    ]

    for k, n, s, a in cases:
        with pytest.raises(CryptoError, match="authentication failed"):
            aead.open_(k, n, s, a, alg=alg)


@pytest.mark.parametrize("alg", ["chacha20poly1305", "aes256gcm"])
def test_round_trip_with_fresh_key_and_empty_inputs(alg: aead.AeadAlg) -> None:
    key, nonce = aead.new_key(), aead.new_nonce()

    sealed = aead.seal(key, nonce, b"", alg=alg)

    assert len(sealed) == aead.TAG_BYTES
    assert aead.open_(key, nonce, sealed, alg=alg) == b""
    long_sealed = aead.seal(key, nonce, b"m" * 100, b"ad", alg=alg)
    assert aead.open_(key, nonce, long_sealed, b"ad", alg=alg) == b"m" * 100


def test_misuse_is_loud() -> None:
    key, nonce = aead.new_key(), aead.new_nonce()

    with pytest.raises(CryptoError, match="key must be 32 bytes"):
        aead.seal(key[:16], nonce, b"x", alg="aes256gcm")
    with pytest.raises(CryptoError, match="nonce must be 12 bytes"):
        aead.seal(key, nonce[:8], b"x", alg="chacha20poly1305")
    with pytest.raises(CryptoError, match="shorter than its tag"):
        aead.open_(key, nonce, b"short", alg="chacha20poly1305")
    with pytest.raises(CryptoError, match="unknown AEAD algorithm"):
        aead.seal(key, nonce, b"x", alg="rot13")  # type: ignore[arg-type]


def test_the_two_algorithms_are_not_interchangeable() -> None:
    key, nonce = aead.new_key(), aead.new_nonce()
    sealed = aead.seal(key, nonce, b"payload", alg="chacha20poly1305")

    with pytest.raises(CryptoError):
        aead.open_(key, nonce, sealed, alg="aes256gcm")
