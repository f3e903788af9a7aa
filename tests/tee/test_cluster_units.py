"""Cluster manager and client SDK in-process: leases, weights, and a lying CM."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sharelearn.algorithms.tee.service import build_bundle
from sharelearn.core.errors import AttestationError, ConfigError, ProtocolError, RequestRefused
from sharelearn.tee.cluster import ClusterManager, EnclaveHost, TeeClient, call_endpoint, control_call
from sharelearn.tee.control import ControlSigner
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule

pytestmark = pytest.mark.timeout(120)


def _client_policy(mrenclave: bytes, root: bytes) -> AttestationPolicy:
    """A client's policy: this one simulated build, under the platform's simulation root."""
    return AttestationPolicy(
        accept=(EnclaveIdentityRule(mrenclave=mrenclave),),
        name="client",
        allow_simulation=True,
        simulation_root_der=root,
    )


def test_cm_expires_silent_instances_and_publishes_weights() -> None:
    cm = ClusterManager(lease_s=0.2)
    host_key = ControlSigner()
    cm.admit_host(host_key.public)
    try:
        beat = {"op": "heartbeat", "iid": "a", "endpoint": "127.0.0.1:9", "mrenclave": b"m" * 32, "fpr": "f"}
        control_call(cm.endpoint, host_key, beat)
        table = call_endpoint(cm.endpoint, {"op": "table"})
        assert isinstance(table, dict) and [i["iid"] for i in table["instances"]] == ["a"]  # type: ignore[index, union-attr]
        assert table["weights"] == {(b"m" * 32).hex(): 1.0}
        time.sleep(0.35)
        table = call_endpoint(cm.endpoint, {"op": "table"})
        assert isinstance(table, dict) and table["instances"] == [] and cm.removed[0][0] == "a"
        with pytest.raises(Exception, match="heartbeat needs"):
            control_call(cm.endpoint, host_key, {"op": "heartbeat", "iid": 3})
    finally:
        cm.close()


def test_a_lying_cm_cannot_route_the_client_to_another_build(tmp_path: Path) -> None:
    cm = ClusterManager(lease_s=30)
    liar = ControlSigner()  # the CM's operator admits its own lying "host"
    cm.admit_host(liar.public)
    with EnclaveHost() as host:
        root = host.platform.root_der
        good = host.load(build_bundle(tmp_path / "good", cluster="svc", simulation_root_der=root))
        evil = host.load(build_bundle(tmp_path / "evil", cluster="svc", simulation_root_der=root, isv_svn=9))
        impostor = host.launch(evil)
        # The CM claims the impostor runs the accepted build.
        control_call(
            cm.endpoint,
            liar,
            {
                "op": "heartbeat",
                "iid": impostor.iid,
                "endpoint": host.endpoint,
                "mrenclave": good.identity.mrenclave,
                "fpr": impostor.fpr,
            },
        )
        policy = _client_policy(good.identity.mrenclave, root)
        client = TeeClient(policy, cm=cm.endpoint)
        with pytest.raises(AttestationError, match="no instance passed attestation"):
            client.call("status", lambda key: None)
        honest = host.launch(good)
        control_call(
            cm.endpoint,
            liar,
            {
                "op": "heartbeat",
                "iid": honest.iid,
                "endpoint": host.endpoint,
                "mrenclave": good.identity.mrenclave,
                "fpr": honest.fpr,
            },
        )
        client._down.clear()
        for _ in range(5):
            value, fpr = client.call("status", lambda key: None)
            assert fpr == honest.fpr != impostor.fpr
            assert isinstance(value, dict) and value["mrenclave"] == good.identity.mrenclave
    cm.close()
    with pytest.raises(ConfigError, match="needs a cluster manager endpoint"):
        TeeClient(policy)


def test_a_refused_request_leaves_every_route_in_service(tmp_path: Path) -> None:
    """An enclave that answers with a refusal is alive: the client tries the other instances (one
    might hold what this one lacks) but puts no route in cooldown, so the next good request goes
    straight through instead of finding every route closed."""
    cm = ClusterManager(lease_s=30)
    try:
        with EnclaveHost(cm=cm.endpoint) as host:
            cm.admit_host(host.signer.public)
            root = host.platform.root_der
            image = host.load(build_bundle(tmp_path / "svc", cluster="svc", simulation_root_der=root))
            instances = [host.launch(image) for _ in range(2)]
            client = TeeClient(_client_policy(image.identity.mrenclave, root), cm=cm.endpoint)
            deadline = time.monotonic() + 10
            while len(client.routes(fresh=True)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # the instances' first heartbeats
            assert len(client.routes()) == 2

            with pytest.raises(RequestRefused, match="refused by every instance tried") as info:
                client.call("no_such_handler", lambda key: None)

            assert str(info.value).count("no_such_handler failed") == 2  # both were asked
            assert client._down == {} and client.retries == 0
            value, fpr = client.call("status", lambda key: None)
            assert isinstance(value, dict) and fpr == instances[0].fpr == instances[1].fpr
            instances[0].enclave.close()  # a dead instance still trips the breaker
            for _ in range(30):  # routes are drawn at random: until one call has met the dead one
                client.call("status", lambda key: None)
                if client.retries:
                    break
            assert client.retries == 1 and len(client._down) == 1
    finally:
        cm.close()


def test_control_plane_refuses_unsigned_foreign_replayed_and_misdirected_commands(tmp_path: Path) -> None:
    """The adversary is anyone on the machine who can reach the loopback endpoints."""
    cm = ClusterManager(lease_s=30)
    try:
        with EnclaveHost(cm=cm.endpoint) as host:
            cm.admit_host(host.signer.public)
            assert cm.admin is not None and host.admin is not None  # the in-process owners' keys
            root = host.platform.root_der
            image = host.load(build_bundle(tmp_path / "svc", cluster="svc", simulation_root_der=root), "v1")
            victim = host.launch(image)
            mre = image.identity.mrenclave.hex()
            deadline = time.monotonic() + 10
            while mre not in cm.weights and time.monotonic() < deadline:
                time.sleep(0.05)
            intruder = ControlSigner()
            zero = {"op": "set_weights", "weights": {mre: 0.0}}

            # 1. an unauthenticated kill / launch, and one signed by an unknown key, are refused
            with pytest.raises(ProtocolError, match="must be signed"):
                call_endpoint(host.endpoint, {"op": "kill", "iid": victim.iid})
            with pytest.raises(ProtocolError, match="must be signed"):
                call_endpoint(host.endpoint, {"op": "launch", "image": "v1"})
            with pytest.raises(ProtocolError, match="not authorised"):
                control_call(host.endpoint, intruder, {"op": "kill", "iid": victim.iid})
            assert victim.alive and len(host.instances) == 1
            # 2. routing weights to zero: unsigned, foreign, or the admin's signature for another host
            with pytest.raises(ProtocolError, match="must be signed"):
                call_endpoint(cm.endpoint, zero)
            with pytest.raises(ProtocolError, match="not authorised"):
                control_call(cm.endpoint, intruder, zero)
            with pytest.raises(ProtocolError, match="signed for"):
                call_endpoint(cm.endpoint, cm.admin.sign(host.endpoint, zero))
            # 3. a captured genuine command replayed, or edited, is refused
            genuine = cm.admin.sign(cm.endpoint, {"op": "set_weights", "weights": {mre: 0.5}})
            assert call_endpoint(cm.endpoint, genuine) == {mre: 0.5}
            control_call(cm.endpoint, cm.admin, {"op": "set_weights", "weights": {mre: 1.0}})
            with pytest.raises(ProtocolError, match="replayed"):
                call_endpoint(cm.endpoint, genuine)
            with pytest.raises(ProtocolError, match="bad signature"):
                call_endpoint(cm.endpoint, {**genuine, "weights": {mre: 0.0}})
            assert cm.weights == {mre: 1.0}
            # 4. a forged heartbeat re-pointing the instance at the attacker's endpoint is refused
            forged = {"op": "heartbeat", "iid": victim.iid, "endpoint": "127.0.0.1:9", "mrenclave": b"m" * 32}
            with pytest.raises(ProtocolError, match="not authorised"):
                control_call(cm.endpoint, intruder, forged)
            other_host = ControlSigner()  # another admitted host may not take over this instance
            cm.admit_host(other_host.public)
            with pytest.raises(ProtocolError, match="belongs to another host"):
                control_call(cm.endpoint, other_host, forged)
            assert cm.members[victim.iid].endpoint == host.endpoint
            # the owner's signed kill still works
            control_call(host.endpoint, host.admin, {"op": "kill", "iid": victim.iid})
            assert not victim.alive
    finally:
        cm.close()
