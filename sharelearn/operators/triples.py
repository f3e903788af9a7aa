"""Beaver triple sources as protocols: a trusted dealer role, or HE-generated triples with no dealer.

Both sources hand party 0 and party 1 correlated shares of elementwise triples c = a * b and matrix
triples C = A @ B over Z_2^64, in the order the parties ask for them (`SSOps` asks in lock-step).
`prefetch(specs)` generates a whole list at once, so a training epoch costs one exchange.

**Dealer** (`run_dealer` + `DealerTripleSource`; CrypTen's TTP / SPU's Beaver-TTP layout):

1. dealer -> party i: a 32-byte seed s_i (once).
2. Party i expands a_i, b_i from s_i (AES-CTR streams 3t, 3t+1 for triple t); party 0 also c_0
   (stream 3t+2). Party 0 never talks to the dealer again.
3. party 1 -> dealer: the list of triple shapes; dealer -> party 1: c_1 = (a_0 + a_1) (*|@)
   (b_0 + b_1) - c_0 for each.

Leaks: the dealer learns every triple (it must not collude with a party) and the shapes of the
computation; party 1 receives c_1, uniform because c_0 is.

**HE, dealer-free** (SecureML §4.2, with Paillier or Okamoto–Uchiyama from `crypto.he`): each
party i draws its own a_i, b_i. The cross terms a_i (*|@) b_j are computed under party j's key:

1. setup: each party sends its public key.
2. party i -> j: Enc_i(b_i) (signed 64-bit integers).
3. party j -> i: Enc_i(a_j (*|@) b_i - r_j), re-randomised, with r_j uniform in [0, 2^192).
4. party i decrypts, reduces mod 2^64: c_i = a_i b_i + (a_j b_i - r_j) + r_i.

Leaks: party j sees only ciphertexts under i's key; party i sees a_j b_i - r_j, within statistical
distance k * 2^-65 of uniform (|a_j b_i| < k 2^126 for inner dimension k).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sharelearn.core.codec import expect_array, expect_type
from sharelearn.core.errors import ConfigError, CryptoError, ProtocolError
from sharelearn.core.executor import Executor
from sharelearn.core.link import Link
from sharelearn.core.types import PartyId, U64Array, Wire
from sharelearn.crypto import he, prg
from sharelearn.crypto.beaver import MatrixTriple, Triple
from sharelearn.crypto.rng import Rng, random_bytes, random_u64
from sharelearn.operators.ss_arith import ring_matmul

__all__ = [
    "MASK_BITS",
    "MAX_TRIPLE_ELEMENTS",
    "DealerTripleSource",
    "HETripleSource",
    "TripleSpec",
    "he_triple_setup",
    "matmul_spec",
    "mul_spec",
    "run_dealer",
    "spec_from_wire",
]

SEED_BYTES = 32
MAX_TRIPLE_ELEMENTS = 1 << 27  # 1 GiB of uint64 per operand, the codec's array limit
MASK_BITS = 192  # >= 128 + log2(k) + 40: statistical hiding of the cross terms for k < 2^23
_MOD = 1 << 64


@dataclass(frozen=True, slots=True)
class TripleSpec:
    """What to generate: kind "mul" with the elementwise shape, or "matmul" with (m, k, n)."""

    kind: str
    dims: tuple[int, ...]

    def to_wire(self) -> list[Any]:
        return [self.kind, list(self.dims)]

    @property
    def a_shape(self) -> tuple[int, ...]:
        return self.dims if self.kind == "mul" else (self.dims[0], self.dims[1])

    @property
    def b_shape(self) -> tuple[int, ...]:
        return self.dims if self.kind == "mul" else (self.dims[1], self.dims[2])

    @property
    def c_shape(self) -> tuple[int, ...]:
        return self.dims if self.kind == "mul" else (self.dims[0], self.dims[2])


def mul_spec(shape: tuple[int, ...]) -> TripleSpec:
    """The spec of an elementwise triple."""
    return TripleSpec("mul", tuple(int(d) for d in shape))


def matmul_spec(m: int, k: int, n: int) -> TripleSpec:
    """The spec of an (m, k) x (k, n) matrix triple."""
    if min(m, k, n) < 1:
        raise CryptoError(f"matrix triple dimensions must be positive, got m={m}, k={k}, n={n}")
    return TripleSpec("matmul", (int(m), int(k), int(n)))


def spec_from_wire(value: Any, *, peer: str, tag: str) -> TripleSpec:
    """Decode and validate a spec received from `peer`."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or value[0] not in ("mul", "matmul")
        or not isinstance(value[1], list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 31 for d in value[1])
        or (value[0] == "matmul" and len(value[1]) != 3)
    ):
        raise ProtocolError(f"{peer}: malformed triple request {tag!r}", peer=peer, tag=tag)
    spec = TripleSpec(value[0], tuple(value[1]))
    dims = spec.dims
    sizes = (
        [math.prod(dims)] if spec.kind == "mul" else [dims[0] * dims[1], dims[1] * dims[2], dims[0] * dims[2]]
    )
    if max(sizes) > MAX_TRIPLE_ELEMENTS:
        raise ProtocolError(f"{peer}: triple request {tag!r} for {dims} is oversized", peer=peer, tag=tag)
    return spec


