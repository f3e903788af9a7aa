"""Foundation every layer may import: errors, types, the Link contract, codec and wire audit."""

from __future__ import annotations

from sharelearn.core.audit import Message, WireAudit
from sharelearn.core.codec import Limits, decode, encode, expect_array, expect_type
from sharelearn.core.errors import (
    AttestationError,
    ConfigError,
    CryptoError,
    DataError,
    DecodeError,
    PartyFailed,
    PeerTimeout,
    ProtocolError,
    SharelearnError,
)
from sharelearn.core.link import BaseLink, Inbox, Link, LinkStats, ScopedLink
from sharelearn.core.memlink import MemLink, MemNetwork
from sharelearn.core.types import PartyId, Wire

__all__ = [
    "AttestationError",
    "BaseLink",
    "ConfigError",
    "CryptoError",
    "DataError",
    "DecodeError",
    "Inbox",
    "Limits",
    "Link",
    "LinkStats",
    "MemLink",
    "MemNetwork",
    "Message",
    "PartyFailed",
    "PartyId",
    "PeerTimeout",
    "ProtocolError",
    "ScopedLink",
    "SharelearnError",
    "Wire",
    "WireAudit",
    "decode",
    "encode",
    "expect_array",
    "expect_type",
]
