"""The sharelearn exception tree.

Every error names what caused it: the file, key path and line of a job spec, the file, column
and row of a dataset, the peer and message tag of a protocol failure.

```
SharelearnError
├── ConfigError        job spec / CLI input        -> names file, key path, line
├── DataError          dataset content             -> names file, column, row
├── ProtocolError      a peer misbehaved           -> names peer and tag
│   ├── DecodeError    malformed / oversized message
│   ├── PeerTimeout    nothing within the deadline
│   └── RequestRefused a live peer answered with a refusal (not a sign it is down)
├── PartyFailed        a party of a job died, erred or timed out -> names the party
├── CryptoError        key mismatch, overflow, failed check
└── AttestationError   quote rejected              -> names measurement and policy
```
"""

from __future__ import annotations

__all__ = [
    "AttestationError",
    "ConfigError",
    "CryptoError",
    "DataError",
    "DecodeError",
    "PartyFailed",
    "PeerTimeout",
    "ProtocolError",
    "RequestRefused",
    "SharelearnError",
]


class SharelearnError(Exception):
    """Base class of every error sharelearn raises on purpose."""


class ConfigError(SharelearnError):
    """A job spec, CLI argument or parameter is invalid."""


class DataError(SharelearnError):
    """A dataset's content is invalid (missing column, NaN, duplicate id, ...)."""


class ProtocolError(SharelearnError):
    """A peer sent something unexpected, or a message could not be delivered."""

    def __init__(self, message: str, *, peer: str | None = None, tag: str | None = None) -> None:
        super().__init__(message)
        self.peer = peer
        self.tag = tag


class DecodeError(ProtocolError):
    """A received message is malformed, oversized or of the wrong type."""


class PeerTimeout(ProtocolError):
    """No message arrived from a peer within the deadline."""


class RequestRefused(ProtocolError):
    """A live peer answered and refused this request (bad or unauthorised input, a handler's error).

    Unlike other protocol errors it says nothing about the peer's health: an enclave that refuses
    an unsigned request is still serving, so callers must not treat it as down.
    """


class PartyFailed(SharelearnError):
    """A party of a job died, raised an error or timed out."""

    def __init__(self, party: str, reason: str) -> None:
        super().__init__(f"party {party!r} failed: {reason}")
        self.party = party
        self.reason = reason


class CryptoError(SharelearnError):
    """A cryptographic check failed: key mismatch, overflow, precision loss, bad input."""


class AttestationError(SharelearnError):
    """Attestation evidence was rejected by the appraisal policy."""