def _product(spec: TripleSpec, a: U64Array, b: U64Array) -> U64Array:
    out: U64Array = a * b if spec.kind == "mul" else ring_matmul(a, b)
    return out


def _make(spec: TripleSpec, a: U64Array, b: U64Array, c: U64Array) -> Triple | MatrixTriple:
    return Triple(a, b, c) if spec.kind == "mul" else MatrixTriple(a, b, c)


class _Queue:
    """Prefetched triples, consumed in order; a request that does not match the queue is an error."""

    def __init__(self) -> None:
        self.items: deque[tuple[TripleSpec, Triple | MatrixTriple]] = deque()

    def pop(self, spec: TripleSpec) -> Triple | MatrixTriple | None:
        if not self.items:
            return None
        want, triple = self.items.popleft()
        if want != spec:
            raise CryptoError(f"prefetched triple {want} does not match the requested {spec}")
        return triple


class _Prefetching:
    """What both triple sources share: a queue of prefetched triples that `_generate` fills."""

    _queue: _Queue

    def _generate(self, specs: list[TripleSpec]) -> list[Triple | MatrixTriple]:
        raise NotImplementedError

    def prefetch(self, specs: Sequence[TripleSpec]) -> None:
        """Generate triples for `specs` now, in one exchange (the dealer's: one request to it)."""
        for spec, triple in zip(specs, self._generate(list(specs)), strict=True):
            self._queue.items.append((spec, triple))

    def _one(self, spec: TripleSpec) -> Triple | MatrixTriple:
        return self._queue.pop(spec) or self._generate([spec])[0]

    def triple(self, shape: tuple[int, ...]) -> Triple:
        out = self._one(mul_spec(shape))
        assert isinstance(out, Triple)  # internal invariant: mul specs make Triples
        return out

    def matrix_triple(self, m: int, k: int, n: int) -> MatrixTriple:
        out = self._one(matmul_spec(m, k, n))
        assert isinstance(out, MatrixTriple)
        return out


# ---------------------------------------------------------------------------- trusted dealer


def _dealer_parts(seed: bytes, spec: TripleSpec, t: int) -> tuple[U64Array, U64Array]:
    return prg.expand_u64(seed, spec.a_shape, stream=3 * t), prg.expand_u64(
        seed, spec.b_shape, stream=3 * t + 1
    )


def run_dealer(link: Link, *, party0: PartyId, party1: PartyId, rng: Rng | None = None) -> int:
    """Play the trusted dealer until party 1 says stop; return the number of triples dealt."""
    seeds = [random_bytes(SEED_BYTES, rng), random_bytes(SEED_BYTES, rng)]
    link.send(party0, "dealer/seed", seeds[0])
    link.send(party1, "dealer/seed", seeds[1])
    t, request = 0, 0
    while True:
        tag = f"dealer/req/{request}"
        msg = expect_type(link.recv(party1, tag), list, peer=party1, tag=tag)
        if not msg:
            return t
        out: list[Wire] = []
        for raw in msg:
            spec = spec_from_wire(raw, peer=party1, tag=tag)
            a0, b0 = _dealer_parts(seeds[0], spec, t)
            a1, b1 = _dealer_parts(seeds[1], spec, t)
            c0 = prg.expand_u64(seeds[0], spec.c_shape, stream=3 * t + 2)
            out.append(_product(spec, a0 + a1, b0 + b1) - c0)
            t += 1
        link.send(party1, f"dealer/resp/{request}", out)
        request += 1


