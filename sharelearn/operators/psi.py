"""ECDH private set intersection over Curve25519 (X25519), leader/follower roles.

Protocol (Meadows 1986; Huberman-Franklin-Hogg 1999; as FATE's and SecretFlow's ECDH-PSI), for a
leader L and each follower F_k, with H the hash onto the curve and [s]P = X25519(s, P):

1. L picks a fresh secret a_k and a random permutation; F_k picks b_k and its own permutation.
2. F_k -> L: y = [b_k]H(F_k's ids), shuffled, in batches.      L computes d = [a_k]y.
3. L -> F_k: x = [a_k]H(L's ids), shuffled, in batches.        F_k returns xx = [b_k]x, same order.
4. L un-shuffles xx: its own ids blinded twice, [a_k b_k]H(id), comparable with d.
5. L intersects its rows over every follower, puts the common ids in the common order, and sends
   each follower that is a receiver the positions (in F_k's shuffled batch order) of the common
   ids. F_k maps positions back through its own permutation to its rows.

The common order is not fresh randomness: it sorts the common ids by a keyed PRF of H(id) (AES
CBC-MAC over the 32-byte point, key derived from the job's public `seed`), so the same seed and the
same ids give the same order in every run (bit-identical reruns). It reveals nothing more than a
random order did: it is a function of the intersection and the public seed alone, which every
receiver already knows, and it does not depend on either party's row order or file.

4 X25519 operations per id pair (2 per party), streamed in batches so memory stays O(n * 32 B).

What each role learns: L learns the intersection and |F_k's set|. A follower that is a receiver
learns which of its rows are common (in the common order) and |L's set|; one that is not learns
only |L's set|. Under the decisional Diffie-Hellman assumption in the random-oracle model the
blinded values are pseudorandom, so nobody learns anything about ids outside the intersection;
the shuffles (fresh per run) hide the other party's row order. Semi-honest security only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from sharelearn.core.codec import expect_array, expect_type
from sharelearn.core.errors import ConfigError, CryptoError, DecodeError
from sharelearn.core.executor import Executor
from sharelearn.core.link import Link
from sharelearn.core.types import I64Array, PartyId, U8Array
from sharelearn.crypto import kdf, prg, x25519

__all__ = ["PsiParams", "PsiResult", "common_order", "hash_ids", "psi_follower", "psi_leader"]

A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class PsiParams:
    """Parameters of the `psi` step.

    Attributes:
        batch_size: ids per message (65,536 ids = 2 MiB of points).
        receivers: parties that learn the intersection; empty = every party with data.
        seed: keys the common order of the intersection (the job's `seed:` unless the step sets
            one); the same seed and ids give the same order, hence the same models, every run.

    The curve operations run on the party's executor (its `compute:` block), not on a parameter.
    """

    batch_size: int = 65536
    receivers: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"psi.seed must be an integer, got {self.seed!r}")
        if not 1 <= self.batch_size <= 1 << 22:
            raise ConfigError(f"psi.batch_size must be in 1..4194304, got {self.batch_size}")


@dataclass(frozen=True, slots=True)
class _Run:
    """What every stage of one PSI run needs: its parameters and the party's executor."""

    params: PsiParams
    executor: Executor | None


@dataclass(frozen=True, slots=True)
class PsiResult:
    """Rows of this party's data that are in the intersection, in the common order."""

    rows: I64Array

    @property
    def size(self) -> int:
        return int(self.rows.shape[0])


def hash_ids(ids: Sequence[str] | np.ndarray) -> U8Array:
    """Hash string ids onto the curve; duplicate ids are an error (the reader resolves them)."""
    points = x25519.hash_to_point(str(i).encode() for i in ids)
    keys = points.view(np.uint64)[:, 0]
    if np.unique(keys).shape[0] != keys.shape[0]:
        raise CryptoError("duplicate ids reached PSI (or a 64-bit hash collision); deduplicate the ids first")
    return points


def _send_blinded(link: Link, peer: PartyId, tag: str, scalar: bytes, points: U8Array, run: _Run) -> None:
    link.send(peer, f"{tag}/count", int(points.shape[0]))
    for b, start in enumerate(range(0, points.shape[0], run.params.batch_size)):
        chunk = points[start : start + run.params.batch_size]
        link.send(peer, f"{tag}/{b}", x25519.scalarmult(scalar, chunk, executor=run.executor))


def _recv_count(link: Link, peer: PartyId, tag: str) -> int:
    n = int(expect_type(link.recv(peer, f"{tag}/count"), int, peer=peer, tag=f"{tag}/count"))
    if n < 0:
        raise DecodeError(
            f"message {tag}/count from {peer!r}: negative count {n}", peer=peer, tag=f"{tag}/count"
        )
    return n


def _recv_points(link: Link, peer: PartyId, tag: str, n: int, run: _Run) -> list[U8Array]:
    out: list[U8Array] = []
    for b, start in enumerate(range(0, n, run.params.batch_size)):
        want = min(run.params.batch_size, n - start)
        out.append(
            expect_array(
                link.recv(peer, f"{tag}/{b}"), peer=peer, tag=f"{tag}/{b}", dtype=np.uint8, shape=(want, 32)
            )
        )
    return out


def _reblind_stream(link: Link, peer: PartyId, scalar: bytes, run: _Run) -> None:
    """Blind each batch of the peer's points `x/b` again and return it as `xx/b`."""
    n = _recv_count(link, peer, "x")
    for b, start in enumerate(range(0, n, run.params.batch_size)):
        want = min(run.params.batch_size, n - start)
        batch = expect_array(
            link.recv(peer, f"x/{b}"), peer=peer, tag=f"x/{b}", dtype=np.uint8, shape=(want, 32)
        )
        link.send(peer, f"xx/{b}", x25519.scalarmult(scalar, batch, executor=run.executor))


