"""Envelopes and key sync against real simulated enclave processes (one SimPlatform host)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sharelearn.algorithms.tee.service import build_bundle
from sharelearn.core.errors import ProtocolError
from sharelearn.tee.cluster import EnclaveHost, TeeClient
from sharelearn.tee.envelope import rows_of, write_envelope
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule

pytestmark = pytest.mark.timeout(120)


def _envelopes(tmp: Path, client: TeeClient, endpoint: str, iid: str) -> list[str]:
    rng = np.random.default_rng(1)
    n = 300
    ids = [f"u{i}" for i in range(n)]
    xa, xb = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    y = ((xa[:, 0] + xb[:, 1]) > 0).astype(float)
    target = client.attest(endpoint, iid)
    bank, shop = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    job = {"bank": bank.public_key().public_bytes_raw(), "shop": shop.public_key().public_bytes_raw()}
    write_envelope(
        tmp / "a.smle",
        rows_of(ids, xa, y, 64),
        target=target,
        dataset="a",
        owner="bank",
        features=("a0", "a1", "a2"),
        label="y",
        allowed_ops=["tee_train"],
        owner_key=bank,
        parties=job,
    )
    order = rng.permutation(n)  # the other party's rows in another order: joined on ids in the enclave
    write_envelope(
        tmp / "b.smle",
        rows_of([ids[i] for i in order], xb[order], None, 64),
        target=target,
        dataset="b",
        owner="shop",
        features=("b0", "b1"),
        label=None,
        allowed_ops=["tee_train"],
        owner_key=shop,
        parties=job,
    )
    return [str(tmp / "a.smle"), str(tmp / "b.smle")]


def test_envelope_opens_only_in_its_measurement_and_keys_never_sync_across(tmp_path: Path) -> None:
    with EnclaveHost() as host:
        root = host.platform.root_der
        image_a = host.load(build_bundle(tmp_path / "A", cluster="train", simulation_root_der=root))
        image_b = host.load(
            build_bundle(tmp_path / "B", cluster="train", simulation_root_der=root, isv_svn=2)
        )
        assert image_a.identity.mrenclave != image_b.identity.mrenclave
        a1 = host.launch(image_a)
        a2 = host.launch(image_a)  # same measurement: keys synced over mutually attested ASC-1
        b1 = host.launch(image_b)  # other measurement: generates its own key
        assert a1.fpr == a2.fpr != b1.fpr
        policy = AttestationPolicy(
            accept=(EnclaveIdentityRule(mrenclave=image_a.identity.mrenclave),),
            name="owner",
            allow_simulation=True,
            simulation_root_der=root,
        )
        client = TeeClient(policy, endpoints=[host.endpoint])
        urls = _envelopes(tmp_path, client, host.endpoint, a1.iid)

        out = a2.call("train", {"datasets": urls, "model": "lr", "params": {}, "memory_cap_mb": 0.01})
        assert isinstance(out, dict) and out["rows"] == 300 and out["blocks"] > 1
        assert int(out["peak_bytes"]) <= int(out["memory_cap_bytes"]) < int(out["data_bytes"])  # type: ignore[call-overload]

        with pytest.raises(ProtocolError, match="not in its audience"):
            b1.call("train", {"datasets": urls, "model": "lr", "params": {}, "memory_cap_mb": 1})
        with pytest.raises(ProtocolError, match="refused by policy"):
            host.sync(b1, a1)  # B asks A for A's keys: A's enclave refuses B's measurement
        with pytest.raises(ProtocolError, match="model was sealed under another cluster key"):
            b1.call("load_model", out["model"])
        with pytest.raises(Exception, match="refused by policy"):
            client.attest(host.endpoint, b1.iid)  # the owner's tool refuses B's statement


def test_cluster_key_is_sealed_to_the_platform_and_measurement(tmp_path: Path) -> None:
    with EnclaveHost() as host, EnclaveHost() as other_machine:
        root = host.platform.root_der
        image = host.load(build_bundle(tmp_path / "A", cluster="train", simulation_root_der=root))
        first = host.launch(image)
        restarted = host.backend.launch(image)  # same build, same platform: unseals the CRK
        try:
            out = restarted.call("restore_key", first.sealed)
            assert isinstance(out, dict) and out["fpr"] == first.fpr
        finally:
            restarted.close()
        moved = other_machine.backend.launch(other_machine.load(image.bundle))  # another platform
        try:
            with pytest.raises(ProtocolError, match="unseal failed"):
                moved.call("restore_key", first.sealed)
        finally:
            moved.close()


def test_sealed_models_are_versioned_and_an_older_version_is_refused(tmp_path: Path) -> None:
    """The host keeps every sealed blob it relayed and feeds an enclave the older one."""
    with EnclaveHost() as host:
        root = host.platform.root_der
        image = host.load(build_bundle(tmp_path / "A", cluster="train", simulation_root_der=root))
        first = host.launch(image)
        policy = AttestationPolicy(
            accept=(EnclaveIdentityRule(mrenclave=image.identity.mrenclave),),
            name="owner",
            allow_simulation=True,
            simulation_root_der=root,
        )
        client = TeeClient(policy, endpoints=[host.endpoint])
        urls = _envelopes(tmp_path, client, host.endpoint, first.iid)
        arg = {"datasets": urls, "model": "lr", "params": {}, "memory_cap_mb": 1, "line": "credit"}
        old, new = first.call("train", arg), first.call("train", arg)
        assert isinstance(old, dict) and isinstance(new, dict)
        assert new["version"] > old["version"] and old["line"] == new["line"] == "credit"
        with pytest.raises(ProtocolError, match="rollback refused"):
            first.call("load_model", old["model"])
        joiner = host.launch(image)  # gets the keys AND the rollback floor by key sync
        with pytest.raises(ProtocolError, match="rollback refused"):
            joiner.call("load_model", old["model"])
        assert joiner.call("load_model", new["model"]) == new["model_id"]
