"""The enclave seams: `EnclaveBackend` (host side), `EnclaveHandle`, `EnclaveRuntime` (inside).

A backend turns a bundle (code + config directory) into an `EnclaveImage` whose identity is
known before launch (so owners can put it into signed policies), then launches instances.
The untrusted host only ever talks to an instance through `EnclaveHandle.call`. Quotes and seal
keys are requested by code *inside* the enclave through `EnclaveRuntime`: the host never chooses
report_data, so it cannot obtain a quote that binds a key of its own (TEE.md §2.3).

Backends: `sim.SimBackend` (processes + a simulation platform, labelled SIMULATION) and
`sgx.GramineSgxBackend` (Gramine on SGX hardware).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from sharelearn.core.errors import ConfigError
from sharelearn.core.types import Wire
from sharelearn.tee.quote import SGX_ATTR_DEBUG

__all__ = [
    "ATTR_INIT_MODE64",
    "EnclaveBackend",
    "EnclaveHandle",
    "EnclaveIdentity",
    "EnclaveImage",
    "EnclaveRuntime",
    "SealPolicy",
]

SealPolicy = Literal["mrenclave", "mrsigner"]
ATTR_INIT_MODE64 = 0x5  # INIT | MODE64, what every production 64-bit enclave reports


@dataclass(frozen=True, slots=True)
class EnclaveIdentity:
    """What a verifier can learn about an enclave build (TEE.md §1.1)."""

    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    debug: bool = False

    def __post_init__(self) -> None:
        if len(self.mrenclave) != 32 or len(self.mrsigner) != 32:
            raise ConfigError("EnclaveIdentity: mrenclave and mrsigner must be 32 bytes")
        if not (0 <= self.isv_prod_id <= 0xFFFF and 0 <= self.isv_svn <= 0xFFFF):
            raise ConfigError(
                f"EnclaveIdentity: isv_prod_id/isv_svn out of range ({self.isv_prod_id}, {self.isv_svn})"
            )

    @property
    def attributes_flags(self) -> int:
        return ATTR_INIT_MODE64 | (SGX_ATTR_DEBUG if self.debug else 0)

    def __str__(self) -> str:
        return f"MRENCLAVE={self.mrenclave.hex()[:16]}… ISVPRODID={self.isv_prod_id} ISVSVN={self.isv_svn}"


@dataclass(frozen=True, slots=True)
class EnclaveImage:
    """A built, signed bundle: its expected identity and the backend's signing artifact."""

    kind: str
    bundle: Path
    identity: EnclaveIdentity
    entrypoint: str
    sigstruct: bytes = field(repr=False)


@runtime_checkable
class EnclaveHandle(Protocol):
    """A running instance, as the untrusted host sees it."""

    @property
    def identity(self) -> EnclaveIdentity: ...

    @property
    def pid(self) -> int: ...

    def call(self, method: str, arg: Wire = None, *, timeout: float = 30.0) -> Wire:
        """Invoke a handler inside the enclave; the host learns only the returned value."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class EnclaveBackend(Protocol):
    """Builds images and launches instances of one kind ("sim", "gramine-sgx")."""

    @property
    def kind(self) -> str: ...

    def load(self, bundle: Path) -> EnclaveImage:
        """Measure and sign a bundle; the returned identity is what policies pin."""
        ...

    def launch(self, image: EnclaveImage) -> EnclaveHandle:
        """Re-measure the bundle, refuse a mismatch (EINIT analogue), start an instance."""
        ...


@runtime_checkable
class EnclaveRuntime(Protocol):
    """What code inside an enclave may ask of its platform."""

    @property
    def identity(self) -> EnclaveIdentity: ...

    def quote(self, report_data: bytes) -> bytes:
        """Return evidence over this enclave's identity and the given 64-byte report_data.

        A quote, or a quote packed with its collateral (`attestation.pack_evidence`, as the
        simulation platform does); verifiers take either.
        """
        ...

    def get_seal_key(self, policy: SealPolicy, key_id: bytes, isv_svn: int) -> bytes:
        """EGETKEY analogue: a 32-byte key bound to this platform and identity; svn <= own."""
        ...

    def seal(self, plaintext: bytes, aad: bytes = b"", *, policy: SealPolicy = "mrenclave") -> bytes: ...

    def unseal(self, blob: bytes, aad: bytes = b"") -> bytes: ...
