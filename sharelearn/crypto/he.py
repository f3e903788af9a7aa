"""Scheme selection for additively homomorphic encryption: protocols take `he_scheme`.

Both schemes satisfy the same `HEPublicKey` / `HEPrivateKey` protocols and produce `EncArray`s,
so a protocol written against this module runs unchanged on either:

* `paillier`: plaintexts mod n (~|n| bits), ciphertexts mod n^2.
* `ou`: Okamoto–Uchiyama, plaintexts mod a secret p (~|n|/3 bits), ciphertexts mod n; faster.

Batches can also be encrypted on a Ray cluster (`backend="ray"`, the optional `ray` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from sharelearn.core.errors import ConfigError, CryptoError, DecodeError
from sharelearn.core.types import Wire
from sharelearn.crypto import ou, paillier
from sharelearn.crypto.encarray import (
    EncArray,
    HEPrivateKey,
    HEPublicKey,
    add_all,
    concatenate,
    decrypt,
    matmul_plain,
)
from sharelearn.crypto.encarray import encrypt as _encrypt_threads
from sharelearn.crypto.modexp import RandBytes
from sharelearn.crypto.paillier_encoding import DEFAULT_FRAC_BITS, Encoded, encode

__all__ = [
    "DEFAULT_KEY_BITS",
    "SCHEMES",
    "EncArray",
    "HEPrivateKey",
    "HEPublicKey",
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
DEFAULT_KEY_BITS = 2048  # ~112-bit security (NIST SP 800-57 Part 1, Table 2)

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


def encrypt(
    pk: HEPublicKey,
    x: Any,
    *,
    frac_bits: int = DEFAULT_FRAC_BITS,
    rng: RandBytes | None = None,
    workers: int | None = None,
    backend: str = "threads",
    ray_chunk: int = 4096,
) -> EncArray:
    """Encrypt with local threads (`backend="threads"`) or as Ray tasks (`backend="ray"`).

    With Ray each task encrypts `ray_chunk` values with the worker's OS CSPRNG (`rng` must be None).

    Raises:
        ConfigError: unknown backend, or `ray` without the `sharelearn[ray]` extra installed.
    """
    if backend == "threads":
        return _encrypt_threads(pk, x, frac_bits=frac_bits, rng=rng, workers=workers)
    if backend != "ray":
        raise ConfigError(f"HE backend must be 'threads' or 'ray', got {backend!r}")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("backend='ray' needs the optional extra: pip install 'sharelearn[ray]'") from exc
    if rng is not None:
        raise CryptoError("backend='ray' draws randomness on the workers; pass rng=None")
    enc = x if isinstance(x, Encoded) else encode(x, frac_bits=frac_bits, max_int=pk.max_int)
    flat = enc.ints.ravel().tolist()
    task = ray.remote(_encrypt_chunk)
    refs = [task.remote(pk, flat[i : i + ray_chunk]) for i in range(0, len(flat), ray_chunk)]
    cts = [c for part in ray.get(refs) for c in part]
    out = np.empty(len(cts), dtype=object)
    out[:] = cts
    return EncArray(pk, out.reshape(enc.ints.shape), enc.frac_bits, enc.pack, enc.weight)


def _encrypt_chunk(pk: HEPublicKey, ms: list[int]) -> list[Any]:
    return pk.encrypt_ints(ms, workers=1)