def _secure_permutation(n: int) -> I64Array:
    """A uniformly random permutation keyed by the OS CSPRNG (argsort of random 64-bit keys)."""
    keys = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


def common_order(points: U8Array, seed: int) -> I64Array:
    """Return the permutation that sorts hashed ids by a PRF keyed with `seed`.

    The PRF is AES-128 CBC-MAC over each 32-byte point (two blocks, a fixed-length input, so CBC-MAC
    is a PRF); the key is HKDF-SHA256 of the seed. Points are H(id), so the order depends on the
    ids and the seed only, never on a party's row order.
    """
    key = kdf.hkdf_sha256(str(int(seed)).encode(), salt=None, info=b"sharelearn/psi/common-order", length=16)
    pts = np.ascontiguousarray(points, dtype=np.uint8).reshape(-1, 32)
    first = prg.aes_ecb(key, np.ascontiguousarray(pts[:, :16]))
    tag = prg.aes_ecb(key, np.ascontiguousarray(first ^ pts[:, 16:]))
    words = np.ascontiguousarray(tag).view(">u8").reshape(-1, 2)
    return np.lexsort((words[:, 1], words[:, 0])).astype(np.int64)


def _both(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Run two jobs concurrently (curve work releases the GIL); re-raise the first failure."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        fa, fb = pool.submit(first), pool.submit(second)
        return fa.result(), fb.result()


def _match(own: U8Array, other: U8Array) -> tuple[I64Array, I64Array]:
    """Return (own rows, other rows) whose doubly blinded points are equal."""
    own_keys = own.view(np.uint64)[:, 0]
    other_keys = other.view(np.uint64)[:, 0]
    _, i_own, i_other = np.intersect1d(own_keys, other_keys, assume_unique=True, return_indices=True)
    if np.unique(other_keys).shape[0] != other_keys.shape[0]:
        raise CryptoError("PSI: duplicate blinded points from the peer (duplicate ids or a 64-bit collision)")
    same = (own[i_own] == other[i_other]).all(axis=1)
    return i_own[same].astype(np.int64), i_other[same].astype(np.int64)


def _leader_pair(link: Link, peer: PartyId, points: U8Array, run: _Run) -> tuple[U8Array, U8Array]:
    """Run steps 1-4 with one follower: (own ids blinded twice in row order, follower's blinded twice)."""
    a = x25519.random_scalar()
    perm = _secure_permutation(points.shape[0])

    def theirs() -> U8Array:
        n = _recv_count(link, peer, "y")
        return np.concatenate(
            [x25519.scalarmult(a, y, executor=run.executor) for y in _recv_points(link, peer, "y", n, run)]
            or [np.empty((0, 32), np.uint8)]
        )

    def mine() -> U8Array:
        _send_blinded(link, peer, "x", a, points[perm], run)
        back = _recv_points(link, peer, "xx", points.shape[0], run)
        own = np.empty_like(points)
        own[perm] = np.concatenate(back or [np.empty((0, 32), np.uint8)])
        return own

    d_theirs, own = _both(theirs, mine)
    return own, d_theirs


def psi_leader(
    link: Link,
    ids: Sequence[str] | np.ndarray,
    *,
    followers: Sequence[PartyId],
    receivers: Sequence[PartyId],
    params: PsiParams = PsiParams(),
    executor: Executor | None = None,
) -> PsiResult:
    """Leader role: intersect with every follower; tell the receivers their common rows.

    The curve operations run on `executor` (None: the calling threads).
    """
    if not followers:
        raise ConfigError("psi needs at least two parties with data")
    points = hash_ids(ids)
    run = _Run(params, executor)
    with ThreadPoolExecutor(max_workers=len(followers)) as pool:
        pairs = list(pool.map(lambda f: _leader_pair(link, f, points, run), followers))
    common = np.ones(points.shape[0], dtype=bool)
    matches: list[tuple[I64Array, I64Array]] = []
    for own, theirs in pairs:
        mine, other = _match(own, theirs)
        matches.append((mine, other))
        hit = np.zeros_like(common)
        hit[mine] = True
        common &= hit
    common_rows = np.flatnonzero(common).astype(np.int64)
    rows = common_rows[common_order(points[common_rows], params.seed)]
    for f, (mine, other) in zip(followers, matches, strict=True):
        if f in receivers:
            position = np.full(points.shape[0], -1, dtype=np.int64)
            position[mine] = other
            link.send(f, "result", position[rows])
    return PsiResult(rows)


def psi_follower(
    link: Link,
    ids: Sequence[str] | np.ndarray,
    *,
    leader: PartyId,
    receiver: bool,
    params: PsiParams = PsiParams(),
    executor: Executor | None = None,
) -> PsiResult | None:
    """Follower role: blind own ids, re-blind the leader's; learn common rows if a receiver.

    The curve operations run on `executor` (None: the calling threads).
    """
    points = hash_ids(ids)
    b = x25519.random_scalar()
    perm = _secure_permutation(points.shape[0])
    run = _Run(params, executor)
    _both(
        lambda: _send_blinded(link, leader, "y", b, points[perm], run),
        lambda: _reblind_stream(link, leader, b, run),
    )
    if not receiver:
        return None
    pos = expect_array(link.recv(leader, "result"), peer=leader, tag="result", dtype=np.int64, shape=(None,))
    if pos.size and (pos.min() < 0 or pos.max() >= points.shape[0] or np.unique(pos).size != pos.size):
        raise DecodeError(
            f"message 'result' from {leader!r}: positions out of range or repeated", peer=leader, tag="result"
        )
    return PsiResult(perm[pos].astype(np.int64))