class DealerTripleSource(_Prefetching):
    """A party's end of the dealer protocol (party 0 computes locally, party 1 asks the dealer)."""

    def __init__(self, link: Link, *, dealer: PartyId, index: int) -> None:
        if index not in (0, 1):
            raise ConfigError(f"dealer triples are for parties 0 and 1, got index {index}")
        seed = expect_type(link.recv(dealer, "dealer/seed"), bytes, peer=dealer, tag="dealer/seed")
        if len(seed) != SEED_BYTES:
            raise ProtocolError(
                f"{dealer}: dealer seed must be {SEED_BYTES} bytes", peer=dealer, tag="dealer/seed"
            )
        self._link, self._dealer, self._index, self._seed = link, dealer, index, seed
        self._t, self._request, self._queue, self._closed = 0, 0, _Queue(), False

    def _generate(self, specs: list[TripleSpec]) -> list[Triple | MatrixTriple]:
        if not specs:
            return []
        first, self._t = self._t, self._t + len(specs)
        parts = [_dealer_parts(self._seed, s, first + i) for i, s in enumerate(specs)]
        if self._index == 0:
            cs = [
                prg.expand_u64(self._seed, s.c_shape, stream=3 * (first + i) + 2) for i, s in enumerate(specs)
            ]
        else:
            cs = self._ask(specs)
        return [_make(s, a, b, c) for s, (a, b), c in zip(specs, parts, cs, strict=True)]

    def _ask(self, specs: list[TripleSpec]) -> list[U64Array]:
        req = self._request
        self._request += 1
        self._link.send(self._dealer, f"dealer/req/{req}", [s.to_wire() for s in specs])
        tag = f"dealer/resp/{req}"
        got = expect_type(self._link.recv(self._dealer, tag), list, peer=self._dealer, tag=tag)
        if len(got) != len(specs):
            raise ProtocolError(f"{self._dealer}: {tag!r} has {len(got)} triples, asked for {len(specs)}")
        out = []
        for s, c in zip(specs, got, strict=True):
            shape = s.c_shape
            out.append(expect_array(c, peer=self._dealer, tag=tag, dtype=np.uint64, shape=shape))
        return out

    def close(self) -> None:
        """Party 1 tells the dealer to stop (party 0 has nothing to say)."""
        if self._index == 1 and not self._closed:
            self._link.send(self._dealer, f"dealer/req/{self._request}", [])
        self._closed = True


# ---------------------------------------------------------------------------- HE, dealer-free


def he_triple_setup(
    link: Link,
    *,
    peer: PartyId,
    index: int,
    scheme: str = "ou",
    key_bits: int = he.DEFAULT_KEY_BITS,
    executor: Executor | None = None,
) -> HETripleSource:
    """Generate this party's key pair, exchange public keys, and return the triple source.

    The source's HE batches run on `executor` (None: the calling thread).
    """
    pk, sk = he.keygen(scheme, key_bits)
    if pk.max_int < 1 << (MASK_BITS + 2):
        raise ConfigError(f"he key of {key_bits} bits leaves too little plaintext room for triple masks")
    link.send(peer, "he_triples/pk", pk.to_wire())
    peer_pk = he.public_key_from_wire(link.recv(peer, "he_triples/pk"))
    if peer_pk.max_int < 1 << (MASK_BITS + 2):
        raise ProtocolError(
            f"{peer}: its HE key is too small for triple masks", peer=peer, tag="he_triples/pk"
        )
    return HETripleSource(link, peer=peer, index=index, sk=sk, peer_pk=peer_pk, executor=executor)


def _signed(x: U64Array) -> Any:
    return x.view(np.int64).astype(object)


