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
4. ConsistencyCheck and Unmasking: the server sends U3; each u in U3 signs it (see below), then
   on the relayed signatures of U4 opens its sealed shares and returns, for every
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

Malicious server (Bonawitz et al. 2017, §4.2, the active variant): the setup also names the
round's clients in index order (the roster). Every client
- checks the announced configuration against what the job fixes (`ClientPolicy`: length, k, round,
  neighbours, graph seed) and refuses a threshold below the job's or below a strict majority of
  its share holders (so two disjoint groups of t holders cannot both exist);
- signs its public keys, the configuration and the roster (their digest) with the private key of
  its mTLS certificate, and sends the certificate; a receiver verifies that the certificate comes
  from the job's CA and names the roster's client at that index (`identity.Verifier`), so the
  server can neither substitute keys of its own nor show two clients different configurations;
- ConsistencyCheck: after being told U3, signs (digest, U3) and sends the signature; the server
  relays to each responder in U4 the signatures of its share holders in U4; a client reveals
  shares only if at least t of them signed, all within its U3, and every signature verifies over
  the same U3 it signed (an honest client signs one U3 per round);
- reveals at most once per round, for each peer either the b-share or the s_sk-share, never both.
With the default threshold (a strict majority) this holds against a malicious server alone; a
server colluding with c clients needs t > (holders + c) / 2 (Bonawitz et al., Theorem 6.5), which
the job sets with `fedavg.secagg.threshold`.
What each role learns: the server, the sum over U3, the sets U1..U4, the roster and the vector
length; a client, the roster, the public keys and certificates of its neighbours and the sets it
is shown. Each masked input is uniform in Z_2^k to the server (one-time pad by PRG(b_u)) as long as
fewer than t of a client's share holders collude with it.

