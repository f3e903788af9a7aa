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
  (request start -> success on another instance) and CM convergence (kill -> table without it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sharelearn.algorithms.evaluation import pool_vertical
from sharelearn.algorithms.tee.service import HPKE_SUITE, _model_from_wire
from sharelearn.algorithms.tee.steps import TeeTrainParams, tee_baseline
from sharelearn.core.codec import decode, encode
from sharelearn.core.errors import ProtocolError
from sharelearn.runtime.data import read_party_data
from sharelearn.runtime.jobspec import DataSpec
from sharelearn.tee.cluster import TeeClient, call_endpoint
from sharelearn.tee.envelope import rows_of, write_envelope
from sharelearn.tee.keys import AttestedClusterKey, x25519_public
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule

FATE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fate"


def _spawn(args: list[str], log: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sharelearn", "tee", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    assert proc.stdout is not None  # invariant: stdout=PIPE
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"`sharelearn tee {args[0]}` did not start: {log.read_text()[-2000:]}")
    return proc, json.loads(line)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _predict(client: TeeClient, model_id: str, x: np.ndarray) -> float:
    resp = X25519PrivateKey.generate()
    resp_pk = x25519_public(resp)

    def make(key: AttestedClusterKey) -> bytes:
        req = encode({"model_id": model_id, "x": x, "resp_pk": resp_pk})
        return HPKE_SUITE.encrypt(req, key.public_key, info=b"sml-predict")

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
        cm_proc, cm = _spawn(["cm", "--lease-s", "0.6"], tmp / "cm.log")
        host_proc = None
        try:
            host_proc, host = _spawn(
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
                ],
                tmp / "host.log",
            )
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
                call_endpoint(ep, {"op": "kill", "iid": victim})
                while any(i["iid"] == victim for i in call_endpoint(cm["cm"], {"op": "table"})["instances"]):  # type: ignore[index, union-attr]
                    time.sleep(0.01)
                return {"cm_convergence_s": round(time.monotonic() - t_kill, 3)}

            failover = _load(client, model_id, x, args.requests, args.concurrency, during=kill_one)
            failover["retries"] = client.retries
            failover["client_failover_ms"] = [round(f * 1000, 1) for f in client.failovers]
            return {"simulation": True, "training": training, "serving": serving, "failover": failover}
        finally:
            if host_proc is not None:
                _stop(host_proc)
            _stop(cm_proc)


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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
