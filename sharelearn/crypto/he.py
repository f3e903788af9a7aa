"""Scheme selection for additively homomorphic encryption: protocols take `he_scheme`.

This module is the one import surface for HE outside `crypto/` (an import-linter contract holds
the other layers to it). Both schemes satisfy the same `HEPublicKey` / `HEPrivateKey` protocols
and produce `EncArray`s, so a protocol written against this module runs unchanged on either:

* `paillier`: plaintexts mod n (~|n| bits), ciphertexts mod n^2.
* `ou`: Okamoto–Uchiyama, plaintexts mod a secret p (~|n|/3 bits), ciphertexts mod n; faster.

Heavy batches (encryption, decryption, scalar products) take an optional `executor`
(`core.executor.Executor`): local threads, processes or a Ray cluster, chosen by the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from sharelearn.core.errors import ConfigError, DecodeError
from sharelearn.core.types import Wire
from sharelearn.crypto import ou, paillier
from sharelearn.crypto.encarray import (
    DEFAULT_KEY_BITS,
    EncArray,
    HEPrivateKey,
    HEPublicKey,
    add_all,
    concatenate,
    decrypt,
    encrypt,
    matmul_plain,
)
from sharelearn.crypto.modexp import RandBytes
from sharelearn.crypto.paillier_encoding import Encoded, ObjArray

__all__ = [
    "DEFAULT_KEY_BITS",
    "SCHEMES",
    "EncArray",
    "Encoded",
    "HEPrivateKey",
    "HEPublicKey",
    "ObjArray",
    "Scheme",
    "add_all",
    "concatenate",
    "decrypt",
    "encrypt",
    "keygen",
    "matmul_plain",
    "public_key_from_wire",
]

Scheme = Literal["paillier", "ou"]
SCHEMES: tuple[str, ...] = ("paillier", "ou")

_KEYGEN: dict[str, Callable[..., tuple[Any, Any]]] = {"paillier": paillier.keygen, "ou": ou.keygen}


def keygen(
    scheme: str = "paillier", bits: int = DEFAULT_KEY_BITS, *, rng: RandBytes | None = None
) -> tuple[HEPublicKey, HEPrivateKey]:
    """Generate a key pair of the named scheme.

    Raises:
        ConfigError: an unknown scheme name.
    """
    if scheme not in _KEYGEN:
        raise ConfigError(f"he_scheme must be one of {SCHEMES}, got {scheme!r}")
    pk, sk = _KEYGEN[scheme](bits, rng)
    return pk, sk


def public_key_from_wire(data: Wire) -> HEPublicKey:
    """Decode a public key of either scheme (dispatching on its 'scheme' field)."""
    if not isinstance(data, dict):
        raise DecodeError(f"a public key must be a map, got {type(data).__name__}")
    if data.get("scheme") == "paillier":
        return paillier.PublicKey.from_wire(data)
    if data.get("scheme") == "ou":
        return ou.PublicKey.from_wire(data)
    raise DecodeError(f"unknown HE scheme {data.get('scheme')!r}; expected one of {SCHEMES}")
