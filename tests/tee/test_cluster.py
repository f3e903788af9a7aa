"""Cluster manager, enclave host and client SDK across OS processes (simulated platform).

`sharelearn tee cm` and `sharelearn tee host` run as their own processes; every enclave instance
is a further process. The test is the client: it verifies attestation itself, encrypts requests
to the attested cluster key, and checks failover, scale-out after key sync and a rolling upgrade.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sharelearn.algorithms.tee.service import HPKE_SUITE, predict_digest, sign_upgrade
from sharelearn.core.codec import decode, encode
from sharelearn.core.errors import ProtocolError
from sharelearn.tee.cluster import TeeClient, call_endpoint, control_call
from sharelearn.tee.control import ControlSigner
from sharelearn.tee.envelope import rows_of, write_envelope
from sharelearn.tee.keys import AttestedClusterKey, x25519_public
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule
from sharelearn.testing.services import spawn_tee_service, stop_service

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("cluster")
    owner = Ed25519PrivateKey.generate()
    owner_pk = owner.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    admin = ControlSigner()
    cm_proc, cm = spawn_tee_service(
        ["cm", "--lease-s", "0.6", "--admin-pk", admin.public], tmp_path / "cm.log"
    )
    host_proc = None
    try:
        host_proc, host = spawn_tee_service(
            [
                "host",
                "--cm",
                cm["cm"],
                "--workdir",
                str(tmp_path / "host"),
                "--instances",
                "3",
                "--owner-pk",
                owner_pk,
                "--hb-s",
                "0.15",
                "--admin-pk",
                admin.public,
            ],
            tmp_path / "host.log",
        )
        control_call(cm["cm"], admin, {"op": "add_host", "pk": host["host_pk"]})
        yield {"cm": cm["cm"], "host": host, "owner": owner, "tmp": tmp_path, "admin": admin}
    finally:
        for proc in (host_proc, cm_proc):
            if proc is not None:
                stop_service(proc)


def _policy(host: dict[str, Any], *names: str) -> AttestationPolicy:
    return AttestationPolicy(
        accept=tuple(EnclaveIdentityRule(mrenclave=bytes.fromhex(host["images"][n])) for n in names),
        name="client",
        allow_simulation=True,
        simulation_root_der=Path(host["simulation_root"]).read_bytes(),
    )


def _routes(client: TeeClient, n: int) -> list[tuple[str, str, float]]:
    deadline = time.monotonic() + 30
    while len(routes := client.routes(fresh=True)) < n:
        assert time.monotonic() < deadline, f"only {len(routes)} of {n} instances registered"
        time.sleep(0.05)
    return routes


def _train(client: TeeClient, ep: str, iid: str, tmp: Path) -> tuple[str, bytes, np.ndarray]:
    rng = np.random.default_rng(5)
    n = 400
    ids = [f"c{i}" for i in range(n)]
    xa, xb = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    y = ((xa[:, 0] - xb[:, 1]) > 0).astype(float)
    key = client.attest(ep, iid)
    signers = {"bank": _BANK, "shop": Ed25519PrivateKey.generate()}
    parties = {name: k.public_key().public_bytes_raw() for name, k in signers.items()}
    for name, x, lab in (("bank", xa, y), ("shop", xb, None)):
        write_envelope(
            tmp / f"{name}.smle",
            rows_of(ids, x, lab, 100),
            target=key,
            dataset=name,
            owner=name,
            features=tuple(f"{name}{k}" for k in range(x.shape[1])),
            label=None if lab is None else "y",
            allowed_ops=["tee_train"],
            owner_key=signers[name],
            parties=parties,
        )
    out: Any = call_endpoint(
        ep,
        {
            "op": "call",
            "instance": iid,
            "method": "train",
            "arg": {
                "datasets": [str(tmp / "bank.smle"), str(tmp / "shop.smle")],
                "model": "gbdt",
                "params": {"num_trees": 5, "max_depth": 3},
                "memory_cap_mb": 0.02,
            },
        },
    )
    return str(out["model_id"]), bytes(out["model"]), np.hstack([xa, xb])


_BANK = Ed25519PrivateKey.generate()  # the label holder's envelope key: the model's authorised client


def _request(model_id: str, x: np.ndarray, resp_pk: bytes) -> bytes:
    """A predict request signed by the label holder (the model answers only its clients)."""
    req: dict[str, Any] = {
        "model_id": model_id,
        "x": x,
        "resp_pk": resp_pk,
        "client_pk": _BANK.public_key().public_bytes_raw().hex(),
    }
    req["sig"] = _BANK.sign(predict_digest(model_id, req))
    return encode(req)


def _predict(client: TeeClient, model_id: str, x: np.ndarray) -> tuple[float, str]:
    resp = X25519PrivateKey.generate()
    resp_pk = x25519_public(resp)

    def make(key: AttestedClusterKey) -> bytes:
        return HPKE_SUITE.encrypt(_request(model_id, x, resp_pk), key.public_key, info=b"sml-predict")

    ct, fpr = client.call("predict", make)
    assert isinstance(ct, bytes)
    msg: Any = decode(HPKE_SUITE.decrypt(ct, resp, info=b"sml-predict-resp"))
    return float(msg["scores"][0]), fpr


class _Load:
    """Closed-loop load: `threads` clients sending predictions until stopped."""

    def __init__(self, client: TeeClient, model_id: str, x: np.ndarray, threads: int = 2) -> None:
        self.ok: list[tuple[float, str, float, int]] = []  # (time, fpr, score, row)
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(client, model_id, x, k)) for k in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _run(self, client: TeeClient, model_id: str, x: np.ndarray, k: int) -> None:
        i = k
        while not self._stop.is_set() and len(self.ok) < 5000:
            try:
                score, fpr = _predict(client, model_id, x[i % len(x)][None, :])
                self.ok.append((time.monotonic(), fpr, score, i % len(x)))
            except ProtocolError as exc:
                self.failed.append(str(exc))
            i += 2
            time.sleep(0.002)  # bounded load on a shared CI box

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def test_failover_scale_out_and_rolling_upgrade_across_processes(cluster: dict[str, Any]) -> None:
    host, ep, tmp = cluster["host"], cluster["host"]["endpoint"], cluster["tmp"]
    admin = cluster["admin"]
    control_call(cluster["cm"], admin, {"op": "set_weights", "weights": {}})
    client = TeeClient(_policy(host, "v1", "v2"), cm=cluster["cm"], timeout=20)
    routes = _routes(client, 3)
    model_id, blob, x = _train(client, ep, routes[0][1], tmp)
    for _, iid, _ in routes:
        assert (
            call_endpoint(ep, {"op": "call", "instance": iid, "method": "load_model", "arg": blob})
            == model_id
        )
    fprs = {client.attest(ep, iid).fingerprint for _, iid, _ in routes}
    assert len(fprs) == 1  # all three instances hold the synced cluster key
    v1_fpr = fprs.pop()
    x = x[:12]
    reference = [_predict(client, model_id, x[i : i + 1])[0] for i in range(len(x))]

    # 1. kill one of three instances under load: no request lost beyond the in-flight retry
    load = _Load(client, model_id, x)
    time.sleep(0.6)
    victim = routes[1][1]
    t_kill = time.monotonic()
    control_call(ep, admin, {"op": "kill", "iid": victim})
    while any(i["iid"] == victim for i in call_endpoint(cluster["cm"], {"op": "table"})["instances"]):  # type: ignore[index, union-attr]
        assert time.monotonic() - t_kill < 10, "CM kept routing to the killed instance"
        time.sleep(0.02)
    converge_s = time.monotonic() - t_kill
    time.sleep(0.5)
    load.stop()
    assert not load.failed, load.failed[:3]
    assert sum(1 for t, *_ in load.ok if t > t_kill) > 10
    assert all(s == pytest.approx(reference[i]) for _, _, s, i in load.ok)
    print(
        f"\nkill 1/3: {len(load.ok)} ok, 0 failed, retries {client.retries}, "
        f"client failover {[round(f * 1000, 1) for f in client.failovers]} ms, "
        f"CM convergence {converge_s:.2f} s"
    )

    # 2. scale-out: a new instance gets the key by enclave-to-enclave sync and serves at once
    new_iid = control_call(ep, admin, {"op": "launch", "image": "v1"})
    assert isinstance(new_iid, str)
    assert client.attest(ep, new_iid).fingerprint == v1_fpr
    resp = X25519PrivateKey.generate()
    request = _request(model_id, x[:1], x25519_public(resp))
    ct = HPKE_SUITE.encrypt(request, client.attest(ep, new_iid).public_key, info=b"sml-predict")
    answer = call_endpoint(ep, {"op": "call", "instance": new_iid, "method": "predict", "arg": ct})
    assert isinstance(answer, bytes)
    scores: Any = decode(HPKE_SUITE.decrypt(answer, resp, info=b"sml-predict-resp"))
    assert scores["scores"][0] == pytest.approx(reference[0])  # served by the new instance itself

    # 3. rolling upgrade v1 -> v2 (two accepted measurements), no failed request, then rollback
    m1, m2 = host["images"]["v1"], host["images"]["v2"]
    control_call(cluster["cm"], admin, {"op": "set_weights", "weights": {m1: 1.0, m2: 0.0}})
    v2_iid = control_call(ep, admin, {"op": "launch", "image": "v2"})
    assert isinstance(v2_iid, str)
    v2_fpr = client.attest(ep, v2_iid).fingerprint
    assert v2_fpr != v1_fpr  # another measurement never receives the v1 cluster key
    intruder = Ed25519PrivateKey.generate()
    bad_authz, bad_sig = sign_upgrade(intruder, bytes.fromhex(m1), bytes.fromhex(m2))
    with pytest.raises(ProtocolError, match="not signed by this build's owner"):
        control_call(
            ep, admin, {"op": "upgrade", "new": v2_iid, "old": new_iid, "authz": bad_authz, "sig": bad_sig}
        )
    authz, sig = sign_upgrade(cluster["owner"], bytes.fromhex(m1), bytes.fromhex(m2))
    moved = control_call(
        ep, admin, {"op": "upgrade", "new": v2_iid, "old": new_iid, "authz": authz, "sig": sig}
    )
    assert moved == [model_id]
    client.retries = 0
    load = _Load(client, model_id, x)
    time.sleep(0.4)
    control_call(cluster["cm"], admin, {"op": "set_weights", "weights": {m1: 1.0, m2: 1.0}})
    time.sleep(0.6)
    t_flip = time.monotonic()
    control_call(cluster["cm"], admin, {"op": "set_weights", "weights": {m1: 0.0, m2: 1.0}})
    time.sleep(0.8)
    t_back = time.monotonic()
    control_call(cluster["cm"], admin, {"op": "set_weights", "weights": {m1: 1.0, m2: 0.0}})  # rollback
    time.sleep(0.8)
    load.stop()
    assert not load.failed, load.failed[:3]
    during = [f for t, f, _, _ in load.ok if t_flip + 0.5 < t < t_back]
    after = [f for t, f, _, _ in load.ok if t > t_back + 0.5]
    assert during and set(during) == {v2_fpr}  # all traffic on the new build
    assert after and set(after) == {v1_fpr}  # rollback: the old build still has its keys
    assert all(s == pytest.approx(reference[i]) for _, _, s, i in load.ok)  # v2 serves the same model
    print(f"rolling upgrade: {len(load.ok)} ok, 0 failed, retries {client.retries}")


def test_encrypt_cli_attests_and_refuses_the_wrong_build(cluster: dict[str, Any]) -> None:
    host, tmp = cluster["host"], cluster["tmp"]
    (tmp / "t.csv").write_text("id,a,y\n" + "".join(f"r{i},{i % 5},{i % 2}\n" for i in range(50)))
    base = [
        sys.executable,
        "-m",
        "sharelearn",
        "tee",
        "encrypt",
        "--data",
        str(tmp / "t.csv"),
        "--label",
        "y",
        "--cm",
        cluster["cm"],
        "--simulation-root",
        host["simulation_root"],
        "--out",
        str(tmp / "t.smle"),
    ]
    ok = subprocess.run(
        [*base, "--mrenclave", host["images"]["v1"]], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    summary = json.loads(ok.stdout)
    assert summary["rows"] == 50 and summary["audience"] == [host["images"]["v1"]] and summary["simulation"]
    assert b"r17" not in (tmp / "t.smle").read_bytes()
    other = subprocess.run([*base, "--mrenclave", "ab" * 32], capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and "no instance of an accepted build" in other.stderr
    no_sim = [a for a in base if a not in ("--simulation-root", host["simulation_root"])]
    prod = subprocess.run(
        [*no_sim, "--mrenclave", host["images"]["v1"]], capture_output=True, text=True, timeout=60
    )
    assert prod.returncode == 6 and "simulated evidence" in prod.stderr
