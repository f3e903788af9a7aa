"""Signed, replay-proof control-plane commands of the TEE cluster (host and cluster manager).

The data plane needs no such care (every request is HPKE-encrypted to an attested key and the
enclave checks who signed it); the control plane does: an unauthenticated `kill` of an enclave
instance, `launch`, `upgrade`, a forged heartbeat or `set_weights` to zero would let anyone on
the machine take the service down. Every control command therefore carries

    auth = {pk, to, ctr, sig},  sig = Ed25519(key, "SML-TEE-CONTROL-v1" ‖ encode(to, ctr, command))

`to` names the endpoint it is meant for (a command for one host is refused by another), `ctr`
is a counter the verifier requires to grow strictly per key (a replayed or reordered command is
refused) and to lie within `window_s` of the verifier's clock (a command withheld and delivered
late is refused). The verifier accepts only the keys it was given (`admin` or admitted hosts).

What each side learns: the verifier learns the signer's public key and the command (both in the
clear on loopback); an eavesdropper who replays a command gains nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sharelearn.core.codec import encode
from sharelearn.core.errors import AttestationError
from sharelearn.core.types import Wire

__all__ = ["CONTROL_CONTEXT", "ControlSigner", "ControlVerifier", "public_hex"]

CONTROL_CONTEXT = b"SML-TEE-CONTROL-v1"


def public_hex(key: Ed25519PrivateKey) -> str:
    """The raw Ed25519 public key of `key`, in hex."""
    return key.public_key().public_bytes_raw().hex()


def _signed_bytes(to: str, ctr: int, command: Mapping[str, Wire]) -> bytes:
    body = {k: command[k] for k in sorted(command) if k != "auth"}
    return CONTROL_CONTEXT + encode([to, ctr, body])


class ControlSigner:
    """Signs control commands with one Ed25519 key; its counter is the clock in ns, kept increasing."""

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self.key = key or Ed25519PrivateKey.generate()
        self.public = public_hex(self.key)
        self._last = 0
        self._lock = threading.Lock()

    def sign(self, to: str, command: Mapping[str, Wire]) -> dict[str, Wire]:
        """`command` with its `auth` field for the endpoint `to`."""
        with self._lock:
            ctr = self._last = max(self._last + 1, time.time_ns())
        sig = self.key.sign(_signed_bytes(to, ctr, command))
        return {**command, "auth": {"pk": self.public, "to": to, "ctr": ctr, "sig": sig}}


class ControlVerifier:
    """Checks control commands for one endpoint: known key, right endpoint, fresh, not replayed."""

    def __init__(self, keys: Iterable[str], *, window_s: float = 300.0) -> None:
        self.keys = {k.lower() for k in keys}
        self.endpoint = ""  # set by the server once it listens
        self.window_s = window_s
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, key_hex: str) -> None:
        with self._lock:
            self.keys.add(key_hex.lower())

    def check(self, command: Mapping[str, Wire], what: str) -> str:
        """Return the signer's key (hex), or raise AttestationError naming what was refused."""
        auth = command.get("auth")
        if not isinstance(auth, dict):
            raise AttestationError(f"{what} refused: control commands must be signed (no auth)")
        pk, to, ctr, sig = auth.get("pk"), auth.get("to"), auth.get("ctr"), auth.get("sig")
        if not (
            isinstance(pk, str) and isinstance(to, str) and isinstance(ctr, int) and isinstance(sig, bytes)
        ):
            raise AttestationError(f"{what} refused: malformed auth")
        if pk.lower() not in self.keys:
            raise AttestationError(f"{what} refused: key {pk[:16]}… is not authorised here")
        if to != self.endpoint:
            raise AttestationError(f"{what} refused: signed for {to!r}, this is {self.endpoint!r}")
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(pk)).verify(sig, _signed_bytes(to, ctr, command))
        except (InvalidSignature, ValueError) as exc:
            raise AttestationError(f"{what} refused: bad signature") from exc
        if abs(time.time_ns() - ctr) > self.window_s * 1e9:
            raise AttestationError(f"{what} refused: stale command (counter outside the clock window)")
        with self._lock:
            if ctr <= self._last.get(pk, 0):
                raise AttestationError(f"{what} refused: replayed command (counter did not increase)")
            self._last[pk] = ctr
        return pk
