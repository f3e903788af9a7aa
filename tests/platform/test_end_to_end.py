"""A coordinator and three workers as separate OS processes run psi + hetero_lr + evaluate.

Run as root with `ip`, each worker runs in its own network namespace (a veth pair to a bridge the
coordinator listens on); otherwise on distinct loopback addresses, said loudly. The test then plays an
auditor of the coordinator: its database, its log and every HTTP answer must hold no raw feature,
label, non-intersecting id or private key.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from harness import DEMO_JOB, Platform

_FLOAT = re.compile(rb"-?\d+\.\d{9}")


def _haystacks(platform: Platform, job_id: str) -> dict[str, bytes]:
    admin = platform.admin
    answers = [
        admin.get(path).content
        for path in (
            f"/api/v1/jobs/{job_id}",
            "/api/v1/jobs",
            f"/api/v1/jobs/{job_id}/logs",
            "/api/v1/models",
            "/api/v1/parties",
        )
    ]
    answers += [
        admin.get(f"/api/v1/jobs/{job_id}/logs", params={"party": p}).content
        for p in ("bank", "shop", "coord")
    ]
    with admin.stream("GET", f"/api/v1/jobs/{job_id}/events") as sse:
        answers.append(b"".join(sse.iter_bytes()))
    db = b"".join(p.read_bytes() for p in platform.state.glob("coordinator.db*"))
    return {
        "database": db,
        "log": (platform.root / "coordinator.log").read_bytes(),
        "http": b"\n".join(answers),
    }


def _secrets(platform: Platform) -> dict[str, set[bytes]]:
    bank = pd.read_csv(platform.root / "bank-data" / "breast_hetero_guest.csv", dtype=str)
    shop = pd.read_csv(platform.root / "shop-data" / "breast_hetero_host.csv", dtype=str)
    common = set(bank["id"]) & set(shop["id"])
    lonely = (set(bank["id"]) | set(shop["id"])) - common
    features = {v.encode() for f in (bank, shop) for c in f.columns if c.startswith("x") for v in f[c]}
    labels = ",".join(bank["y"][:32]).encode()
    keys = set()
    for party in ("bank", "shop", "coord"):
        pem = (platform.root / f"{party}-certs" / f"{party}.key").read_text().splitlines()
        keys |= {line.encode() for line in pem if not line.startswith("-----")}
    assert len(lonely) > 50 and len(features) > 10000
    return {
        "ids": {i.encode() for i in lonely},
        "features": features,
        "labels": {labels, labels.replace(b",", b", ")},
        "keys": keys,
    }


def test_three_workers_run_the_demo_job_over_rest(netns_platform: Platform) -> None:
    platform = netns_platform
    if platform.netns is not None:  # the coordinator listens on the bridge, not on loopback
        assert platform.url.startswith(f"http://{platform.netns.host_ip}:")
    for i, party in enumerate(("bank", "shop", "coord")):
        platform.start_worker(party, i)
    platform.wait_parties(["bank", "shop", "coord"])
    job_id = platform.submit(DEMO_JOB % {"epochs": 3})
    job = platform.wait(job_id)
    assert job["state"] == "succeeded", (job, platform.logs())
    assert job["metrics"]["evaluate"]["auc"] > 0.9
    assert job["summary"]["steps"]["psi"]["intersection_size"] == len(
        set(pd.read_csv(platform.root / "bank-data" / "breast_hetero_guest.csv")["id"])
        & set(pd.read_csv(platform.root / "shop-data" / "breast_hetero_host.csv")["id"])
    )
    assert {(a["party"], a["decision"]) for a in job["approvals"]} == {
        ("bank", "approve"),
        ("shop", "approve"),
    }
    states = [t["state"] for step in job["tasks"].values() for t in step.values()]
    assert states == ["succeeded"] * 9
    assert [t["new"] for t in job["transitions"]] == [
        "submitted",
        "awaiting_approval",
        "queued",
        "running",
        "succeeded",
    ]
    logs = platform.admin.get(f"/api/v1/jobs/{job_id}/logs", params={"party": "bank"}).json()
    assert {e["party"] for e in logs} == {"bank"}
    assert any(e["kind"] == "progress" and e["step"] == "hetero_lr" for e in logs)
    models = platform.admin.get("/api/v1/models").json()
    assert [(m["job_id"], m["step"], m["version"]) for m in models] == [(job_id, "hetero_lr", 1)]
    assert set(models[0]["parties"]) == {"bank", "shop", "coord"}  # the arbiter keeps its part too
    model_file = Path(job["tasks"]["1:hetero_lr"]["bank"]["outputs"]["model"])
    assert model_file.is_relative_to(platform.root / "bank-data" / ".sharelearn" / "jobs" / job_id)

    secrets = _secrets(platform)
    # control: the scan does find every kind of secret where it really is (a party's own files)
    own = (platform.root / "bank-data" / "breast_hetero_guest.csv").read_bytes()
    own += (platform.root / "bank-certs" / "bank.key").read_bytes()
    assert set(_scan(own, secrets)) == {"ids", "features", "keys"}
    found = {
        (where, kind): hits
        for where, hay in _haystacks(platform, job_id).items()
        for kind, hits in _scan(hay, secrets).items()
    }
    assert not found, found


def _scan(hay: bytes, secrets: dict[str, set[bytes]]) -> dict[str, list[bytes]]:
    floats = set(_FLOAT.findall(hay))
    found = {}
    for kind, values in secrets.items():
        hits = floats & values if kind == "features" else {v for v in values if v in hay}
        if hits:
            found[kind] = sorted(hits)[:3]
    return found
