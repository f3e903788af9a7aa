"""Oblivious-transfer roles over a Link: Chou–Orlandi base OT once, then IKNP extensions.

Message sequence (the steps are `crypto.ot`'s pure functions):

setup (once per pair of parties, 2 messages):
1. OT receiver -> sender: S (it plays base-OT *sender* for IKNP).
2. OT sender -> receiver: R_1..R_128 for its secret s; both derive the 128 seed (pairs).

each extension of m transfers (batch id b, unique per session):
3. receiver -> sender: u (128 x m bits).
4. sender -> receiver: the masked messages (chosen-message OT, 2 x 16 bytes per transfer) or the
   corrections (correlated OT for garbled-circuit labels, 16 bytes per transfer). The
   `_deferred` / `_with` pair leaves the corrections to the caller, who sends them inside its
   own next message (the garbled circuit), saving one message per extension.

Leaks: the sender learns nothing about the choices; the receiver learns only the chosen
messages (`crypto.ot` has the argument). Semi-honest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sharelearn.core.codec import expect_array, expect_type
from sharelearn.core.errors import ProtocolError
from sharelearn.core.link import Link
from sharelearn.core.types import PartyId, U8Array, U64Array, Wire
from sharelearn.crypto import ecgroup
from sharelearn.crypto import ot as otc

__all__ = [
    "OTReceiver",
    "OTSender",
    "cot_receive",
    "cot_receive_finish",
    "cot_receive_with",
    "cot_send",
    "cot_send_deferred",
    "ot_receive",
    "ot_receiver_setup",
    "ot_send",
    "ot_sender_setup",
    "receiver_extend",
]


@dataclass(slots=True)
class OTSender:
    """The OT sender's session: its secret s and seeds k_i^{s_i}."""

    link: Link
    peer: PartyId
    s: U8Array
    seeds: U8Array
    batch: int = field(default=0)

    def __repr__(self) -> str:
        return f"OTSender(peer={self.peer!r}, batch={self.batch})"


@dataclass(slots=True)
class OTReceiver:
    """The OT receiver's session: both seeds of every base OT."""

    link: Link
    peer: PartyId
    seeds0: U8Array
    seeds1: U8Array
    batch: int = field(default=0)

    def __repr__(self) -> str:
        return f"OTReceiver(peer={self.peer!r}, batch={self.batch})"


def ot_sender_setup(link: Link, *, peer: PartyId) -> OTSender:
    """Base OTs as the IKNP sender (base-OT receiver with choices s)."""
    big_s = expect_type(link.recv(peer, "ot/base_s"), bytes, peer=peer, tag="ot/base_s")
    s = otc.iknp_sender_choose()
    state, msg = otc.base_receiver_choose(big_s, s)
    link.send(peer, "ot/base_r", msg)
    return OTSender(link, peer, s, otc.base_receiver_keys(state))


def ot_receiver_setup(link: Link, *, peer: PartyId) -> OTReceiver:
    """Base OTs as the IKNP receiver (base-OT sender)."""
    state, big_s = otc.base_sender_setup()
    link.send(peer, "ot/base_s", big_s)
    msg = expect_array(
        link.recv(peer, "ot/base_r"),
        peer=peer,
        tag="ot/base_r",
        dtype=np.uint8,
        shape=(otc.KAPPA, ecgroup.POINT_BYTES),
    )
    seeds0, seeds1 = otc.base_sender_keys(state, msg)
    return OTReceiver(link, peer, seeds0, seeds1)


