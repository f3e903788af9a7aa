"""The `ss` engine: two-party additive sharing over Z_2^64 in fixed point (SecureML; ABY's A-shares).

Party 0 and party 1 each hold a uint64 share; a real x is encoded as round(x 2^f) (`FixedPoint`).
Every operation is called by both parties in the same order; message tags carry a per-engine
counter (`mul/17/open`), so the two sequences pair up.

Protocols (one round = both parties send, then both receive):

* `share` (owner -> other: a uniform mask r; the owner keeps x - r). 1 message, no reply.
* `reveal` (both send their share, or only the non-recipient does). 1 round.
* `mul` / `matmul` (Beaver 1991; SecureML §2.3, §4.2): open e = x - a and f = y - b in one
  round, then z_i = c_i + e b_i + a_i f (+ e f at party 0), then `truncate`.
* `truncate` (SecureML Theorem 1): local, no message. For |x| < 2^l it is exact up to one unit
  in the last place except with probability 2^(l + 1 - 64) per element (see `additive`).
* add, sub, add_public, mul_public: local.

Leaks: the opened e, f are uniform (a, b are); `reveal` opens its value by design. Nothing else
is sent. Nonlinear functions are in `ss_nonlinear` (polynomials over these operations) and
`gc_bridge` (garbled circuits); `SSOps` exposes them as methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sharelearn.core.codec import expect_array, expect_type
from sharelearn.core.errors import ConfigError, ProtocolError
from sharelearn.core.link import Link, LinkStats
from sharelearn.core.types import F64Array, PartyId, U64Array
from sharelearn.crypto import additive
from sharelearn.crypto.beaver import TripleSource, beaver_local_matmul, beaver_local_mul
from sharelearn.crypto.fixedpoint import FixedPoint
from sharelearn.crypto.rng import random_u64
from sharelearn.operators.ot import OTReceiver, OTSender, ot_receiver_setup, ot_sender_setup

__all__ = ["SSOps", "ring_matmul", "ring_matmul_sum"]

# Limbs (offset, width) of a 64-bit ring element for `ring_matmul`'s float64 path: products of two
# limbs have at most 43 bits, so a sum of 1024 of them (< 2^53) is exact in float64 BLAS.
_LIMBS = ((0, 21), (21, 21), (42, 22))
_K_BLOCK = 1024
_NATIVE_BELOW = 1 << 22  # m * k * n under which numpy's integer matmul is faster (as for thin products)
_BLAS_MIN_SIDE = 32
# int8 path: 8 signed digits per element; a digit product is at most 2^14 in magnitude and one
# output sums at most 8 k of them, so int32 accumulation is exact for k <= 2^13 per block (2^30).
_INT8_K_BLOCK = 1 << 13
_BYTE_BIAS = np.uint64(0x8080808080808080)


def _torch_int_mm() -> Any:
    """torch._int_mm (int8 x int8 -> int32 GEMM) when torch is installed, else None."""
    try:
        import torch
    except ImportError:
        return None
    return getattr(torch, "_int_mm", None)


def _int8_operands(
    a_parts: Sequence[U64Array], b_parts: Sequence[U64Array]
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]:
    """The int8 GEMM operands of sum_i A_i @ B_i over the stacked inner dimension K = sum k_i.

    LHS (m, 8K) holds A's digit planes in order, [d0 | d1 | ... | d7]; RHS (8K, n) B's in reverse,
    [d7; d6; ...; d0]. The GEMM of weight 2^(8s) pairs A's digits 0..s with B's digits s..0, so it
    reads LHS[:, :(s+1)K] (a strided view) and RHS[(7-s)K:] (a contiguous one): every digit
    product comes from the same two buffers, written once. Balanced digits d_i in [-128, 127] with
    x = sum d_i 2^(8i) mod 2^64: adding 128 to every byte (the constant 0x8080...80, with carries)
    and subtracting it again digit-wise, i.e. flipping each byte's top bit, in place on each buffer.
    """
    m, n = a_parts[0].shape[0], b_parts[0].shape[1]
    width = sum(p.shape[1] for p in a_parts)
    lhs = np.empty((m, 8, width), dtype=np.int8)
    rhs = np.empty((8, width, n), dtype=np.int8)
    col = 0
    for a, b in zip(a_parts, b_parts, strict=True):
        k = a.shape[1]
        biased = np.ascontiguousarray(a + _BYTE_BIAS).astype("<u8", copy=False)
        lhs[:, :, col : col + k] = biased.view(np.int8).reshape(m, k, 8).transpose(0, 2, 1)
        biased = np.ascontiguousarray(b + _BYTE_BIAS).astype("<u8", copy=False)
        rhs[:, col : col + k] = biased.view(np.int8).reshape(k, n, 8).transpose(2, 0, 1)[::-1]
        col += k
    lhs.view(np.uint8)[...] ^= np.uint8(0x80)
    rhs.view(np.uint8)[...] ^= np.uint8(0x80)
    return lhs.reshape(m, 8 * width), rhs.reshape(8 * width, n)


def _ring_matmul_int8(a_parts: Sequence[U64Array], b_parts: Sequence[U64Array], int_mm: Any) -> U64Array:
    """sum_i A_i @ B_i mod 2^64 through 8 int8 GEMMs per inner block of at most 2^13."""
    import torch

    m, n = a_parts[0].shape[0], b_parts[0].shape[1]
    width = sum(p.shape[1] for p in a_parts)
    if width > _INT8_K_BLOCK:  # cut the stacked inner dimension into exact blocks
        a_all, b_all = np.hstack(list(a_parts)), np.vstack(list(b_parts))
        total = np.zeros((m, n), dtype=np.uint64)
        for start in range(0, width, _INT8_K_BLOCK):
            stop = start + _INT8_K_BLOCK
            total += _ring_matmul_int8([a_all[:, start:stop]], [b_all[start:stop]], int_mm)
        return total
    lhs_np, rhs_np = _int8_operands(a_parts, b_parts)
    lhs, rhs = torch.from_numpy(lhs_np), torch.from_numpy(rhs_np)
    # Horner from the top weight down: acc = (((P7 << 8) + P6) << 8 ...) + P0, wrapping mod 2^64
    # (numpy's int64 arithmetic wraps); the int32 digit-product sums are exact (see _INT8_K_BLOCK).
    acc = int_mm(lhs, rhs).numpy().astype(np.int64)
    for s in range(6, -1, -1):
        acc <<= np.int64(8)
        acc += int_mm(lhs[:, : (s + 1) * width], rhs[(7 - s) * width :]).numpy()
    out: U64Array = acc.view(np.uint64)
    return out


def _ring_matmul_f64(a: U64Array, b: U64Array) -> U64Array:
    m, k = a.shape
    n = b.shape[1]
    out = np.zeros((m, n), dtype=np.uint64)
    for start in range(0, k, _K_BLOCK):
        a_blk, b_blk = a[:, start : start + _K_BLOCK], b[start : start + _K_BLOCK]
        a_limbs = [((a_blk >> np.uint64(o)) & np.uint64((1 << w) - 1)).astype(np.float64) for o, w in _LIMBS]
        b_limbs = [((b_blk >> np.uint64(o)) & np.uint64((1 << w) - 1)).astype(np.float64) for o, w in _LIMBS]
        for i, (oi, _) in enumerate(_LIMBS):
            for j, (oj, _) in enumerate(_LIMBS):
                if oi + oj < 64:
                    part = np.matmul(a_limbs[i], b_limbs[j]).astype(np.uint64)
                    out += part << np.uint64(oi + oj)
    return out


def ring_matmul(a: U64Array, b: U64Array, *, backend: str = "auto") -> U64Array:
    """A @ B mod 2^64 for uint64 matrices, exactly, through int8 or float64 GEMMs.

    numpy's integer matmul does not use BLAS (a 1000^3 product takes seconds). Two exact routes:

    * int8 (`backend="int8"`, the default when torch is installed): each element as 8 balanced
      base-256 digits; the 36 digit products of weight below 2^64 are int8
      GEMMs with int32 accumulation (`torch._int_mm`, VNNI/AMX kernels), grouped by weight into
      8 GEMMs over two digit buffers written once (`_int8_operands`), exact while the inner
      dimension is cut into blocks of 2^13, and combined by Horner's rule in wrapping int64.
    * float64 (`backend="f64"`): limbs of 21, 21 and 22 bits; the eight limb products whose
      offset is below 64 are float64 GEMMs whose sums stay below 2^53 (blocks of 1024), hence
      exact; converted back and shifted into place with uint64 wrap-around.

    Small or thin products use numpy's integer matmul directly.
    """
    return ring_matmul_sum([a], [b], backend=backend)


def ring_matmul_sum(
    a_parts: Sequence[U64Array], b_parts: Sequence[U64Array], *, backend: str = "auto"
) -> U64Array:
    """sum_i A_i @ B_i mod 2^64 (= [A_1 | A_2 ...] @ [B_1; B_2 ...]) without stacking the operands.

    The int8 route writes every part's digits straight into its GEMM buffers; see `ring_matmul`.
    """
    if not a_parts or len(a_parts) != len(b_parts):
        raise ConfigError(
            f"ring_matmul_sum needs as many left as right parts, got {len(a_parts)}, {len(b_parts)}"
        )
    m, n = a_parts[0].shape[0], b_parts[0].shape[1]
    for a, b in zip(a_parts, b_parts, strict=True):
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != m or b.shape[1] != n or a.shape[1] != b.shape[0]:
            raise ConfigError(f"ring_matmul parts must be (m, k_i) @ (k_i, n), got {a.shape} @ {b.shape}")
    k = sum(a.shape[1] for a in a_parts)
    if backend not in ("auto", "int8", "f64"):
        raise ConfigError(f"ring_matmul backend must be auto, int8 or f64, got {backend!r}")
    if backend == "auto" and (m * k * n < _NATIVE_BELOW or min(m, n) < _BLAS_MIN_SIDE):
        small: U64Array = sum(
            (np.matmul(a, b) for a, b in zip(a_parts[1:], b_parts[1:], strict=True)),
            np.matmul(a_parts[0], b_parts[0]),
        )
        return small
    int_mm = _torch_int_mm() if backend != "f64" else None
    if int_mm is not None:
        return _ring_matmul_int8(a_parts, b_parts, int_mm)
    if backend == "int8":
        raise ConfigError("ring_matmul backend 'int8' needs torch (the `ml` extra)")
    if len(a_parts) == 1:
        return _ring_matmul_f64(a_parts[0], b_parts[0])
    return _ring_matmul_f64(np.hstack(list(a_parts)), np.vstack(list(b_parts)))


class SSOps:
    """One party's end of the two-party `ss` engine.

    Args:
        link: the party's link.
        peer: the other computing party.
        index: 0 or 1 (party 0 adds public constants and garbles; party 1 evaluates).
        triples: this party's triple source (dealer or HE; see `operators.triples`).
        fixed: the fixed-point encoding (both parties must use the same).
        cmp_bits: share bits the garbled sign circuit reads: 64 is exact on the whole ring, l + 1
            is exact for values of magnitude below 2^l ring units and costs l/63 as much.
    """

    def __init__(
        self,
        link: Link,
        *,
        peer: PartyId,
        index: int,
        triples: TripleSource,
        fixed: FixedPoint | None = None,
        cmp_bits: int = 64,
    ) -> None:
        if index not in (0, 1):
            raise ConfigError(f"the ss engine has parties 0 and 1, got index {index}")
        self.link, self.peer, self.index, self.triples = link, peer, index, triples
        self.fixed = fixed or FixedPoint()
        if not 2 <= cmp_bits <= 64:
            raise ConfigError(f"cmp_bits must be in 2..64, got {cmp_bits}")
        self.cmp_bits = cmp_bits
        self._counter = 0
        self._ot: OTSender | OTReceiver | None = None

    def __repr__(self) -> str:
        return f"SSOps(index={self.index}, peer={self.peer!r}, frac_bits={self.fixed.frac_bits})"

    @property
    def stats(self) -> LinkStats:
        return self.link.stats

    def tag(self, name: str) -> str:
        """A fresh tag for the next operation (both parties count in lock-step)."""
        self._counter += 1
        return f"{name}/{self._counter}"

    def ot_session(self) -> OTSender | OTReceiver:
        """The base OTs, set up on first use: party 0 (the garbler) is the OT sender."""
        if self._ot is None:
            scoped = self.link.scope("ss_ot")
            self._ot = (
                ot_sender_setup(scoped, peer=self.peer)
                if self.index == 0
                else ot_receiver_setup(scoped, peer=self.peer)
            )
        return self._ot

    # -- input and output ---------------------------------------------------------------------
    def share_ring(self, x: U64Array | None, *, owner: int, shape: tuple[int, ...]) -> U64Array:
        """Share ring elements held by party `owner`."""
        tag = self.tag("share")
        if self.index == owner:
            if x is None or x.dtype != np.uint64 or x.shape != tuple(shape):
                raise ConfigError(f"party {owner} must input a uint64 array of shape {shape}")
            r = random_u64(x.shape)
            self.link.send(self.peer, tag, r)
            out: U64Array = x - r
            return out
        return expect_array(
            self.link.recv(self.peer, tag), peer=self.peer, tag=tag, dtype=np.uint64, shape=tuple(shape)
        )

    def share(self, x: F64Array | None, *, owner: int, shape: tuple[int, ...]) -> U64Array:
        """Share reals held by party `owner` (the other party passes None)."""
        enc = self.fixed.encode(x) if self.index == owner and x is not None else None
        return self.share_ring(enc, owner=owner, shape=tuple(shape))

    def open_ring(self, *xs: U64Array) -> list[U64Array]:
        """Open shares to both parties in one round."""
        tag = self.tag("open")
        self.link.send(self.peer, tag, list(xs))
        got = expect_type(self.link.recv(self.peer, tag), list, peer=self.peer, tag=tag)
        if len(got) != len(xs):
            raise ProtocolError(f"{self.peer}: {tag!r} holds {len(got)} arrays, expected {len(xs)}")
        return [
            x + expect_array(g, peer=self.peer, tag=tag, dtype=np.uint64, shape=x.shape)
            for x, g in zip(xs, got, strict=True)
        ]

    def reveal_ring(self, x: U64Array, *, to: int | None = None) -> U64Array | None:
        """Open ring elements to party `to` (None: both)."""
        if to is None:
            return self.open_ring(x)[0]
        tag = self.tag("reveal")
        if self.index != to:
            self.link.send(self.peer, tag, x)
            return None
        out: U64Array = x + expect_array(
            self.link.recv(self.peer, tag), peer=self.peer, tag=tag, dtype=np.uint64, shape=x.shape
        )
        return out

    def reveal(self, x: U64Array, *, to: int | None = None) -> F64Array | None:
        """Open reals to party `to` (None: both)."""
        ring = self.reveal_ring(x, to=to)
        return None if ring is None else self.fixed.decode(ring)

    # -- linear, local ------------------------------------------------------------------------
    def add(self, x: U64Array, y: U64Array) -> U64Array:
        return additive.add(x, y)

    def sub(self, x: U64Array, y: U64Array) -> U64Array:
        return additive.sub(x, y)

    def neg(self, x: U64Array) -> U64Array:
        return additive.neg(x)

    def add_public(self, x: U64Array, c: float | F64Array) -> U64Array:
        return additive.add_public(self.index, x, self.fixed.encode(c))

    def add_public_ring(self, x: U64Array, c: U64Array) -> U64Array:
        return additive.add_public(self.index, x, c)

    def mul_public(self, x: U64Array, c: float | F64Array) -> U64Array:
        """x * c for a public real c, truncated.

        A small |c| (a learning rate over a batch size) is encoded with extra fractional bits, so it
        keeps at least 16 significant bits, and the product is truncated by as many more.
        """
        mags = np.abs(np.asarray(c, dtype=np.float64))
        top = float(mags.max(initial=0.0))
        extra = 0 if top == 0.0 else int(min(24, max(0, 16 - self.fixed.frac_bits - np.floor(np.log2(top)))))
        scaled = FixedPoint(min(31, self.fixed.frac_bits + extra)) if extra else self.fixed
        return self.truncate(additive.scale(x, scaled.encode(c)), scaled.frac_bits)

    def truncate(self, x: U64Array, bits: int | None = None) -> U64Array:
        return additive.truncate_share(self.index, x, self.fixed.frac_bits if bits is None else bits)

    # -- Beaver -------------------------------------------------------------------------------
    def mul_ring(self, x: U64Array, y: U64Array) -> U64Array:
        """x * y in the ring (no truncation): integer products, or bit times fixed point."""
        x, y = np.broadcast_arrays(x, y)
        triple = self.triples.triple(tuple(x.shape))
        e, f = self.open_ring(x - triple.a, y - triple.b)
        return beaver_local_mul(self.index, e, f, triple)

    def mul(self, x: U64Array, y: U64Array) -> U64Array:
        """Fixed-point x * y."""
        return self.truncate(self.mul_ring(x, y))

    def matmul_ring(self, x: U64Array, y: U64Array) -> U64Array:
        """X @ Y in the ring for 2-d X (m, k), Y (k, n)."""
        if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[0]:
            raise ConfigError(f"matmul needs (m, k) @ (k, n), got {x.shape} @ {y.shape}")
        triple = self.triples.matrix_triple(x.shape[0], x.shape[1], y.shape[1])
        e, f = self.open_ring(x - triple.a, y - triple.b)
        if x.size * y.shape[1] < _NATIVE_BELOW or min(x.shape[0], y.shape[1]) < _BLAS_MIN_SIDE:
            return beaver_local_matmul(self.index, e, f, triple)
        # Z = C + E @ B + A @ F (+ E @ F at party 0) = C + [E | A] @ [B (+ F); F]: one product
        top = triple.b + f if self.index == 0 else triple.b
        z: U64Array = triple.c + ring_matmul_sum([e, triple.a], [top, f])
        return z

    def matmul(self, x: U64Array, y: U64Array) -> U64Array:
        """Fixed-point X @ Y."""
        return self.truncate(self.matmul_ring(x, y))

    # -- nonlinear (ss_nonlinear, gc_bridge) -------------------------------------------------------
    def sigmoid(self, x: U64Array, method: str = "minimax") -> U64Array:
        from sharelearn.operators import ss_nonlinear

        return ss_nonlinear.sigmoid(self, x, method)

    def exp(self, x: U64Array) -> U64Array:
        from sharelearn.operators import ss_nonlinear

        return ss_nonlinear.exp(self, x)

    def reciprocal(self, x: U64Array) -> U64Array:
        from sharelearn.operators import ss_nonlinear

        return ss_nonlinear.reciprocal(self, x)

    def lt(self, x: U64Array, y: U64Array) -> U64Array:
        """Integer share of [x < y] (garbled sign of x - y; needs |x - y| < 2^63 in the ring)."""
        from sharelearn.operators import gc_bridge

        return gc_bridge.lt(self, x, y)

    def drelu(self, x: U64Array) -> U64Array:
        """Integer share of [x >= 0]."""
        from sharelearn.operators import gc_bridge

        return gc_bridge.drelu(self, x)

    def relu(self, x: U64Array) -> U64Array:
        from sharelearn.operators import gc_bridge

        return gc_bridge.relu(self, x)

    def argmax(self, x: U64Array) -> U64Array:
        """Integer share of the index of the maximum along the last axis (first on ties)."""
        from sharelearn.operators import gc_bridge

        return gc_bridge.argmax(self, x)

    def reveal_int(self, x: U64Array, *, to: int | None = None) -> F64Array | None:
        """Open integer shares (comparison bits, indices) as float64."""
        ring = self.reveal_ring(x, to=to)
        return None if ring is None else ring.view(np.int64).astype(np.float64)