Dropout knob (tests and simulation only): a client given `drop_after` = "advertise", "share" or
"masked" leaves right after that stage and sends an empty message where its next one was due,
which stands in for the transport telling the server that the connection closed (the server also
treats a receive timeout as a dropout, `stage_timeout`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from nacl.bindings import crypto_scalarmult_base

from sharelearn.algorithms.horizontal.identity import Identity, Verifier
from sharelearn.core import codec
from sharelearn.core.errors import ConfigError, CryptoError, DecodeError, PeerTimeout, ProtocolError
from sharelearn.core.link import Link
from sharelearn.core.types import F64Array, PartyId, U8Array, U64Array, Wire
from sharelearn.crypto import aead, kdf, maskadd, shamir, x25519

__all__ = [
    "DROP_STAGES",
    "ClientPolicy",
    "ClientState",
    "SecAggConfig",
    "SecAggError",
    "SecAggResult",
    "ServerState",
    "check_setup",
    "client_advertise",
    "client_masked_input",
    "client_share_keys",
    "client_sign_survivors",
    "client_unmask",
    "dequantize",
    "min_threshold",
    "neighbour_sets",
    "quantize",
    "run_secagg_client",
    "run_secagg_server",
    "server_collect_keys",
    "server_collect_masked",
    "server_collect_signatures",
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


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What a client accepts in the server's setup: the job's own settings, never the server's word.

    Attributes:
        expected: the round's configuration as the job fixes it for n clients (the threshold in it
            is a floor: the server may raise it, never lower it); None checks only the floor.
        clients: the parties that may be in the roster (the job's clients); None: anyone the CA named.
    """

    expected: Callable[[int], SecAggConfig] | None = None
    clients: frozenset[str] | None = None


def min_threshold(cfg: SecAggConfig) -> int:
    """The lowest threshold a client accepts: a strict majority of its share holders."""
    return cfg.holders // 2 + 1


def _digest(cfg: SecAggConfig, roster: Sequence[str]) -> bytes:
    """SHA-256 of the round's configuration and roster: what every signature of the round binds."""
    head = struct.pack(
        "<qqqqqq", cfg.n_clients, cfg.threshold, cfg.length, cfg.modulus_bits, cfg.neighbours, cfg.round_id
    )
    names = b"\x00".join(name.encode() for name in roster)
    return hashlib.sha256(b"sharelearn/secagg/v2/round" + head + cfg.graph_seed + names).digest()


def _keys_statement(digest: bytes, index: int, c_pk: bytes, s_pk: bytes) -> bytes:
    return b"sharelearn/secagg/v2/keys" + digest + struct.pack("<q", index) + c_pk + s_pk


def _survivors_statement(digest: bytes, u3: Sequence[int]) -> bytes:
    return b"sharelearn/secagg/v2/survivors" + digest + np.asarray(sorted(u3), dtype="<i8").tobytes()


def check_setup(
    cfg: SecAggConfig,
    roster: Sequence[str],
    index: int,
    me: str,
    policy: ClientPolicy,
    *,
    peer: str = "server",
) -> None:
    """Refuse a setup that departs from the job: lowered threshold, other parameters, a forged roster.

    Raises:
        ProtocolError: naming what the server announced and what the job requires.
    """
    where = f"secagg round {cfg.round_id}: the server {peer!r}"
    if len(roster) != cfg.n_clients or len(set(roster)) != len(roster):
        raise ProtocolError(
            f"{where} named {len(roster)} clients ({len(set(roster))} distinct) for n={cfg.n_clients}"
        )
    if not 0 <= index < cfg.n_clients or roster[index] != me:
        raise ProtocolError(f"{where} gave client {me!r} index {index}, which the roster does not give it")
    if policy.clients is not None and not set(roster) <= policy.clients:
        strangers = sorted(set(roster) - policy.clients)
        raise ProtocolError(
            f"{where} named {strangers[:5]} ({len(strangers)} in all), which are not clients of the job"
        )
    floor = min_threshold(cfg)
    if policy.expected is not None:
        want = policy.expected(cfg.n_clients)
        floor = max(floor, want.threshold)
        for name in ("length", "modulus_bits", "neighbours", "graph_seed", "round_id"):
            if getattr(cfg, name) != getattr(want, name):
                raise ProtocolError(
                    f"{where} announced {name}={getattr(cfg, name)!r}; the job fixes {getattr(want, name)!r}"
                )
    if cfg.threshold < floor:
        raise ProtocolError(
            f"{where} announced threshold {cfg.threshold}, below the {floor} the job requires"
        )


@dataclass(repr=False)
class ClientState:
    """One client's secrets and view of a round (never printed: it holds private keys)."""

    cfg: SecAggConfig
    index: int
    c_sk: bytes
    s_sk: bytes
    neighbours: frozenset[int]
    identity: Identity
    verifier: Verifier
    roster: tuple[str, ...]
    digest: bytes
    advertised: frozenset[int] = frozenset()  # my neighbours whose keys the server relayed
    b_seed: bytes = b""
    own_shares: tuple[Shares, Shares] | None = None
    sealed: dict[int, bytes] = field(default_factory=dict)
    u2: frozenset[int] = frozenset()
    enc_keys: dict[int, bytes] = field(default_factory=dict)
    mask_seeds: dict[int, bytes] = field(default_factory=dict)
    u3: frozenset[int] | None = None  # the survivor set I signed (I sign one per round)
    revealed: bool = False  # I answer one unmasking request per round

    def __repr__(self) -> str:
        return f"ClientState(index={self.index}, round={self.cfg.round_id})"


def client_advertise(
    cfg: SecAggConfig,
    index: int,
    identity: Identity,
    roster: Sequence[str],
    policy: ClientPolicy | None = None,
    *,
    peer: str = "server",
) -> tuple[ClientState, dict[str, Any]]:
    """Stage 1: check the setup, make the two key pairs, sign them; return the state and the message.

    The message is {c_pk, s_pk, cert, sig}: sig signs the round digest, my index and both keys.
    """
    if not 0 <= index < cfg.n_clients:
        raise ConfigError(f"secagg client index {index} outside 0..{cfg.n_clients - 1}")
    check_setup(cfg, roster, index, identity.party, policy or ClientPolicy(), peer=peer)
    digest = _digest(cfg, roster)
    c_sk, s_sk = _new_secret(), _new_secret()
    state = ClientState(
        cfg,
        index,
        c_sk,
        s_sk,
        neighbour_sets(cfg)[index],
        identity,
        identity.verifier(),
        tuple(roster),
        digest,
    )
    c_pk, s_pk = _public(c_sk), _public(s_sk)
    sig = identity.sign(_keys_statement(digest, index, c_pk, s_pk))
    return state, {"c_pk": c_pk, "s_pk": s_pk, "cert": identity.cert_pem, "sig": sig}


def _check_quorum(count: int, cfg: SecAggConfig, what: str) -> None:
    if count < cfg.threshold:
        raise SecAggError(
            f"secure aggregation round {cfg.round_id}: only {count} {what}, below the threshold "
            f"{cfg.threshold}; the round is abandoned and nothing about any input is revealed"
        )


def _expect_blobs(value: Wire, count: int, *, peer: str, tag: str) -> list[bytes]:
    """A list of `count` byte strings (certificates, signatures) of at most 8 KiB each."""
    items = codec.expect_type(value, list, peer=peer, tag=tag)
    if len(items) != count or not all(isinstance(b, bytes) and len(b) <= 8192 for b in items):
        raise DecodeError(f"message {tag!r} from {peer!r}: expected {count} byte strings", peer=peer, tag=tag)
    return [bytes(b) for b in items]


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
    certs = _expect_blobs(doc.get("certs"), len(members), peer=peer, tag=tag)
    sigs = _expect_blobs(doc.get("sigs"), len(members), peer=peer, tag=tag)
    for r, v in enumerate(members):
        row = keys[r].tobytes()
        statement = _keys_statement(state.digest, v, row[:32], row[32:])
        state.verifier.verify(
            certs[r], state.roster[v], sigs[r], statement, f"its round {state.cfg.round_id} keys"
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


def _accept_shares(state: ClientState, routed: Wire, peer: str) -> list[int]:
    """Keep the sealed shares routed to me (from my advertised neighbours only); return their senders."""
    tag = "secagg/shares_routed"
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
    _check_quorum(len(senders) + 1, state.cfg, f"of client {state.index}'s share holders sent shares")
    return senders


def _checked_input(
    cfg: SecAggConfig, x: npt.NDArray[np.unsignedinteger[Any]]
) -> npt.NDArray[np.unsignedinteger[Any]]:
    values: npt.NDArray[np.unsignedinteger[Any]] = np.asarray(x)
    if values.dtype not in (np.uint64, _word(cfg.modulus_bits)) or values.shape != (cfg.length,):
        raise ConfigError(
            f"secagg input must be a vector of {cfg.length} words of Z_2^{cfg.modulus_bits} "
            f"({_word(cfg.modulus_bits)} or uint64, as `quantize` makes), got {values.dtype} {values.shape}"
        )
    return values


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
    cfg = state.cfg
    senders = _accept_shares(state, routed, peer)
    values = _checked_input(cfg, x)
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


def client_sign_survivors(state: ClientState, survivors: Wire, *, peer: str = "server") -> dict[str, Any]:
    """ConsistencyCheck: check the survivor set U3 I am told, sign it (once per round): {"sig"}."""
    tag = "secagg/survivors"
    cfg = state.cfg
    u3 = codec.expect_array(survivors, peer=peer, tag=tag, dtype=np.int64, shape=(None,))
    alive = {int(u) for u in u3}
    if len(alive) != len(u3) or state.index not in alive or not alive <= set(range(cfg.n_clients)):
        raise DecodeError(f"message {tag!r} from {peer!r}: a malformed survivor list", peer=peer, tag=tag)
    if state.u3 is not None:
        raise ProtocolError(
            f"secagg round {cfg.round_id}: {peer!r} asked client {state.index} to sign a second survivor set"
        )
    if state.own_shares is None:
        raise ProtocolError(f"secagg: client {state.index} reached unmasking without sharing its keys")
    _check_quorum(len(alive), cfg, "clients sent masked inputs")
    strangers = sorted(alive & state.neighbours - state.u2)
    if strangers:
        raise ProtocolError(
            f"secagg round {cfg.round_id}: {peer!r} lists survivors {strangers} "
            f"that never shared keys with client {state.index}"
        )
    state.u3 = frozenset(alive)
    return {"sig": state.identity.sign(_survivors_statement(state.digest, sorted(alive)))}


def _check_signatures(state: ClientState, signed: Wire, peer: str) -> None:
    """Verify the relayed survivor-set signatures of my share holders in U4.

    At least t of them (me included), all survivors of my U3 among my neighbours, all over my U3:
    then at least t of the holders that could reveal shares for my neighbours saw the same U3.
    """
    tag = "secagg/signatures"
    cfg = state.cfg
    if state.u3 is None:
        raise ProtocolError(f"secagg: client {state.index} was asked to unmask before signing a survivor set")
    doc = codec.expect_type(signed, dict, peer=peer, tag=tag)
    idx = [
        int(v)
        for v in codec.expect_array(doc.get("index"), peer=peer, tag=tag, dtype=np.int64, shape=(None,))
    ]
    certs = _expect_blobs(doc.get("certs"), len(idx), peer=peer, tag=tag)
    sigs = _expect_blobs(doc.get("sigs"), len(idx), peer=peer, tag=tag)
    u4 = set(idx)
    if (
        len(u4) != len(idx)
        or state.index not in u4
        or not u4 <= state.u3 & (state.neighbours | {state.index})
    ):
        raise ProtocolError(
            f"secagg round {cfg.round_id}: {peer!r} relayed signers {sorted(u4)} that are not within the "
            f"survivor set {sorted(state.u3)} it showed client {state.index}"
        )
    _check_quorum(len(u4), cfg, "clients signed the survivor set")
    statement = _survivors_statement(state.digest, sorted(state.u3))
    for v, cert, sig in zip(idx, certs, sigs, strict=True):
        if v != state.index:
            state.verifier.verify(
                cert, state.roster[v], sig, statement, f"the survivor set of round {cfg.round_id}"
            )


def client_unmask(state: ClientState, signed: Wire, *, peer: str = "server") -> dict[str, Any]:
    """Stage 4: on U4's signatures over my U3, reveal b-shares of U3 and s-shares of U2 - U3.

    Never reveals both shares of one client (one answer per round, from the one U3 I signed): a
    survivor's pairwise seeds stay secret.
    """
    _check_signatures(state, signed, peer)
    if state.revealed:
        raise ProtocolError(
            f"secagg round {state.cfg.round_id}: {peer!r} asked client {state.index} to unmask twice"
        )
    state.revealed = True
    alive = state.u3 or frozenset()
    b_idx, b_rows, s_idx, s_rows = [], [], [], []
    own = state.own_shares
    if own is None:
        raise ProtocolError(f"secagg: client {state.index} reached unmasking without sharing its keys")
    for v in sorted(state.u2 | {state.index}):
        if v == state.index:
            s_share, b_share = own
        else:
            s_share, b_share = _open(state.enc_keys[v], state.sealed[v], v, state.index, state.cfg)
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
    proofs: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # (certificate, key signature)
    u2: frozenset[int] = frozenset()
    u3: frozenset[int] = frozenset()
    u4: frozenset[int] = frozenset()  # clients that signed the survivor set
    certs: dict[int, bytes] = field(default_factory=dict)
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
        cert, sig = doc.get("cert"), doc.get("sig")
        if not (isinstance(cert, bytes) and isinstance(sig, bytes) and len(cert) <= 8192 and len(sig) <= 512):
            raise DecodeError(
                f"message {tag!r} from client {u}: a certificate and a key signature are required",
                peer=str(u),
                tag=tag,
            )
        state.keys[u] = (c_pk, s_pk)
        state.proofs[u] = (cert, sig)
    _check_quorum(len(state.keys), cfg, "clients advertised keys")
    out: dict[int, dict[str, Any]] = {}
    for u in state.keys:
        members = sorted(state.neighbours[u] & state.keys.keys())
        keys = np.zeros((len(members), 64), dtype=np.uint8)
        for r, v in enumerate(members):
            keys[r] = np.frombuffer(state.keys[v][0] + state.keys[v][1], dtype=np.uint8)
        out[u] = {
            "index": np.asarray(members, dtype=np.int64),
            "keys": keys,
            "certs": [state.proofs[v][0] for v in members],
            "sigs": [state.proofs[v][1] for v in members],
        }
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


def server_collect_signatures(state: ServerState, replies: Mapping[int, Wire]) -> dict[int, dict[str, Any]]:
    """ConsistencyCheck at the server: for each signer in U4, the signatures of its neighbours in U4."""
    sigs: dict[int, bytes] = {}
    for u in sorted(replies):
        tag, peer = "secagg/consistency", f"client {u}"
        if u not in state.u3:
            raise DecodeError(f"message {tag!r} from {peer}: it is not a survivor", peer=peer, tag=tag)
        doc = codec.expect_type(replies[u], dict, peer=peer, tag=tag)
        sig = doc.get("sig")
        if not isinstance(sig, bytes) or len(sig) > 512:
            raise DecodeError(f"message {tag!r} from {peer}: a signature is required", peer=peer, tag=tag)
        sigs[u] = sig
    state.u4 = frozenset(sigs)
    _check_quorum(len(state.u4), state.cfg, "clients signed the survivor set")
    out: dict[int, dict[str, Any]] = {}
    for u in sorted(state.u4):
        members = sorted((state.neighbours[u] | {u}) & state.u4)
        out[u] = {
            "index": np.asarray(members, dtype=np.int64),
            "certs": [state.proofs[v][0] for v in members],
            "sigs": [sigs[v] for v in members],
        }
    return out


def _collect_shares(
    state: ServerState, replies: Mapping[int, Wire], which: str
) -> dict[int, list[tuple[int, Shares]]]:
    """client v -> [(holder x-coordinate, share)] of v's b (which="b") or s_sk (which="s")."""
    found: dict[int, list[tuple[int, Shares]]] = {}
    for holder, msg in replies.items():
        tag, peer = "secagg/unmask", f"client {holder}"
        if holder not in state.u4:
            raise DecodeError(
                f"message {tag!r} from {peer}: it did not sign the survivor set", peer=peer, tag=tag
            )
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
        link.send(party, "secagg/setup", {"config": cfg.to_wire(), "index": index, "roster": list(clients)})

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
    signed = server_collect_signatures(
        state, stage({int(i): everyone[int(i)] for i in u3_list}, "secagg/consistency")
    )
    for u, msg in signed.items():
        link.send(everyone[u], "secagg/signatures", msg)
    unmask = stage({i: everyone[i] for i in sorted(state.u4)}, "secagg/unmask")
    total = server_unmask(state, unmask)
    dropped = {
        "advertise": tuple(everyone[i] for i in sorted(state.keys.keys() - state.u2)),
        "share": tuple(everyone[i] for i in sorted(state.u2 - state.u3)),
        "masked": tuple(everyone[i] for i in sorted(state.u3 - unmask.keys())),
        "before_keys": tuple(everyone[i] for i in sorted(everyone.keys() - state.keys.keys())),
    }
    return SecAggResult(total, tuple(everyone[int(i)] for i in u3_list), dropped)


def _recv_setup(link: Link, server: PartyId) -> tuple[SecAggConfig, int, list[str]]:
    """The server's setup message: the round's configuration, my index and the roster."""
    setup = codec.expect_type(link.recv(server, "secagg/setup"), dict, peer=server, tag="secagg/setup")
    cfg = SecAggConfig.from_wire(setup.get("config"), peer=server, tag="secagg/setup")
    index = codec.expect_type(setup.get("index"), int, peer=server, tag="secagg/setup")
    roster = codec.expect_type(setup.get("roster"), list, peer=server, tag="secagg/setup")
    if not all(isinstance(name, str) for name in roster):
        raise DecodeError(
            f"message 'secagg/setup' from {server!r}: roster names must be strings",
            peer=server,
            tag="secagg/setup",
        )
    return cfg, index, roster


def run_secagg_client(
    link: Link,
    server: PartyId,
    x: npt.NDArray[np.unsignedinteger[Any]],
    *,
    identity: Identity,
    policy: ClientPolicy | None = None,
    drop_after: str | None = None,
    overwrite: bool = False,
) -> bool:
    """Run one round as a client: mask `x` and help unmask. Returns False if this client dropped.

    Args:
        identity: this client's certificate and key (signs its keys and the survivor set).
        policy: what the job fixes; a setup that departs from it fails with ProtocolError.
        overwrite: `x` may be masked in place (see `client_masked_input`).
        drop_after: test/simulation knob: "advertise", "share" or "masked" makes the client leave
            right after that stage (it sends an empty message where its next one was due).
    """
    if drop_after is not None and drop_after not in DROP_STAGES:
        raise ConfigError(f"secagg drop stage must be one of {', '.join(DROP_STAGES)}, got {drop_after!r}")
    cfg, index, roster = _recv_setup(link, server)
    state, keys_msg = client_advertise(cfg, index, identity, roster, policy, peer=server)
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
        link.send(server, "secagg/consistency", None)
        return False
    sig = client_sign_survivors(state, link.recv(server, "secagg/survivors"), peer=server)
    link.send(server, "secagg/consistency", sig)
    link.send(
        server, "secagg/unmask", client_unmask(state, link.recv(server, "secagg/signatures"), peer=server)
    )
    return True
