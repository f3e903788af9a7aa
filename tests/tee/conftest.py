from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sharelearn.tee.sim.backend import SimBackend
from sharelearn.tee.sim.platform import SimPlatform

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VECTORS = SHARED / "tee-vectors"
# Pinned verification times inside the collateral windows (TCB info issueDate + 1 h).
SGX_NOW = 1750334171 + 3600
TDX_NOW = 1750331763 + 3600

# An enclave app: a sealing service and the responder side of ASC-1, kept inside the enclave.
APP = """
from sharelearn.tee import channel

def main(rt):
    state = {}

    def respond(m1):
        state["r"], m2 = channel.responder_respond(m1, attester=rt.quote)
        return m2

    def finish(m3):
        state["s"] = channel.responder_finish(state.pop("r"), m3)
        return None

    def secure_echo(record):
        return state["s"].seal(b"enclave got: " + state["s"].open(record))

    return {
        "echo": lambda x: x,
        "quote": rt.quote,
        "seal": lambda b: rt.seal(b),
        "unseal": lambda b: rt.unseal(b),
        "asc_respond": respond,
        "asc_finish": finish,
        "secure_echo": secure_echo,
    }
"""


@pytest.fixture
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.skip(f"shared TEE vectors not found at {VECTORS}")
    return VECTORS


@pytest.fixture(scope="session")
def platform() -> SimPlatform:
    return SimPlatform()


@pytest.fixture(scope="session")
def backend(platform: SimPlatform) -> SimBackend:
    return SimBackend(platform, Ed25519PrivateKey.generate())


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "app", *, extra: str = "", **config: object) -> Path:
        bundle = tmp_path / name
        bundle.mkdir()
        (bundle / "app.py").write_text(APP + extra)
        cfg = {"entrypoint": "app:main", "isv_prod_id": 7, "isv_svn": 2} | config
        (bundle / "enclave.json").write_text(json.dumps(cfg))
        return bundle

    return make
