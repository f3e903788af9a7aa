"""The TEE cluster's actors, one module each, re-exported here (TEE.md §3).

`host` (EnclaveHost), `manager` (ClusterManager), `client` (TeeClient), `endpoint` (the loopback
calls), `control` (signed control commands), `embedded` (the job's default simulated cluster).

`EnclaveHost` is the untrusted host agent of one simulated machine: it owns a `SimPlatform`,
launches instances of one measured service bundle as separate OS processes, relays calls to them
from a loopback TCP endpoint (length-prefixed codec frames), and drives key sync between its
instances: the host only relays ASC-1 messages; the joiner and the holder mutually attest
("same MRENCLAVE as me", checked inside each enclave) and the cluster root key crosses only the
attested channel. The host learns ciphertexts and fingerprints, never keys.

`ClusterManager` (`sharelearn tee cm`) is untrusted for confidentiality: instances register and
heartbeat; it keeps the routing table of live instances per measurement, drops instances whose
heartbeats stop, asks hosts to sync keys to new instances, and publishes weights for rolling
upgrades (two accepted measurements side by side). `TeeClient` is the SDK: it verifies
attestation itself against its own policy (the CM only relays), balances over instances and
retries the *same* ciphertext on another instance when one fails (stateless data plane).

SIMULATION: hosts built on `SimPlatform` give no memory confidentiality (TEE.md §2.4); every
statement they produce is labelled SIMULATION in-band and refused unless a policy pins the root.
"""

from sharelearn.tee.client import TeeClient
from sharelearn.tee.endpoint import call_endpoint, control_call
from sharelearn.tee.host import EnclaveHost, Instance
from sharelearn.tee.manager import ClusterManager

__all__ = [
    "ClusterManager",
    "EnclaveHost",
    "Instance",
    "TeeClient",
    "call_endpoint",
    "control_call",
]
