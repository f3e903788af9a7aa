"""The simulation backend, in one package (no SGX hardware, no memory confidentiality).

`platform` (SimPlatform: the simulated CPU's quotes and seal keys), `pcs` (the simulated Intel
PCS: PKI and collateral), `backend` (SimBackend / SimEnclave: measured bundles as isolated OS
processes), `loader` (what runs inside a simulated enclave process). Import the modules
themselves: this package imports nothing, so `attestation` can use `pcs` without a cycle.
"""

__all__: list[str] = []
