"""Secure aggregation with dropout recovery (Bonawitz et al. 2017, CCS; SecAgg+ of Bell et al. 2020).

The server learns the sum over Z_2^k of the surviving clients' vectors and nothing else; clients
never talk to each other directly: every message goes through the server (star topology), and what
one client sends another (its Shamir shares) is sealed with ChaCha20-Poly1305 under a key only the
two clients share, so the server relays bytes it cannot read.

One round, for clients u with index i(u) (Shamir x-coordinate i(u) + 1):

0. Setup: the server sends each client the round's `SecAggConfig` (n, threshold t, vector length,
   k, neighbour count, a public graph seed) and its index.
1. AdvertiseKeys: u makes two X25519 key pairs (c for encryption, s for masks) and sends both
   public keys. The server forwards to u the keys of its neighbours among the responders U1.
2. ShareKeys: u draws a self-mask seed b_u, Shamir-shares s_sk_u and b_u (threshold t) among its
   neighbours and itself, and sends each neighbour's pair of shares AEAD-sealed under
   KDF(DH(c_sk_u, c_pk_v)). The server forwards each sealed share to its addressee; U2 = senders.
3. MaskedInput: u sends y_u = x_u + PRG(b_u) + sum_{v in U2 neighbours} +-PRG(KDF(DH(s_sk_u, s_pk_v)))
   mod 2^k (+ when i(u) < i(v), - otherwise), so pairwise masks cancel in the sum. U3 = senders.
4. Unmasking: the server sends U3; each u in U3 opens its sealed shares and returns, for every
   neighbour v, the share of b_v if v is in U3, else (v dropped after sharing) the share of s_sk_v;
   never both for the same v. From t shares the server rebuilds the self masks of U3 and the
   pairwise masks that dropped clients left in the survivors' inputs, and removes them.

Full graph (Bonawitz et al.) when `neighbours` is 0; otherwise SecAgg+: each client masks with and
shares to only `neighbours` others on a random circulant graph drawn from the public graph seed, so
a client's work grows with log n instead of n. Any stage with fewer than t responders (or a
neighbourhood with fewer than t share holders left) fails the round with `SecAggError`.

Cost (what `sharelearn bench fedavg` measures; ~1.5 ms of CPU per client and round for a
100k-element vector with 16 neighbours): per neighbour one X25519 agreement for each key pair, all
2 x 16 in one multi-buffer batch (`x25519.scalarmult_each`, a scalar per lane), and one PRG mask;
the masks are AES-CTR keystreams added into the vector in one cache-blocked pass
(`maskadd.MaskAdder`: numba + ipp-crypto's VAES, else one keystream at a time); the public keys by
libsodium's fixed-base multiplication; one SHA-256 KDF call per derived key; Shamir shares over
F_(2^31 - 1) evaluated only at the holders (`shamir.split_at`) and rebuilt at the server for every
client in one batch (`shamir.recover_many`); inputs in Z_2^k with k <= 32 travel and are summed as
uint32 words, half the bytes of uint64.

Leaks: the server learns the sum over U3, the sets U1..U4 and the vector length. Each masked input
is uniform in Z_2^k to the server (one-time pad by PRG(b_u)), as long as fewer than t of a client's
share holders collude with it. Semi-honest model: no signatures or consistency checks (the
active-security additions of Bonawitz et al. §4.2 are not implemented).

Dropout knob (tests and simulation only): a client given `drop_after` = "advertise", "share" or
"masked" leaves right after that stage and sends an empty message where its next one was due,
which stands in for the transport telling the server that the connection closed (the server also
treats a receive timeout as a dropout, `stage_timeout`).
"""

from __future__ import annotations

import functools
import os
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from nacl.bindings import crypto_scalarmult_base

from sharelearn.core import codec
from sharelearn.core.errors import ConfigError, CryptoError, DecodeError, PeerTimeout, ProtocolError
from sharelearn.core.link import Link
from sharelearn.core.types import F64Array, PartyId, U8Array, U64Array, Wire
from sharelearn.crypto import aead, kdf, maskadd, shamir, x25519

__all__ = [
    "DROP_STAGES",
    "ClientState",
    "SecAggConfig",
    "SecAggError",
    "SecAggResult",
    "ServerState",
    "client_advertise",
    "client_masked_input",
    "client_share_keys",
    "client_unmask",
    "dequantize",
    "neighbour_sets",
    "quantize",
    "run_secagg_client",
    "run_secagg_server",
    "server_collect_keys",
    "server_collect_masked",
    "server_route_shares",
    "server_unmask",
]