def _extend_sender(session: OTSender, m: int) -> tuple[U64Array, int]:
    batch, session.batch = session.batch, session.batch + 1
    tag = f"ot/{batch}/u"
    u = expect_array(
        session.link.recv(session.peer, tag),
        peer=session.peer,
        tag=tag,
        dtype=np.uint8,
        shape=(otc.KAPPA, -(-m // 8)),
    )
    return otc.iknp_sender_extend(session.s, session.seeds, u, m, batch=batch), batch


def _extend_receiver(session: OTReceiver, choices: npt.ArrayLike) -> tuple[U64Array, int]:
    batch, session.batch = session.batch, session.batch + 1
    u, t = otc.iknp_receiver_extend(choices, session.seeds0, session.seeds1, batch=batch)
    session.link.send(session.peer, f"ot/{batch}/u", u)
    return t, batch


def ot_send(session: OTSender, x0: U64Array, x1: U64Array) -> None:
    """Chosen-message OT of m pairs of 16-byte messages ((m, 2) uint64 each)."""
    q, batch = _extend_sender(session, int(x0.shape[0]))
    y0, y1 = otc.ot_sender_encrypt(q, session.s, x0, x1, batch=batch)
    session.link.send(session.peer, f"ot/{batch}/y", [y0, y1])


def ot_receive(session: OTReceiver, choices: npt.ArrayLike) -> U64Array:
    """Receive x_j^{c_j} for each choice bit; returns (m, 2) uint64."""
    bits = np.asarray(choices).reshape(-1)
    t, batch = _extend_receiver(session, bits)
    tag = f"ot/{batch}/y"
    got = expect_type(session.link.recv(session.peer, tag), list, peer=session.peer, tag=tag)
    if len(got) != 2:
        raise ProtocolError(f"{session.peer}: {tag!r} must hold two arrays", peer=session.peer, tag=tag)
    y0, y1 = (expect_array(y, peer=session.peer, tag=tag, dtype=np.uint64, shape=t.shape) for y in got)
    return otc.ot_receiver_decrypt(t, bits, y0, y1, batch=batch)


def cot_send(session: OTSender, delta: U64Array, m: int) -> tuple[U64Array, int]:
    """Correlated OT with offset `delta`: returns the zero labels (m, 2) and the batch id used."""
    q, batch = _extend_sender(session, m)
    zero, corrections = otc.cot_sender(q, session.s, delta, batch=batch)
    session.link.send(session.peer, f"ot/{batch}/d", corrections)
    return zero, batch


def cot_send_deferred(session: OTSender, delta: U64Array, m: int) -> tuple[U64Array, U64Array, int]:
    """`cot_send` without sending: (zero labels, corrections, batch id); the caller sends the corrections."""
    q, batch = _extend_sender(session, m)
    zero, corrections = otc.cot_sender(q, session.s, delta, batch=batch)
    return zero, corrections, batch


def cot_receive_with(
    session: OTReceiver, t: U64Array, batch: int, choices: npt.ArrayLike, corrections: Wire, *, tag: str
) -> U64Array:
    """Finish a correlated OT with corrections that arrived inside message `tag` (validated here).

    `t` may already be hashed (`otc.rot_receiver`, e.g. while waiting for that message): pass
    `batch` = -1 then.
    """
    d = expect_array(corrections, peer=session.peer, tag=tag, dtype=np.uint64, shape=t.shape)
    r = np.asarray(choices).reshape(-1).astype(bool)
    if r.size != t.shape[0]:
        raise ProtocolError(f"{session.peer}: {tag!r}: {r.size} choices for {t.shape[0]} transfers")
    labels = otc.rot_receiver(t, batch=batch) if batch >= 0 else t.copy()
    labels[r] ^= d[r]
    return labels


def cot_receive(session: OTReceiver, choices: npt.ArrayLike) -> U64Array:
    """Receive labels W_j xor c_j delta, (m, 2) uint64."""
    bits = np.asarray(choices).reshape(-1)
    t, batch = receiver_extend(session, bits)
    return cot_receive_finish(session, t, batch, bits)


def receiver_extend(session: OTReceiver, choices: npt.ArrayLike) -> tuple[U64Array, int]:
    """Send the IKNP message for `choices` now (so several extensions can be in flight)."""
    return _extend_receiver(session, choices)


def cot_receive_finish(session: OTReceiver, t: U64Array, batch: int, choices: npt.ArrayLike) -> U64Array:
    """Finish a correlated OT started with `receiver_extend`: labels W_j xor c_j delta."""
    tag = f"ot/{batch}/d"
    d = expect_array(
        session.link.recv(session.peer, tag), peer=session.peer, tag=tag, dtype=np.uint64, shape=t.shape
    )
    return otc.cot_receiver(t, choices, d, batch=batch)