def _cross(spec: TripleSpec, a: U64Array, enc_b: he.EncArray, executor: Executor | None) -> he.EncArray:
    """Enc(a (*|@) b) for plaintext a, with a read as unsigned: the product only matters mod 2^64.

    Unsigned exponents need no modular inversions; for thin products (n <= 4) one exponentiation
    per element and a product per row beats a multi-exponentiation per row (measured 2x).
    """
    if spec.kind == "mul":
        return enc_b.mul(a.astype(object), frac_bits=0, executor=executor)
    m, k, n = spec.dims
    if n <= 4:
        thin = enc_b.reshape(1, k, n).mul(a.astype(object).reshape(m, k, 1), frac_bits=0, executor=executor)
        return thin.sum(axis=1)
    return he.matmul_plain(a.astype(object), enc_b, frac_bits=0)


class HETripleSource(_Prefetching):
    """Dealer-free triples: cross terms under each other's additively homomorphic key."""

    def __init__(
        self,
        link: Link,
        *,
        peer: PartyId,
        index: int,
        sk: he.HEPrivateKey,
        peer_pk: he.HEPublicKey,
        executor: Executor | None = None,
    ) -> None:
        self._link, self._peer, self._index = link, peer, index
        self._sk, self._peer_pk, self._executor = sk, peer_pk, executor
        self._request, self._queue = 0, _Queue()

    def _generate(self, specs: list[TripleSpec]) -> list[Triple | MatrixTriple]:
        if not specs:
            return []
        tag = f"he_triples/{self._request}"
        self._request += 1
        a = [random_u64(s.a_shape) for s in specs]
        b = [random_u64(s.b_shape) for s in specs]
        flat_b = np.concatenate([x.reshape(-1) for x in b])
        mine = he.encrypt(self._sk.public, _signed(flat_b), frac_bits=0, executor=self._executor)
        self._link.send(self._peer, f"{tag}/enc_b", mine.to_wire())
        theirs = he.EncArray.from_wire(self._link.recv(self._peer, f"{tag}/enc_b"), self._peer_pk)
        if theirs.shape != (flat_b.size,):
            raise ProtocolError(
                f"{self._peer}: {tag}/enc_b has shape {theirs.shape}", peer=self._peer, tag=tag
            )
        cross, masks = self._cross_terms(specs, a, theirs)
        self._link.send(self._peer, f"{tag}/cross", cross.to_wire())
        back = he.EncArray.from_wire(self._link.recv(self._peer, f"{tag}/cross"), self._sk.public)
        plain = he.decrypt(self._sk, back, executor=self._executor)
        ring = np.array([int(v) % _MOD for v in plain.reshape(-1).tolist()], dtype=np.uint64)
        out, off = [], 0
        for s, ai, bi, r in zip(specs, a, b, masks, strict=True):
            c = _product(s, ai, bi)
            c = c + ring[off : off + c.size].reshape(c.shape) + r
            off += c.size
            out.append(_make(s, ai, bi, c))
        if off != ring.size:
            raise ProtocolError(f"{self._peer}: {tag}/cross has {ring.size} values, expected {off}")
        return out

    def _cross_terms(
        self, specs: list[TripleSpec], a: list[U64Array], enc_b: he.EncArray
    ) -> tuple[he.EncArray, list[U64Array]]:
        """Enc_peer(a_i (*|@) b_peer - r) for every spec; returns the ciphertexts and r mod 2^64."""
        parts, masks, off = [], [], 0
        for s, ai in zip(specs, a, strict=True):
            size = int(np.prod(s.b_shape))
            eb = enc_b[off : off + size].reshape(*s.b_shape)
            off += size
            prod = _cross(s, ai, eb, self._executor)
            limbs = random_u64((3, *prod.shape))
            r = limbs[0].astype(object) + (limbs[1].astype(object) << 64) + (limbs[2].astype(object) << 128)
            parts.append((prod - r).reshape(-1))
            masks.append(limbs[0])  # r mod 2^64
        return he.concatenate(parts).rerandomize(executor=self._executor), masks

    def close(self) -> None:
        """Nothing to release."""
