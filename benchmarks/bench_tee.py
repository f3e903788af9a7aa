"""`sharelearn bench tee`: the TEE route on default_credit with a 3-instance serving cluster.

Starts `sharelearn tee cm` and `sharelearn tee host` as processes (SIMULATED platform: enclaves
are local processes, no SGX), then measures in the same run:
- training: the in-enclave training call (envelopes -> join on ids -> model, under
  `--memory-cap-mb`) against the same library on the same pooled data outside any enclave
  (overhead ratio; also the AUC of both);
- serving: closed-loop online predictions (HPKE request/response, CM routing, client-side
  attestation) against 3 instances: throughput, p50/p99 latency; baseline = the same model's
  prediction in-process without enclave, crypto or IPC;
- failover: one of the 3 instances is SIGKILLed under load; client-observed failover time
  (request start -> success on another instance) and CM convergence (kill -> table without it);
- attestation (`--attestation-only` runs just this): verify time per simulated quote through
  dcap-qvl with the simulation root and the simulated PCS collateral (`verify_quote`), against the
  former own-code checks of the same quote (PCK chain signatures, QE report signature and binding,
  ISV signature, no collateral) measured in the same run; and a real SGX vector through dcap-qvl.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sharelearn.algorithms.metrics import pool_vertical
from sharelearn.algorithms.tee.service import HPKE_SUITE, _model_from_wire, predict_digest
from sharelearn.algorithms.tee.steps import TeeTrainParams, tee_baseline
from sharelearn.core.codec import decode, encode
from sharelearn.core.errors import ProtocolError
from sharelearn.runtime.data import read_party_data
from sharelearn.runtime.jobspec import DataSpec
from sharelearn.tee.attestation import ecdsa_p256_verify, unpack_evidence, verify_quote
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.cluster import TeeClient, call_endpoint, control_call
from sharelearn.tee.control import ControlSigner
from sharelearn.tee.envelope import rows_of, write_envelope
from sharelearn.tee.keys import AttestedClusterKey, x25519_public
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule
from sharelearn.tee.quote import parse_quote
from sharelearn.tee.sim.platform import SimPlatform
from sharelearn.testing.services import spawn_tee_service, stop_service

FATE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fate"
VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "tee-vectors" / "dcap-qvl"
SGX_VECTOR_NOW = 1750334171 + 3600  # inside the real vector's collateral window


def _own_code_checks(raw: bytes, root_der: bytes) -> None:
    """Baseline: the checks the simulation path did before dcap-qvl (no collateral, no CRLs)."""
    quote = parse_quote(raw)
    sig = quote.signature
    chain = x509.load_pem_x509_certificates(sig.cert_data)
    if chain[-1].public_bytes(serialization.Encoding.DER) != root_der:
        raise RuntimeError("baseline: wrong root")
    for cert, issuer in itertools.pairwise(chain):
        cert.verify_directly_issued_by(issuer)
    pck = chain[0].public_key()
    assert isinstance(pck, ec.EllipticCurvePublicKey)
    pck_xy = pck.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
    binding = hashlib.sha256(sig.attestation_key + sig.qe_auth_data).digest() + bytes(32)
    if not (
        ecdsa_p256_verify(pck_xy, sig.qe_report_signature, sig.qe_report.to_bytes())
        and sig.qe_report.report_data == binding
        and ecdsa_p256_verify(sig.attestation_key, sig.isv_signature, quote.signed_bytes)
    ):
        raise RuntimeError("baseline: bad signature")


def attestation_figures(n: int) -> dict[str, Any]:
    """Per-quote verify time: dcap-qvl + simulation root vs the former own-code checks."""
    t0 = time.perf_counter()
    platform = SimPlatform()
    start_ms = (time.perf_counter() - t0) * 1e3
    ident = EnclaveIdentity(os.urandom(32), os.urandom(32), 1, 1, False)
    evidence = [platform.evidence(ident, os.urandom(64)) for _ in range(n)]
    quotes = [unpack_evidence(e)[0] for e in evidence]
    now = int(time.time())

    def per_quote_ms(fn: Any, items: list[bytes]) -> float:
        for item in items[: max(1, n // 10)]:
            fn(item)
        t = time.perf_counter()
        for item in items:
            fn(item)
        return (time.perf_counter() - t) / len(items) * 1e3

    dcap = per_quote_ms(lambda e: verify_quote(e, now=now, simulation_root_der=platform.root_der), evidence)
    own = per_quote_ms(lambda q: _own_code_checks(q, platform.root_der), quotes)
    out: dict[str, Any] = {
        "quotes": n,
        "platform_start_ms": round(start_ms, 2),
        "evidence_bytes": len(evidence[0]),
        "sim_dcap_qvl_verify_ms": round(dcap, 3),
        "sim_own_code_checks_ms": round(own, 3),
        "ratio_dcap_vs_own": round(dcap / own, 2),
    }
    if (VECTORS / "sgx_quote").is_file():
        raw = (VECTORS / "sgx_quote").read_bytes()
        coll = (VECTORS / "sgx_quote_collateral.json").read_text()
        out["real_sgx_dcap_qvl_verify_ms"] = round(
            per_quote_ms(lambda q: verify_quote(q, now=SGX_VECTOR_NOW, collateral=coll), [raw] * n), 3
        )
    return out


def _print_attestation(a: dict[str, Any]) -> None:
    print(
        f"attestation ({a['quotes']} simulated quotes, {a['evidence_bytes']} B evidence): "
        f"dcap-qvl + simulation root {a['sim_dcap_qvl_verify_ms']} ms/quote vs former own-code checks "
        f"{a['sim_own_code_checks_ms']} ms/quote -> x{a['ratio_dcap_vs_own']}; "
        f"real SGX vector through dcap-qvl {a.get('real_sgx_dcap_qvl_verify_ms', 'n/a')} ms/quote; "
        f"sim PCS built once per platform start in {a['platform_start_ms']} ms"
    )


_BANK = Ed25519PrivateKey.generate()  # the label holder's envelope key (the model's client)
_BANK_PK = _BANK.public_key().public_bytes_raw().hex()


def _predict(client: TeeClient, model_id: str, x: np.ndarray) -> float:
    resp = X25519PrivateKey.generate()
    resp_pk = x25519_public(resp)

    def make(key: AttestedClusterKey) -> bytes:
        req: dict[str, Any] = {"model_id": model_id, "x": x, "resp_pk": resp_pk, "client_pk": _BANK_PK}
        req["sig"] = _BANK.sign(predict_digest(model_id, req))  # the model's authorised client
        return HPKE_SUITE.encrypt(encode(req), key.public_key, info=b"sml-predict")

    ct, _ = client.call("predict", make)
    assert isinstance(ct, bytes)  # invariant: service contract; decryption authenticates it
    msg: Any = decode(HPKE_SUITE.decrypt(ct, resp, info=b"sml-predict-resp"))
    return float(msg["scores"][0])


def _load(
    client: TeeClient, model_id: str, x: np.ndarray, n: int, threads: int, during: Any = None
) -> dict[str, Any]:
    lat: list[float] = []
    failed: list[str] = []
    counter = iter(range(n))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                _predict(client, model_id, x[i % len(x)][None, :])
                lat.append(time.perf_counter() - t0)
            except ProtocolError as exc:
                failed.append(str(exc))

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    extra = during() if during is not None else {}
    for t in pool:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(lat) * 1000
    return {
        "requests": n,
        "ok": len(lat),
        "failed": len(failed),
        "throughput_rps": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        **extra,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    guest = read_party_data(DataSpec(FATE / "default_credit_hetero_guest.csv", label="y"))
    host_data = read_party_data(DataSpec(FATE / "default_credit_hetero_host.csv"))
    with tempfile.TemporaryDirectory(prefix="bench-tee-") as tmp_s:
        tmp = Path(tmp_s)
        admin = ControlSigner()
        cm_proc, cm = spawn_tee_service(
            ["cm", "--lease-s", "0.6", "--admin-pk", admin.public], tmp / "cm.log"
        )
        host_proc = None
        try:
            host_proc, host = spawn_tee_service(
                [
                    "host",
                    "--cm",
                    cm["cm"],
                    "--workdir",
                    str(tmp / "host"),
                    "--instances",
                    "3",
                    "--hb-s",
                    "0.15",
                    "--admin-pk",
                    admin.public,
                ],
                tmp / "host.log",
            )
            control_call(cm["cm"], admin, {"op": "add_host", "pk": host["host_pk"]})
            policy = AttestationPolicy(
                accept=(EnclaveIdentityRule(mrenclave=bytes.fromhex(host["images"]["v1"])),),
                name="bench",
                allow_simulation=True,
                simulation_root_der=Path(host["simulation_root"]).read_bytes(),
            )
            client = TeeClient(policy, cm=cm["cm"], timeout=30)
            deadline = time.monotonic() + 60
            while len(routes := client.routes(fresh=True)) < 3:
                if time.monotonic() > deadline:
                    raise RuntimeError("instances did not register")
                time.sleep(0.05)
            ep, iid, _ = routes[0]
            # -- training: in the enclave vs the same library outside -------------------------
            t0 = time.perf_counter()
            key = client.attest(ep, iid)
            signers = {"bank": _BANK, "shop": Ed25519PrivateKey.generate()}
            owners = {n: k.public_key().public_bytes_raw() for n, k in signers.items()}
            for name, d in (("bank", guest), ("shop", host_data)):
                write_envelope(
                    tmp / f"{name}.smle",
                    rows_of(list(d.ids), d.x, d.y, 4096),
                    target=key,
                    dataset=name,
                    owner=name,
                    features=d.feature_names,
                    label=None if d.y is None else "y",
                    allowed_ops=["tee_train"],
                    owner_key=signers[name],
                    parties=owners,
                )
            encrypt_s = time.perf_counter() - t0
            params = TeeTrainParams(
                model=args.model, num_trees=30, max_depth=3, memory_cap_mb=args.memory_cap_mb
            )
            t0 = time.perf_counter()
            out: Any = call_endpoint(
                ep,
                {
                    "op": "call",
                    "instance": iid,
                    "method": "train",
                    "arg": {
                        "datasets": [str(tmp / "bank.smle"), str(tmp / "shop.smle")],
                        "model": args.model,
                        "params": params.wire_params(),
                        "memory_cap_mb": args.memory_cap_mb,
                    },
                },
                timeout=3600,
            )
            enclave_wall = time.perf_counter() - t0
            parties = {"bank": ("guest", guest), "shop": ("host", host_data)}
            t0 = time.perf_counter()
            central = tee_baseline(params, parties)  # type: ignore[arg-type]
            outside_s = time.perf_counter() - t0
            training = {
                "model": args.model,
                "rows": out["rows"],
                "data_bytes": out["data_bytes"],
                "memory_cap_bytes": out["memory_cap_bytes"],
                "peak_bytes": out["peak_bytes"],
                "encrypt_upload_s": round(encrypt_s, 3),
                "enclave_train_s": round(float(out["train_s"]), 3),
                "enclave_call_wall_s": round(enclave_wall, 3),
                "outside_s": round(outside_s, 3),
                "overhead_ratio": round(enclave_wall / outside_s, 2),
                "auc_outside": round(central["auc"], 6),
            }
            # -- serving with 3 instances ------------------------------------------------------
            blob, model_id = out["model"], out["model_id"]
            for _, i2, _ in routes:
                call_endpoint(ep, {"op": "call", "instance": i2, "method": "load_model", "arg": blob})
            x, _ = pool_vertical(parties)  # type: ignore[arg-type]
            x = x[:500]
            plain = _model_from_wire(decode(_plain_payload(blob, args.model, guest, host_data, params)))
            t0 = time.perf_counter()
            for i in range(args.requests):
                plain.predict_block(x[i % len(x)][None, :])
            baseline_rps = args.requests / (time.perf_counter() - t0)
            serving = _load(client, model_id, x, args.requests, args.concurrency)
            serving["instances"] = 3
            serving["baseline_inprocess_rps"] = round(baseline_rps, 1)
            serving["slowdown_vs_inprocess"] = round(baseline_rps / max(serving["throughput_rps"], 1e-9), 1)
            # -- failover ---------------------------------------------------------------------
            client.failovers.clear()
            client.retries = 0

            def kill_one() -> dict[str, Any]:
                time.sleep(0.3)
                victim = routes[1][1]
                t_kill = time.monotonic()
                control_call(ep, admin, {"op": "kill", "iid": victim})
                while any(i["iid"] == victim for i in call_endpoint(cm["cm"], {"op": "table"})["instances"]):  # type: ignore[index, union-attr]
                    time.sleep(0.01)
                return {"cm_convergence_s": round(time.monotonic() - t_kill, 3)}

            failover = _load(client, model_id, x, args.requests, args.concurrency, during=kill_one)
            failover["retries"] = client.retries
            failover["client_failover_ms"] = [round(f * 1000, 1) for f in client.failovers]
            return {
                "simulation": True,
                "training": training,
                "serving": serving,
                "failover": failover,
                "attestation": attestation_figures(args.quotes),
            }
        finally:
            if host_proc is not None:
                stop_service(host_proc)
            stop_service(cm_proc)


def _plain_payload(blob: bytes, model: str, guest: Any, host: Any, params: TeeTrainParams) -> bytes:
    """The same kind of model trained outside (the in-process serving baseline; no enclave)."""
    from sharelearn.algorithms.tee import gbdt, lr
    from sharelearn.algorithms.tee import xgboost as txgb
    from sharelearn.algorithms.tee.data import InMemoryTable

    x, y = pool_vertical({"bank": ("guest", guest), "shop": ("host", host)})
    table = InMemoryTable(x, y)
    p = params.algorithm_params()
    trained: Any = {"lr": lr.train_lr, "gbdt": gbdt.train_gbdt, "xgboost": txgb.train_xgboost}[model](
        table, p
    )
    del blob
    return bytes(trained.to_bytes())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sharelearn bench tee", description=__doc__)
    parser.add_argument("--model", choices=("lr", "gbdt", "xgboost"), default="xgboost")
    parser.add_argument("--memory-cap-mb", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--quotes", type=int, default=300, help="quotes for the attestation figures")
    parser.add_argument("--attestation-only", action="store_true", help="only the attestation figures")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.attestation_only:
        attestation = attestation_figures(args.quotes)
        if args.json:
            print(json.dumps({"simulation": True, "attestation": attestation}, indent=2))
        else:
            _print_attestation(attestation)
        return 0
    if not FATE.is_dir():
        print(f"datasets not found at {FATE}", file=sys.stderr)
        return 2
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    t, s, f = result["training"], result["serving"], result["failover"]
    print("SIMULATION: enclaves are local processes on a simulated platform (no SGX); not SGX timings")
    size, cap = t["data_bytes"] / 1e6, t["memory_cap_bytes"] / 1e6
    print(
        f"training {t['model']} on {t['rows']} rows ({size:.1f} MB, cap {cap:.1f} MB): "
        f"enclave call {t['enclave_call_wall_s']} s (inside {t['enclave_train_s']} s) "
        f"vs outside {t['outside_s']} s -> overhead x{t['overhead_ratio']}; "
        f"encrypt+upload {t['encrypt_upload_s']} s"
    )
    print(
        f"serving 3 instances, {s['requests']} requests x{args.concurrency}: {s['throughput_rps']} req/s, "
        f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, failed {s['failed']} "
        f"(in-process baseline {s['baseline_inprocess_rps']} req/s, x{s['slowdown_vs_inprocess']})"
    )
    print(
        f"failover (kill 1 of 3 under load): failed {f['failed']}, retries {f['retries']}, "
        f"client failover {f['client_failover_ms']} ms, CM convergence {f['cm_convergence_s']} s, "
        f"p99 {f['p99_ms']} ms"
    )
    _print_attestation(result["attestation"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