DROP_STAGES = ("advertise", "share", "masked")
KEY_BYTES = 32
SEED_BYTES = 16  # AES-128 mask seeds: 128-bit security, like X25519
_S_WORDS = 1 + -(-KEY_BYTES // shamir.CHUNK_BYTES)  # length element + 3-byte chunks of s_sk
_B_WORDS = 1 + -(-SEED_BYTES // shamir.CHUNK_BYTES)  # ... of the self-mask seed b
_NONCE_BYTES = aead.NONCE_BYTES
_AEAD: aead.AeadAlg = "chacha20poly1305"
_PLAIN_BYTES = 16 + 4 * (_S_WORDS + _B_WORDS)  # (u, v) + share of s_sk + share of b (uint32 words)
_SEALED_BYTES = _NONCE_BYTES + _PLAIN_BYTES + 16  # nonce + ciphertext + Poly1305 tag


Shares = npt.NDArray[np.unsignedinteger[Any]]  # Shamir shares, elements of F_(2^31 - 1)


class SecAggError(ProtocolError):
    """A secure-aggregation round cannot finish: too few clients left (below the threshold)."""


@dataclass(frozen=True, slots=True)
class SecAggConfig:
    """Public parameters of one round, chosen by the server and checked by every client.

    Attributes:
        n_clients: clients invited to the round (indices 0..n-1).
        threshold: t, shares needed to rebuild a seed; also the fewest responders any stage allows.
        length: elements of the vector being summed.
        modulus_bits: k: inputs and the sum live in Z_2^k (1..64).
        neighbours: 0 = every other client (Bonawitz et al.); else SecAgg+ with this many neighbours.
        graph_seed: public 32 bytes that fix the SecAgg+ neighbour graph.
        round_id: a number bound into every key derivation, so keys of two rounds never collide.
    """

    n_clients: int
    threshold: int
    length: int
    modulus_bits: int = 64
    neighbours: int = 0
    graph_seed: bytes = bytes(32)
    round_id: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.n_clients <= 100_000:
            raise ConfigError(f"secure aggregation needs 2..100000 clients, got {self.n_clients}")
        if not 1 <= self.modulus_bits <= 64:
            raise ConfigError(f"secagg modulus_bits must be in 1..64, got {self.modulus_bits}")
        if not 0 <= self.neighbours < self.n_clients:
            raise ConfigError(f"secagg neighbours must be in 0..{self.n_clients - 1}, got {self.neighbours}")
        if not 1 <= self.length <= 1 << 28:
            raise ConfigError(f"secagg vector length must be in 1..2^28, got {self.length}")
        holders = self.holders
        if not 2 <= self.threshold <= holders:
            raise ConfigError(
                f"secagg threshold must be in 2..{holders} (share holders per client), got {self.threshold}"
            )
        if len(self.graph_seed) != 32:
            raise ConfigError("secagg graph_seed must be 32 bytes")

    @property
    def holders(self) -> int:
        """Share holders per client: its neighbours and itself."""
        degree = self.n_clients - 1 if self.neighbours == 0 else _even_degree(self.neighbours, self.n_clients)
        return degree + 1

    def to_wire(self) -> dict[str, Any]:
        return {
            "n": self.n_clients,
            "t": self.threshold,
            "length": self.length,
            "k": self.modulus_bits,
            "neighbours": self.neighbours,
            "graph_seed": self.graph_seed,
            "round": self.round_id,
        }

    @classmethod
    def from_wire(cls, value: Wire, *, peer: str, tag: str) -> SecAggConfig:
        doc = codec.expect_type(value, dict, peer=peer, tag=tag)
        try:
            fields = {
                "n_clients": doc["n"],
                "threshold": doc["t"],
                "length": doc["length"],
                "modulus_bits": doc["k"],
                "neighbours": doc["neighbours"],
                "graph_seed": doc["graph_seed"],
                "round_id": doc["round"],
            }
        except KeyError as exc:
            raise DecodeError(f"message {tag!r} from {peer!r}: missing {exc}", peer=peer, tag=tag) from exc
        for name, val in fields.items():
            codec.expect_type(val, bytes if name == "graph_seed" else int, peer=peer, tag=tag)
        try:
            return cls(**fields)
        except ConfigError as exc:
            raise DecodeError(f"message {tag!r} from {peer!r}: {exc}", peer=peer, tag=tag) from exc


def _even_degree(neighbours: int, n: int) -> int:
    """SecAgg+ uses a symmetric circulant graph: round the degree up to an even number (< n)."""
    degree = neighbours + (neighbours % 2)
    return min(degree, n - 1)


def neighbour_sets(cfg: SecAggConfig) -> list[frozenset[int]]:
    """Each client's neighbours (without itself): everyone, or a random circulant graph (SecAgg+)."""
    return list(_graph(cfg.n_clients, cfg.neighbours, cfg.graph_seed))


@functools.lru_cache(maxsize=16)
def _graph(n: int, neighbours: int, graph_seed: bytes) -> tuple[frozenset[int], ...]:
    if neighbours == 0 or _even_degree(neighbours, n) >= n - 1:
        everyone = frozenset(range(n))
        return tuple(everyone - {i} for i in range(n))
    half = _even_degree(neighbours, n) // 2
    # The graph is public: a seeded shuffle of the ring, every client joined to `half` on each side.
    order = np.random.default_rng(np.frombuffer(graph_seed, dtype=np.uint32)).permutation(n)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    offsets = np.concatenate([np.arange(1, half + 1), -np.arange(1, half + 1)])
    table = order[(pos[:, None] + offsets[None, :]) % n]
    return tuple(frozenset(row.tolist()) for row in table)


# --- quantisation into Z_2^k ------------------------------------------------------------------


def quantize(
    values: F64Array, *, frac_bits: int, modulus_bits: int, max_summands: int, overwrite: bool = False
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Encode reals as round(v * 2^f) in Z_2^k (two's complement), checking the sum cannot wrap.

    Returns the words secure aggregation masks and sends: uint32 for k <= 32, else uint64.
    `overwrite`: a float64 `values` is the caller's to lose, and is scaled in place.

    Raises:
        CryptoError: if some |v| * max_summands reaches 2^(k-1-f), so the sum would overflow.
    """
    v = np.asarray(values, dtype=np.float64)
    bound = 2.0 ** (modulus_bits - 1 - frac_bits) / max(max_summands, 1)
    # max and min propagate NaN and infinities, so one pass each checks finiteness and the bound.
    peak = max(float(v.max()), -float(v.min())) if v.size else 0.0
    if not np.isfinite(peak):
        raise CryptoError("cannot quantise NaN or infinite values for secure aggregation")
    if peak >= bound:
        raise CryptoError(
            f"value {peak:.4g} is too large for Z_2^{modulus_bits} with {frac_bits} fractional bits and "
            f"{max_summands} summands (limit {bound:.4g}); lower frac_bits or raise modulus_bits"
        )
    # In place where possible: a client quantises a 100k-element vector every round, and the
    # narrow word needs no 64-bit intermediate (a 100k-element one costs ~5x the whole encoding).
    scaled = np.multiply(v, 2.0**frac_bits, out=v if overwrite and v is values else None)
    np.rint(scaled, out=scaled)
    word = _word(modulus_bits)
    if word == np.uint32 and peak * 2.0**frac_bits < 2.0**31 - 1:
        out: npt.NDArray[np.unsignedinteger[Any]] = scaled.astype(np.int32).view(np.uint32)
    else:
        out = scaled.astype(np.int64).view(np.uint64).astype(word, copy=False)
    if modulus_bits not in (32, 64):
        out &= word.type((1 << modulus_bits) - 1)
    return out


def dequantize(total: U64Array, *, frac_bits: int, modulus_bits: int) -> F64Array:
    """Decode a sum in Z_2^k back to reals (values >= 2^(k-1) are negative)."""
    t = np.asarray(total, dtype=np.uint64) & _mask(modulus_bits)
    if modulus_bits == 64:
        signed = t.view(np.int64).astype(np.float64)
    else:
        half = np.uint64(1 << (modulus_bits - 1))
        signed = np.where(t >= half, t.astype(np.float64) - float(1 << modulus_bits), t.astype(np.float64))
    return np.asarray(signed / 2.0**frac_bits, dtype=np.float64)


def _mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


# --- key agreement, AEAD and masks ------------------------------------------------------------


def _new_secret() -> bytes:
    return os.urandom(KEY_BYTES)  # any 32 bytes: X25519 clamps the scalar itself


def _public(secret: bytes) -> bytes:
    """X25519(secret, 9): libsodium's fixed-base multiplication (~4x a ladder on one point)."""
    return bytes(crypto_scalarmult_base(secret))


_PURPOSES = {b"enc": KEY_BYTES, b"mask": SEED_BYTES}  # ChaCha20-Poly1305 keys, AES-128 mask seeds
_INFO = b"sharelearn/secagg/v1/"
_PAIR = struct.Struct("<qqq")  # round, lower index, higher index: KDF info and AEAD associated data


def _agree_rows(
    secrets: U8Array,
    publics: U8Array,
    purposes: Sequence[bytes],
    cfg: SecAggConfig,
    me: int,
    others: Sequence[int],
) -> list[bytes]:
    """Row r: KDF(DH(secrets[r], publics[r])), bound to purposes[r], the round and the pair (me, others[r]).

    The KDF is the one-step SHA-256 KDF of NIST SP 800-56C (`crypto.kdf.one_step_sha256`).

    `secrets` and `publics` are (n, 32) byte rows (`secrets` may be one row shared by all). One
    batched X25519 call (`crypto.x25519`, multi-buffer where the CPU has it, a scalar per lane)
    for every row, so a client's two key pairs fill the same batches.
    """
    n = publics.shape[0]
    if n == 0:
        return []
    shared = x25519.scalarmult_each(np.broadcast_to(secrets, (n, x25519.POINT_BYTES)), publics)
    zero = ~shared.any(axis=1)
    if zero.any():  # a low-order public key gives an all-zero secret (RFC 7748 section 6.1)
        raise CryptoError(f"secagg: client {others[int(np.argmax(zero))]}'s public key is a low-order point")
    flat, w = shared.tobytes(), x25519.POINT_BYTES
    pack, rid = _PAIR.pack, cfg.round_id
    return [
        kdf.one_step_sha256(
            flat[r * w : r * w + w],
            info=_INFO + purpose + pack(rid, min(me, v), max(me, v)),
            length=_PURPOSES[purpose],
        )
        for r, (purpose, v) in enumerate(zip(purposes, others, strict=True))
    ]


def _agree_many(
    secret: bytes, publics: Sequence[bytes], purpose: bytes, cfg: SecAggConfig, me: int, others: Sequence[int]
) -> list[bytes]:
    """KDF of DH(secret, public) for each peer (`_agree_rows` under one secret and purpose)."""
    rows = np.frombuffer(b"".join(publics), dtype=np.uint8).reshape(-1, x25519.POINT_BYTES)
    one = np.frombuffer(secret, dtype=np.uint8).reshape(1, x25519.POINT_BYTES)
    return _agree_rows(one, rows, [purpose] * len(publics), cfg, me, others)


_FIRST_COUNTER = bytes(_NONCE_BYTES) + b"\x00\x00\x00\x02"  # GCM's first keystream block, zero nonce
_ADDERS = threading.local()


def _mask_adder(length: int, bits: int) -> maskadd.MaskAdder:
    """This thread's `maskadd.MaskAdder` for the length and word.

    The PRG masks: mask j is the AES-CTR keystream of its 16-byte seed from counter block
    0^96 || 2 (the keystream of AES-GCM with an all-zero nonce, NIST SP 800-38D section 6.5), read
    as little-endian words of Z_2^32 (k <= 32, like Flower's SecAgg+) or Z_2^64. Each seed keys
    exactly one stream, so the fixed counter is never reused under a key. Every client of a
    simulation, and every round of a client, reuses the adder's buffers; only the last adder is
    kept, so a finished job holds no more than one model's worth of them.
    """
    adder: maskadd.MaskAdder | None = getattr(_ADDERS, "last", None)
    if (
        adder is None
        or adder.length != length
        or adder.dtype != _word(bits)
        or adder.backend != maskadd.backend(_word(bits))
    ):
        adder = maskadd.MaskAdder(length, _word(bits))
        _ADDERS.last = adder
    return adder


def _word(bits: int) -> np.dtype[Any]:
    """Machine word of Z_2^k: masked inputs and masks travel as uint32 for k <= 32, else uint64."""
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def _seal_all(keys: Sequence[bytes], u: int, to: Sequence[int], shares: Shares, cfg: SecAggConfig) -> U8Array:
    """Seal row r of `shares` (s_sk words, then b words) from u for to[r]: (m, _SEALED_BYTES) bytes.

    Each sealed row is nonce || ChaCha20-Poly1305(u, v, shares) with the round and the sender and
    addressee as associated data; the plaintexts and nonces are built for all rows at once.
    """
    m = len(to)
    head = np.empty((m, 2), dtype="<i8")
    head[:, 0], head[:, 1] = u, to
    plain = np.hstack([head.view(np.uint8), np.ascontiguousarray(shares[:m], dtype="<u4").view(np.uint8)])
    text, w, n = plain.tobytes(), plain.shape[1], _NONCE_BYTES
    nonces = os.urandom(n * m)
    pack, rid = _PAIR.pack, cfg.round_id
    parts: list[bytes] = []
    for r, (key, v) in enumerate(zip(keys, to, strict=True)):
        nonce = nonces[r * n : r * n + n]
        parts += (nonce, aead.seal(key, nonce, text[r * w : r * w + w], pack(rid, u, v), alg=_AEAD))
    return np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(m, _SEALED_BYTES)


def _open(key: bytes, sealed: bytes, u: int, v: int, cfg: SecAggConfig) -> tuple[Shares, Shares]:
    """Open a share pair sealed by u for v; raise ProtocolError if it was tampered with."""
    aad = _PAIR.pack(cfg.round_id, u, v)
    try:
        plain = aead.open_(key, sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad, alg=_AEAD)
    except CryptoError as exc:
        raise ProtocolError(
            f"secagg: the sealed shares from client {u} to client {v} fail authentication"
        ) from exc
    su, sv = struct.unpack_from("<qq", plain)
    if (su, sv) != (u, v) or len(plain) != _PLAIN_BYTES:
        raise ProtocolError(f"secagg: sealed shares addressed ({su}->{sv}) arrived as ({u}->{v})")
    words = np.frombuffer(plain, dtype="<u4", offset=16).astype(np.uint32)
    return words[:_S_WORDS], words[_S_WORDS:]


# --- client stages ----------------------------------------------------------------------------


@dataclass(repr=False)
class ClientState:
    """One client's secrets and view of a round (never printed: it holds private keys)."""

    cfg: SecAggConfig
    index: int
    c_sk: bytes
    s_sk: bytes
    neighbours: frozenset[int]
    advertised: frozenset[int] = frozenset()  # my neighbours whose keys the server relayed
    b_seed: bytes = b""
    own_shares: tuple[Shares, Shares] | None = None
    sealed: dict[int, bytes] = field(default_factory=dict)
    u2: frozenset[int] = frozenset()
    enc_keys: dict[int, bytes] = field(default_factory=dict)
    mask_seeds: dict[int, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"ClientState(index={self.index}, round={self.cfg.round_id})"


def client_advertise(cfg: SecAggConfig, index: int) -> tuple[ClientState, dict[str, Any]]:
    """Stage 1: make the two key pairs; return the state and the message {c_pk, s_pk} for the server."""
    if not 0 <= index < cfg.n_clients:
        raise ConfigError(f"secagg client index {index} outside 0..{cfg.n_clients - 1}")
    state = ClientState(cfg, index, _new_secret(), _new_secret(), neighbour_sets(cfg)[index])
    return state, {"c_pk": _public(state.c_sk), "s_pk": _public(state.s_sk)}


def _check_quorum(count: int, cfg: SecAggConfig, what: str) -> None:
    if count < cfg.threshold:
        raise SecAggError(
            f"secure aggregation round {cfg.round_id}: only {count} {what}, below the threshold "
            f"{cfg.threshold}; the round is abandoned and nothing about any input is revealed"
        )


def client_share_keys(state: ClientState, routed: Wire, *, peer: str = "server") -> dict[str, Any]:
    """Stage 2: check the neighbours' keys, share s_sk and b, seal each neighbour's shares.

    Returns the message {"to": int64 (m,), "sealed": uint8 (m, L)} for the server to relay.
    """
    tag = "secagg/keys_routed"
    doc = codec.expect_type(routed, dict, peer=peer, tag=tag)
    idx = codec.expect_array(doc.get("index"), peer=peer, tag=tag, dtype=np.int64, shape=(None,))
    keys = codec.expect_array(doc.get("keys"), peer=peer, tag=tag, dtype=np.uint8, shape=(len(idx), 64))
    members = [int(i) for i in idx]
    if len(set(members)) != len(members) or not set(members) <= state.neighbours:
        raise DecodeError(
            f"message {tag!r} from {peer!r}: key list names clients outside my neighbours", peer=peer, tag=tag
        )
    state.advertised = frozenset(members)
    _check_quorum(len(members) + 1, state.cfg, f"of client {state.index}'s share holders advertised keys")
    cfg = state.cfg
    state.b_seed = os.urandom(SEED_BYTES)
    # One call shares both secrets; every element has its own polynomial, so the s_sk columns and
    # the b columns are independent sharings (revealing one says nothing about the other).
    elements = np.concatenate([shamir.bytes_to_elements(state.s_sk), shamir.bytes_to_elements(state.b_seed)])
    # Shares only for the holders (my neighbours in U1, then me), at x = index + 1.
    shares = shamir.split_at(elements, [v + 1 for v in members] + [state.index + 1], cfg.threshold)
    s_shares, b_shares = shares[:, :_S_WORDS], shares[:, _S_WORDS:]
    state.own_shares = (s_shares[-1], b_shares[-1])
    # One key per unordered pair: it seals my shares for v and opens v's shares for me. The mask
    # seeds of the next stage come from the same batch of agreements (s_sk with each s_pk).
    m = len(members)
    mine = np.frombuffer(state.c_sk + state.s_sk, dtype=np.uint8).reshape(2, x25519.POINT_BYTES)
    derived = _agree_rows(
        np.repeat(mine, m, axis=0),  # c_sk for the c_pk rows, then s_sk for the s_pk rows
        np.concatenate([keys[:, :32], keys[:, 32:]]),
        [b"enc"] * m + [b"mask"] * m,
        cfg,
        state.index,
        members + members,
    )
    state.enc_keys = dict(zip(members, derived[:m], strict=True))
    state.mask_seeds = dict(zip(members, derived[m:], strict=True))
    sealed = _seal_all([state.enc_keys[v] for v in members], state.index, members, shares, cfg)
    return {"to": np.asarray(members, dtype=np.int64), "sealed": sealed}


def client_masked_input(
    state: ClientState,
    routed: Wire,
    x: npt.NDArray[np.unsignedinteger[Any]],
    *,
    peer: str = "server",
    overwrite: bool = False,
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Stage 3: keep the sealed shares addressed to me; return y = x + self mask +- pairwise masks.

    y is a vector in Z_2^k of uint32 words when k <= 32 (half the upload), else of uint64 words.
    `overwrite`: x is the caller's to lose (as `quantize` returns it): mask it in place when it
    already has y's word type instead of copying it.
    """
    tag = "secagg/shares_routed"
    cfg = state.cfg
    doc = codec.expect_type(routed, dict, peer=peer, tag=tag)
    frm = codec.expect_array(doc.get("from"), peer=peer, tag=tag, dtype=np.int64, shape=(None,))
    sealed = codec.expect_array(
        doc.get("sealed"), peer=peer, tag=tag, dtype=np.uint8, shape=(len(frm), _SEALED_BYTES)
    )
    senders = [int(u) for u in frm]
    if len(set(senders)) != len(senders) or not set(senders) <= state.advertised:
        raise DecodeError(
            f"message {tag!r} from {peer!r}: shares from clients that are not my neighbours",
            peer=peer,
            tag=tag,
        )
    raw, w = sealed.tobytes(), _SEALED_BYTES
    state.sealed = {u: raw[r * w : r * w + w] for r, u in enumerate(senders)}
    state.u2 = frozenset(senders)
    _check_quorum(len(senders) + 1, cfg, f"of client {state.index}'s share holders sent shares")
    values: npt.NDArray[np.unsignedinteger[Any]] = np.asarray(x)
    if values.dtype not in (np.uint64, _word(cfg.modulus_bits)) or values.shape != (cfg.length,):
        raise ConfigError(
            f"secagg input must be a vector of {cfg.length} words of Z_2^{cfg.modulus_bits} "
            f"({_word(cfg.modulus_bits)} or uint64, as `quantize` makes), got {values.dtype} {values.shape}"
        )
    adder = _mask_adder(cfg.length, cfg.modulus_bits)
    # Words of uint32 (k <= 32) or uint64 wrap modulo 2^32 / 2^64, multiples of 2^k.
    y: npt.NDArray[np.unsignedinteger[Any]] = values
    if not (overwrite and values.dtype == adder.dtype and values.flags.c_contiguous):
        y = values.astype(adder.dtype, copy=True)
    # The self mask, then +PRG(s_uv) towards higher indices and -PRG(s_uv) towards lower ones.
    adder.add(
        y,
        [state.b_seed] + [state.mask_seeds[v] for v in senders],
        [1] + [1 if state.index < v else -1 for v in senders],
        _FIRST_COUNTER,
    )
    if cfg.modulus_bits not in (32, 64):
        y &= _word(cfg.modulus_bits).type((1 << cfg.modulus_bits) - 1)
    return y


def client_unmask(state: ClientState, survivors: Wire, *, peer: str = "server") -> dict[str, Any]:
    """Stage 4: open my sealed shares; reveal b-shares of survivors and s-shares of the dropped.

    Never reveals both shares of one client: a survivor's pairwise seeds stay secret.
    """
    tag = "secagg/survivors"
    cfg = state.cfg
    u3 = codec.expect_array(survivors, peer=peer, tag=tag, dtype=np.int64, shape=(None,))
    alive = {int(u) for u in u3}
    if len(alive) != len(u3) or state.index not in alive or not alive <= set(range(cfg.n_clients)):
        raise DecodeError(f"message {tag!r} from {peer!r}: a malformed survivor list", peer=peer, tag=tag)
    holders = state.u2 | {state.index}
    _check_quorum(len(alive), cfg, "clients sent masked inputs")
    b_idx, b_rows, s_idx, s_rows = [], [], [], []
    if state.own_shares is None:
        raise ProtocolError(f"secagg: client {state.index} reached unmasking without sharing its keys")
    for v in sorted(holders):
        if v == state.index:
            s_share, b_share = state.own_shares
        else:
            s_share, b_share = _open(state.enc_keys[v], state.sealed[v], v, state.index, cfg)
        if v in alive:
            b_idx.append(v)
            b_rows.append(b_share)
        else:
            s_idx.append(v)
            s_rows.append(s_share)
    return {
        "b_index": np.asarray(b_idx, dtype=np.int64),
        "b": np.vstack(b_rows).astype(np.uint32) if b_rows else np.zeros((0, _B_WORDS), dtype=np.uint32),
        "s_index": np.asarray(s_idx, dtype=np.int64),
        "s": np.vstack(s_rows).astype(np.uint32) if s_rows else np.zeros((0, _S_WORDS), dtype=np.uint32),
    }


# --- server stages ----------------------------------------------------------------------------


@dataclass
class ServerState:
    """The server's view of a round: who responded at each stage and what it may relay or sum."""

    cfg: SecAggConfig
    neighbours: list[frozenset[int]]
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    u2: frozenset[int] = frozenset()
    u3: frozenset[int] = frozenset()
    total: npt.NDArray[np.unsignedinteger[Any]] | None = None  # sum of U3's masked inputs, in words


def server_collect_keys(
    cfg: SecAggConfig, replies: Mapping[int, Wire]
) -> tuple[ServerState, dict[int, dict[str, Any]]]:
    """Stage 1 at the server: check each {c_pk, s_pk}; return what to send each responder in U1."""
    state = ServerState(cfg, neighbour_sets(cfg))
    for u, msg in replies.items():
        tag = "secagg/keys"
        doc = codec.expect_type(msg, dict, peer=f"client {u}", tag=tag)
        c_pk, s_pk = doc.get("c_pk"), doc.get("s_pk")
        if not (isinstance(c_pk, bytes) and isinstance(s_pk, bytes) and len(c_pk) == len(s_pk) == KEY_BYTES):
            raise DecodeError(
                f"message {tag!r} from client {u}: public keys must be 32 bytes each", peer=str(u), tag=tag
            )
        state.keys[u] = (c_pk, s_pk)
    _check_quorum(len(state.keys), cfg, "clients advertised keys")
    out: dict[int, dict[str, Any]] = {}
    for u in state.keys:
        members = sorted(state.neighbours[u] & state.keys.keys())
        keys = np.zeros((len(members), 64), dtype=np.uint8)
        for r, v in enumerate(members):
            keys[r] = np.frombuffer(state.keys[v][0] + state.keys[v][1], dtype=np.uint8)
        out[u] = {"index": np.asarray(members, dtype=np.int64), "keys": keys}
    return state, out


def server_route_shares(state: ServerState, replies: Mapping[int, Wire]) -> dict[int, dict[str, Any]]:
    """Stage 2 at the server: check each client's sealed shares; return each U2 member's inbox."""
    cfg = state.cfg
    inbox: dict[int, list[tuple[int, np.ndarray]]] = {}
    for u, msg in replies.items():
        tag, peer = "secagg/shares", f"client {u}"
        if u not in state.keys:
            raise DecodeError(f"message {tag!r} from {peer}: it did not advertise keys", peer=peer, tag=tag)
        doc = codec.expect_type(msg, dict, peer=peer, tag=tag)
        to = codec.expect_array(doc.get("to"), peer=peer, tag=tag, dtype=np.int64, shape=(None,))
        sealed = codec.expect_array(
            doc.get("sealed"), peer=peer, tag=tag, dtype=np.uint8, shape=(len(to), _SEALED_BYTES)
        )
        expected = state.neighbours[u] & state.keys.keys()
        if sorted(int(v) for v in to) != sorted(expected):
            raise DecodeError(
                f"message {tag!r} from {peer}: shares must go to exactly its neighbours in U1",
                peer=peer,
                tag=tag,
            )
        for r, v in enumerate(to):
            inbox.setdefault(int(v), []).append((u, sealed[r]))
    state.u2 = frozenset(replies)
    _check_quorum(len(state.u2), cfg, "clients shared their keys")
    out: dict[int, dict[str, Any]] = {}
    for v in state.u2:
        got = [(u, s) for u, s in inbox.get(v, []) if u in state.u2]
        out[v] = {
            "from": np.asarray([u for u, _ in got], dtype=np.int64),
            "sealed": np.vstack([s for _, s in got]) if got else np.zeros((0, _SEALED_BYTES), dtype=np.uint8),
        }
    return out


def server_collect_masked(state: ServerState, replies: Mapping[int, Wire]) -> np.ndarray:
    """Stage 3 at the server: sum the masked inputs of U3; return U3 (sent to each of its members)."""
    cfg = state.cfg
    word = _word(cfg.modulus_bits)
    total = np.zeros(cfg.length, dtype=word)  # uint32 / uint64 words wrap modulo a multiple of 2^k
    for u, msg in replies.items():
        peer = f"client {u}"
        if u not in state.u2:
            raise DecodeError(
                f"message 'secagg/masked' from {peer}: it did not share its keys",
                peer=peer,
                tag="secagg/masked",
            )
        total += codec.expect_array(msg, peer=peer, tag="secagg/masked", dtype=word, shape=(cfg.length,))
    state.u3 = frozenset(replies)
    _check_quorum(len(state.u3), cfg, "clients sent masked inputs")
    state.total = total
    return np.asarray(sorted(state.u3), dtype=np.int64)


def _collect_shares(
    state: ServerState, replies: Mapping[int, Wire], which: str
) -> dict[int, list[tuple[int, Shares]]]:
    """client v -> [(holder x-coordinate, share)] of v's b (which="b") or s_sk (which="s")."""
    found: dict[int, list[tuple[int, Shares]]] = {}
    for holder, msg in replies.items():
        tag, peer = "secagg/unmask", f"client {holder}"
        doc = codec.expect_type(msg, dict, peer=peer, tag=tag)
        idx = codec.expect_array(doc.get(f"{which}_index"), peer=peer, tag=tag, dtype=np.int64, shape=(None,))
        rows = codec.expect_array(
            doc.get(which),
            peer=peer,
            tag=tag,
            dtype=np.uint32,
            shape=(len(idx), _B_WORDS if which == "b" else _S_WORDS),
        )
        allowed = (state.u3 if which == "b" else state.u2 - state.u3) & (state.neighbours[holder] | {holder})
        for r, v in enumerate(idx):
            if int(v) not in allowed:
                raise DecodeError(
                    f"message {tag!r} from {peer}: a {which}-share of client {int(v)} it may not send",
                    peer=peer,
                    tag=tag,
                )
            found.setdefault(int(v), []).append((holder + 1, rows[r]))
    return found


def _recover(
    state: ServerState,
    shares: Mapping[int, list[tuple[int, Shares]]],
    clients: Sequence[int],
    what: str,
    size: int,
) -> list[bytes]:
    """Rebuild the `size`-byte secret of each client from t of its shares, all in one batch."""
    t = state.cfg.threshold
    if not clients:
        return []
    for v in clients:
        _check_quorum(len(shares.get(v, [])), state.cfg, f"holders returned shares of client {v}'s {what}")
    xs = np.array([[x for x, _ in shares[v][:t]] for v in clients], dtype=np.int64)
    rows = np.stack([np.vstack([s for _, s in shares[v][:t]]) for v in clients])
    elements = shamir.recover_many(xs, rows, t)
    # `shamir.bytes_to_elements`' encoding: the length, then 3-byte chunks below 2^24.
    body = elements[:, 1:]
    bad = (elements[:, 0] != size) | np.any(body >> np.uint64(8 * shamir.CHUNK_BYTES), axis=1)
    if body.shape[1] != -(-size // shamir.CHUNK_BYTES) or bad.any():
        v = clients[int(np.argmax(bad))] if bad.any() else clients[0]
        raise CryptoError(f"secagg: the recovered {what} of client {v} is malformed (inconsistent shares)")
    raw = body.astype("<u4").view(np.uint8).reshape(len(clients), -1, 4)[:, :, : shamir.CHUNK_BYTES]
    flat = raw.reshape(len(clients), -1)[:, :size]
    return [bytes(row) for row in flat]


def server_unmask(state: ServerState, replies: Mapping[int, Wire]) -> U64Array:
    """Stage 4 at the server: rebuild the self masks of U3 and the dropped clients' pairwise masks.

    Returns the exact sum over U3 of the clients' inputs in Z_2^k.
    """
    cfg = state.cfg
    if state.total is None:
        raise ProtocolError("secagg: unmasking before the masked inputs were collected")
    _check_quorum(len(replies), cfg, "clients sent unmasking shares")
    total = state.total.copy()
    adder = _mask_adder(cfg.length, cfg.modulus_bits)
    b_shares = _collect_shares(state, replies, "b")
    s_shares = _collect_shares(state, replies, "s")
    u3 = sorted(state.u3)
    seeds = _recover(state, b_shares, u3, "self-mask seed", SEED_BYTES)
    signs = [-1] * len(seeds)
    dropped = sorted(state.u2 - state.u3)
    for v, s_sk_v in zip(dropped, _recover(state, s_shares, dropped, "mask key", KEY_BYTES), strict=True):
        peers = sorted(state.neighbours[v] & state.u3)
        seeds += _agree_many(s_sk_v, [state.keys[u][1] for u in peers], b"mask", cfg, v, peers)
        # u added +mask when u < v, -mask otherwise; take it back out.
        signs += [-1 if u < v else 1 for u in peers]
    adder.add(total, seeds, signs, _FIRST_COUNTER)
    out: U64Array = total.astype(np.uint64) & _mask(cfg.modulus_bits)
    return out


# --- the protocol over a Link -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecAggResult:
    """The server's outcome of a round: the exact sum over the survivors and who dropped when."""

    total: U64Array
    survivors: tuple[PartyId, ...]
    dropped: dict[str, tuple[PartyId, ...]]


def _gather(link: Link, parties: Mapping[int, PartyId], tag: str, deadline: float) -> dict[int, Wire]:
    """Receive `tag` from each party until the deadline; a timeout, a failed peer or None is a dropout."""
    got: dict[int, Wire] = {}
    for index, party in parties.items():
        try:
            value = link.recv(party, tag, timeout=max(deadline - time.monotonic(), 0.001))
        except DecodeError:
            raise
        except (PeerTimeout, ProtocolError):
            continue
        if value is not None:
            got[index] = value
    return got


def run_secagg_server(
    link: Link, clients: Sequence[PartyId], cfg: SecAggConfig, *, stage_timeout: float = 60.0
) -> SecAggResult:
    """Run one round as the server over `link`; return the sum over the surviving clients.

    Raises:
        SecAggError: when a stage ends with fewer than `cfg.threshold` clients.
    """
    if len(clients) != cfg.n_clients:
        raise ConfigError(f"secagg: {len(clients)} clients for a round configured for {cfg.n_clients}")
    everyone = dict(enumerate(clients))
    for index, party in everyone.items():
        link.send(party, "secagg/setup", {"config": cfg.to_wire(), "index": index})

    def stage(members: Mapping[int, PartyId], tag: str) -> dict[int, Wire]:
        return _gather(link, members, tag, time.monotonic() + stage_timeout)

    state, routed = server_collect_keys(cfg, stage(everyone, "secagg/keys"))
    u1 = {i: everyone[i] for i in sorted(state.keys)}
    for u, msg in routed.items():
        link.send(everyone[u], "secagg/keys_routed", msg)
    inboxes = server_route_shares(state, stage(u1, "secagg/shares"))
    for v, msg in inboxes.items():
        link.send(everyone[v], "secagg/shares_routed", msg)
    u3_list = server_collect_masked(state, stage({i: everyone[i] for i in sorted(state.u2)}, "secagg/masked"))
    for u in u3_list:
        link.send(everyone[int(u)], "secagg/survivors", u3_list)
    unmask = stage({int(i): everyone[int(i)] for i in u3_list}, "secagg/unmask")
    total = server_unmask(state, unmask)
    dropped = {
        "advertise": tuple(everyone[i] for i in sorted(state.keys.keys() - state.u2)),
        "share": tuple(everyone[i] for i in sorted(state.u2 - state.u3)),
        "masked": tuple(everyone[i] for i in sorted(state.u3 - unmask.keys())),
        "before_keys": tuple(everyone[i] for i in sorted(everyone.keys() - state.keys.keys())),
    }
    return SecAggResult(total, tuple(everyone[int(i)] for i in u3_list), dropped)


def run_secagg_client(
    link: Link,
    server: PartyId,
    x: npt.NDArray[np.unsignedinteger[Any]],
    *,
    drop_after: str | None = None,
    overwrite: bool = False,
) -> bool:
    """Run one round as a client: mask `x` and help unmask. Returns False if this client dropped.

    Args:
        overwrite: `x` may be masked in place (see `client_masked_input`).
        drop_after: test/simulation knob: "advertise", "share" or "masked" makes the client leave
            right after that stage (it sends an empty message where its next one was due).
    """
    if drop_after is not None and drop_after not in DROP_STAGES:
        raise ConfigError(f"secagg drop stage must be one of {', '.join(DROP_STAGES)}, got {drop_after!r}")
    setup = codec.expect_type(link.recv(server, "secagg/setup"), dict, peer=server, tag="secagg/setup")
    cfg = SecAggConfig.from_wire(setup.get("config"), peer=server, tag="secagg/setup")
    index = codec.expect_type(setup.get("index"), int, peer=server, tag="secagg/setup")
    state, keys_msg = client_advertise(cfg, index)
    link.send(server, "secagg/keys", keys_msg)
    if drop_after == "advertise":
        link.send(server, "secagg/shares", None)
        return False
    link.send(
        server,
        "secagg/shares",
        client_share_keys(state, link.recv(server, "secagg/keys_routed"), peer=server),
    )
    if drop_after == "share":
        link.send(server, "secagg/masked", None)
        return False
    y = client_masked_input(
        state, link.recv(server, "secagg/shares_routed"), x, peer=server, overwrite=overwrite
    )
    link.send(server, "secagg/masked", y)
    if drop_after == "masked":
        link.send(server, "secagg/unmask", None)
        return False
    link.send(
        server, "secagg/unmask", client_unmask(state, link.recv(server, "secagg/survivors"), peer=server)
    )
    return True
