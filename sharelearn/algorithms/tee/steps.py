"""Job steps of the TEE route (`engine: tee`): tee_upload, tee_train, tee_serve (+ generic evaluate).

Cluster: with a job-level `tee:` block every party talks to that cluster manager and accepts only
the pinned MRENCLAVE. Without it, whoever runs the job (the launcher, or a standalone node at
the job's first party; never a step) has started the embedded default (`embedded`: a local
*simulated* platform, a cluster manager and the enclave instances) and hands it to the first
party as `ctx.tee_embedded`; whoever started it stops it when the job ends. The leader
announces the CM endpoint and the simulation root; every party then rebuilds
the service bundle itself to compute the MRENCLAVE it will accept (never taking the host's word).
Every output of this route says `"simulation": true` when the evidence was simulated.

Who learns what: parties upload only HPKE envelopes (attested by themselves); the trainer (the
label holder) sends dataset URLs and parameters; only the label holder's signed requests get
scores back, encrypted to its own ephemeral key. The hosting party sees ciphertexts and sizes.
"""

from __future__ import annotations

import concurrent.futures as cf
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sklearn.metrics import roc_auc_score

from sharelearn.algorithms.context import BaselineData, Dataset, StepContext, StepDef, TeeSession
from sharelearn.algorithms.metrics import pool_vertical
from sharelearn.algorithms.package import publish_model
from sharelearn.algorithms.tee import gbdt, lr
from sharelearn.algorithms.tee.data import InMemoryTable
from sharelearn.algorithms.tee.service import (
    HPKE_SUITE,
    MODELS,
    TRAIN_OP,
    build_bundle,
    predict_digest,
    score_digest,
)
from sharelearn.core.codec import decode, encode, expect_array
from sharelearn.core.errors import ConfigError, DataError, ProtocolError
from sharelearn.core.types import Wire
from sharelearn.tee.client import TeeClient
from sharelearn.tee.envelope import rows_of, write_envelope
from sharelearn.tee.keys import AttestedClusterKey, x25519_public
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule
from sharelearn.tee.process import read_bundle
from sharelearn.tee.sim.backend import measure_bundle

__all__ = [
    "TEE_SERVE_STEP",
    "TEE_STEPS",
    "TEE_TRAIN_STEP",
    "TEE_UPLOAD_STEP",
    "TeeModel",
    "TeeServeParams",
    "TeeTrainParams",
    "TeeUploadParams",
    "run_tee_serve",
    "run_tee_train",
    "run_tee_upload",
    "tee_baseline",
]

SIMULATION_NOTE = (
    "SIMULATION: enclaves are local processes measured by a simulated platform (no SGX hardware, "
    "no memory confidentiality); evidence is labelled SIMULATION and accepted only because this "
    "job pins the simulation root"
)


def _require_tee(ctx: StepContext, step: str) -> None:
    if ctx.engine != "tee":
        raise ConfigError(f"step {step!r} needs `engine: tee` in the job file")


def _leader(ctx: StepContext) -> str:
    return next(iter(ctx.roles))


def _trainer(ctx: StepContext) -> str:
    guests = [p for p in ctx.data_parties if ctx.roles[p] == "guest"]
    if not guests and not ctx.data_parties:
        raise ConfigError("the TEE route needs at least one party with data")
    return guests[0] if guests else ctx.data_parties[0]


def _others(ctx: StepContext) -> list[str]:
    return [p for p in ctx.roles if p != ctx.party]


@dataclass(frozen=True, slots=True)
class TeeUploadParams:
    """Parameters of `tee_upload`.

    Attributes:
        instances: enclave instances the embedded platform starts for training.
        chunk_rows: rows per envelope chunk.
        storage: URL prefix where envelopes go (fsspec URL or folder); empty: the party's workdir.
        cluster: the service's cluster name (part of its measured config).
        ttl_s: envelope lifetime (seconds).
    """

    instances: int = 1
    chunk_rows: int = 2048
    storage: str = ""
    cluster: str = "sharelearn-train"
    ttl_s: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if not 1 <= self.instances <= 8:
            raise ConfigError(f"tee_upload.instances must be in 1..8, got {self.instances}")
        if self.chunk_rows < 1:
            raise ConfigError(f"tee_upload.chunk_rows must be >= 1, got {self.chunk_rows}")
        if self.ttl_s < 60:
            raise ConfigError(f"tee_upload.ttl_s must be >= 60, got {self.ttl_s}")


def _expected_mrenclave(cluster: str, sim_root: bytes | None) -> bytes:
    """Build the service bundle locally and measure it: what this party will accept."""
    with tempfile.TemporaryDirectory(prefix="sml-bundle-") as tmp:
        bundle = build_bundle(Path(tmp) / "b", cluster=cluster, simulation_root_der=sim_root)
        return measure_bundle(read_bundle(bundle))


def _connect(ctx: StepContext, params: TeeUploadParams) -> TeeSession:
    """Join the job's enclave cluster (the `tee:` block or the embedded simulated default)."""
    conf = ctx.tee_config
    if conf:
        root = None
        if conf.get("allow_simulation"):
            path = Path(str(conf["simulation_root"]))
            root = (path if path.is_absolute() else ctx.job_dir / path).read_bytes()
        policy = AttestationPolicy(
            accept=(EnclaveIdentityRule(mrenclave=bytes.fromhex(str(conf["mrenclave"]))),),
            name=f"{ctx.party}-tee",
            allow_simulation=root is not None,
            simulation_root_der=root,
        )
        return TeeSession(TeeClient(policy, cm=str(conf["cm"])), simulation=root is not None)
    leader = _leader(ctx)
    started = None
    if ctx.party == leader:
        started = ctx.tee_embedded
        if started is None:
            raise ConfigError(
                f"party {ctx.party!r} leads a TEE job with no `tee:` block but its runner started no "
                "embedded cluster (see algorithms.tee.embedded.embedded_cluster)"
            )
        cm_ep, root_der = started.cm_endpoint, started.root_der
        ctx.progress(
            f"started the embedded default: {params.instances} enclave(s), CM {cm_ep}. " + SIMULATION_NOTE,
            {},
        )
        for peer in _others(ctx):
            ctx.link.send(peer, "tee/cluster", {"cm": cm_ep, "root": root_der})
    else:
        msg: Any = ctx.link.recv(leader, "tee/cluster")
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("root"), bytes)
            or not isinstance(msg.get("cm"), str)
        ):
            raise ProtocolError("tee/cluster announcement malformed", peer=leader, tag="tee/cluster")
        cm_ep, root_der = msg["cm"], msg["root"]
    mrenclave = _expected_mrenclave(params.cluster, root_der)
    policy = AttestationPolicy(
        accept=(EnclaveIdentityRule(mrenclave=mrenclave),),
        name=f"{ctx.party}-tee",
        allow_simulation=True,
        simulation_root_der=root_der,
    )
    return TeeSession(TeeClient(policy, cm=cm_ep), simulation=True, embedded=started)


def _attested(client: TeeClient) -> tuple[AttestedClusterKey, tuple[str, str]]:
    deadline = time.monotonic() + 30
    while True:
        routes = client.routes()
        if routes:
            ep, iid, _ = routes[0]
            return client.attest(ep, iid), (ep, iid)
        if time.monotonic() > deadline:
            raise ProtocolError("no enclave instance registered with the cluster manager", peer="tee-cm")
        time.sleep(0.05)


def _storage_prefix(ctx: StepContext, storage: str) -> str:
    """Where envelopes go, as a URL the enclave (another process, another cwd) can open.

    Local paths are made absolute: `storage` relative to the job file's folder, the default
    (the party's workdir) relative to the current folder, so a relative `--report-dir` works.
    """
    if storage and "://" in storage and not storage.startswith("file://"):
        return storage
    if not storage:
        return str((ctx.workdir / "tee").resolve())
    path = Path(storage.removeprefix("file://"))
    return str((path if path.is_absolute() else ctx.job_dir / path).resolve())


def _exchange_owner_keys(ctx: StepContext, signer: Ed25519PrivateKey) -> dict[str, bytes]:
    """Every data party's envelope-signing key, learned over the job's authenticated links.

    Each party sends its key to every other party on its mTLS link (so the key is vouched for by
    the sender's job certificate); every envelope lists all of them, and the enclave refuses a
    job whose envelopes disagree (`envelope.check_parties`).
    """
    mine = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    for peer in _others(ctx):
        ctx.link.send(peer, "tee/owner_key", mine if ctx.data is not None else b"")
    keys = {ctx.party: mine} if ctx.data is not None else {}
    for peer in _others(ctx):
        got = ctx.link.recv(peer, "tee/owner_key")
        if not isinstance(got, bytes) or len(got) not in (0, 32):
            raise ProtocolError("tee/owner_key must be a 32-byte Ed25519 key", peer=peer, tag="tee/owner_key")
        if (len(got) == 32) != (peer in ctx.data_parties):
            raise ProtocolError(
                f"party {peer!r} {'sent no' if got == b'' else 'sent a'} envelope key but "
                f"{'holds' if peer in ctx.data_parties else 'holds no'} data in this job",
                peer=peer,
                tag="tee/owner_key",
            )
        if got:
            keys[peer] = got
    return keys


def run_tee_upload(ctx: StepContext, params: TeeUploadParams) -> dict[str, Any]:
    """Attest the cluster with this party's own policy, encrypt its table, hand the URL to the trainer."""
    _require_tee(ctx, "tee_upload")
    session = ctx.tee = _connect(ctx, params)
    client = session.client
    trainer = _trainer(ctx)
    out: dict[str, Any] = {"simulation": session.simulation}
    url = ""
    signer = Ed25519PrivateKey.generate()
    parties = _exchange_owner_keys(ctx, signer)
    if ctx.data is not None:
        key, _ = _attested(client)
        prefix = _storage_prefix(ctx, params.storage)
        url = f"{prefix.rstrip('/')}/{ctx.party}.smle"
        if ctx.data.y is not None:
            session.signer = signer
        data = ctx.data
        header = write_envelope(
            url,
            rows_of(list(data.ids), data.x, data.y, params.chunk_rows),
            target=key,
            dataset=f"{ctx.party}-data",
            owner=ctx.party,
            features=data.feature_names,
            label=None if data.y is None else "label",
            allowed_ops=[TRAIN_OP],
            ttl_s=params.ttl_s,
            owner_key=signer,
            parties=parties,
        )
        ctx.progress(f"attested cluster {key.cluster!r} ({key.evidence.measurement}); envelope -> {url}", {})
        out |= {
            "envelope": url,
            "rows": len(data),
            "mrenclave": key.evidence.mrenclave.hex(),
            "audience": list(header.audience),
        }
    if ctx.party == trainer:
        urls = {ctx.party: url} if url else {}
        for peer in _others(ctx):
            got = ctx.link.recv(peer, "tee/envelope")
            if isinstance(got, str) and got:
                urls[peer] = got
        session.datasets = [urls[p] for p in ctx.data_parties if p in urls]
    else:
        ctx.link.send(trainer, "tee/envelope", url)
    return out


@dataclass(frozen=True, slots=True)
class TeeTrainParams:
    """Parameters of `tee_train`.

    Attributes:
        model: lr | gbdt | xgboost (native XGBoost, external-memory mode).
        num_trees, max_depth, learning_rate, max_bin: boosting parameters (gbdt, xgboost).
        c, max_iter: LR inverse L2 strength and L-BFGS iterations.
        memory_cap_mb: the enclave's data memory cap (EPC stand-in); data larger than it streams.
        clients: Ed25519 public keys (hex) allowed to query the served model, besides the label
            holder's own (which the model always admits); sealed with the model.
    """

    model: Literal["lr", "gbdt", "xgboost"] = "xgboost"
    num_trees: int = 30
    max_depth: int = 3
    learning_rate: float = 0.3
    max_bin: int = 32
    c: float = 1.0
    max_iter: int = 200
    memory_cap_mb: float = 64.0
    clients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in self.clients:
            try:
                ok = len(bytes.fromhex(key)) == 32
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"tee_train.clients: {str(key)[:20]!r} is not an Ed25519 public key in hex")
        if self.model not in MODELS:
            raise ConfigError(f"tee_train.model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if not 0 < self.memory_cap_mb <= 1 << 20:
            raise ConfigError(f"tee_train.memory_cap_mb must be > 0, got {self.memory_cap_mb}")
        self.algorithm_params()  # validates the model's own parameters

    def algorithm_params(self) -> Any:
        if self.model == "lr":
            return lr.LrParams(c=self.c, max_iter=self.max_iter)
        boost: dict[str, Any] = {
            "num_trees": self.num_trees,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "max_bin": self.max_bin,
        }
        if self.model == "gbdt":
            return gbdt.GbdtParams(**boost)
        from sharelearn.algorithms.tee import xgboost as txgb

        return txgb.XgbParams(**boost)

    def wire_params(self) -> dict[str, Wire]:
        p = self.algorithm_params()
        return {f: getattr(p, f) for f in p.__dataclass_fields__}


@dataclass
class TeeModel:
    """A model sealed inside the enclave cluster; `predict` asks the enclave (label holder only)."""

    model_id: str
    blob: bytes
    kind: str
    history: dict[str, list[float]] = field(default_factory=dict)
    route: tuple[str, str] = ("", "")
    step: str = "tee_train"
    task: str = "binary"

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        scores = self.scores_in_join(ctx, data)
        if scores is not None and np.isnan(scores).any():
            raise DataError(
                f"{int(np.isnan(scores).sum())} of party {ctx.party!r}'s rows have no match in the "
                "other parties' data (the enclave scores only the rows of its inner join)"
            )
        return scores

    def scores_in_join(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        """Scores of the label holder's rows, NaN where a row is not in the enclave's join.

        The label holder learns which of its rows matched (what PSI would tell it); the other
        parties learn nothing (None).
        """
        session = ctx.tee
        signer = None if session is None else session.signer
        if session is None or signer is None or data is None:
            return None  # only the label holder may receive scores
        client = session.client
        resp = X25519PrivateKey.generate()
        resp_pk = x25519_public(resp)
        ids = [str(i) for i in data.ids]
        sig = signer.sign(score_digest(self.model_id, ids, resp_pk))
        ep, iid = self.route
        key = client.attest(ep, iid)
        req = encode({"model_id": self.model_id, "ids": ids, "sig": sig, "resp_pk": resp_pk})  # type: ignore[dict-item]
        ct = HPKE_SUITE.encrypt(req, key.public_key, info=b"sml-score-rows")
        from sharelearn.tee.endpoint import call_endpoint

        out = call_endpoint(
            ep, {"op": "call", "instance": iid, "method": "score_rows", "arg": ct}, timeout=600
        )
        if not isinstance(out, bytes):
            raise ProtocolError("score_rows returned no ciphertext", peer=ep, tag="score_rows")
        msg = decode(
            HPKE_SUITE.decrypt(out, resp, info=b"sml-score-resp" + self.model_id.encode()),
            peer=ep,
            tag="scores",
        )
        return expect_array(msg["scores"], peer=ep, tag="scores", dtype=np.float64, shape=(len(ids),))  # type: ignore[index, call-overload]

    @property
    def aligned_rows(self) -> bool:
        return False  # the enclave joins the parties' rows on their ids itself

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {"model_id": self.model_id, "kind": self.kind, "route": list(self.route)}
        meta["history"] = {k: [float(v) for v in vals] for k, vals in self.history.items()}
        return meta, {"sealed": np.frombuffer(self.blob, dtype=np.uint8)}


def run_tee_train(ctx: StepContext, params: TeeTrainParams) -> dict[str, Any]:
    """The trainer (label holder) starts training in an enclave; every party gets the public summary."""
    _require_tee(ctx, "tee_train")
    session = ctx.tee
    if session is None:
        raise ConfigError("`tee_train` needs `tee_upload` before it")
    client = session.client
    trainer = _trainer(ctx)
    if ctx.party == trainer:
        _, route = _attested(client)
        arg: dict[str, Wire] = {
            "datasets": list[Wire](session.datasets),
            "model": params.model,
            "params": params.wire_params(),
            "memory_cap_mb": float(params.memory_cap_mb),
            "clients": list[Wire](params.clients),
            "line": f"{ctx.job or 'job'}/{ctx.step_index}",  # the model line its version grows in
        }
        ctx.progress(f"training {params.model} inside enclave {route[1]} (cap {params.memory_cap_mb} MB)", {})
        from sharelearn.tee.endpoint import call_endpoint

        out = call_endpoint(
            route[0], {"op": "call", "instance": route[1], "method": "train", "arg": arg}, timeout=3600
        )
        if not isinstance(out, dict):
            raise ProtocolError("train returned no summary", peer=route[0], tag="train")
        summary: dict[str, Any] = {k: v for k, v in out.items() if k not in ("model",)}
        summary["route"] = list(route)
        for peer in _others(ctx):
            ctx.link.send(peer, "tee/model", {"summary": summary, "model": out["model"]})
        blob = out["model"]
    else:
        got: Any = ctx.link.recv(trainer, "tee/model")
        if not isinstance(got, dict) or not isinstance(got.get("model"), bytes):
            raise ProtocolError("tee/model malformed", peer=trainer, tag="tee/model")
        summary, blob = got["summary"], got["model"]
    assert isinstance(summary, dict) and isinstance(blob, bytes)  # invariant: checked above
    history = {str(k): [float(v) for v in vals] for k, vals in dict(summary.get("history") or {}).items()}
    route_l = list(summary["route"])
    model = TeeModel(
        str(summary["model_id"]), blob, str(summary["kind"]), history, (str(route_l[0]), str(route_l[1]))
    )
    sealed = publish_model(ctx, model)
    own_rows = _keep_joined_rows(ctx, model)
    return {
        "model": str(summary["kind"]),
        "model_id": model.model_id,
        "rows": summary["rows"],
        "joined_rows": summary["rows"],
        "party_rows": summary.get("party_rows", {}),
        **({"label_holder_rows": own_rows} if own_rows is not None else {}),
        "blocks": summary["blocks"],
        "memory_cap_bytes": summary["memory_cap_bytes"],
        "data_bytes": summary["data_bytes"],
        "peak_bytes": summary["peak_bytes"],
        "enclave_train_s": round(float(summary["train_s"]), 4),
        "sealed_model": str(sealed),
        "simulation": session.simulation,
    }


def _keep_joined_rows(ctx: StepContext, model: TeeModel) -> int | None:
    """Partial overlap: the label holder keeps only its rows in the enclave's inner join.

    Later steps (evaluate, tee_serve) then score exactly the rows the model was trained on.
    Returns the label holder's row count before the join (None at the other parties).
    """
    scores = model.scores_in_join(ctx, ctx.data)
    if scores is None or ctx.data is None:
        return None
    before = len(ctx.data)
    keep = np.flatnonzero(~np.isnan(scores))
    if keep.shape[0] < before:
        ctx.data = ctx.data.take(keep)
        ctx.progress(f"the enclave joined {keep.shape[0]} of this party's {before} rows on ids", {})
    return before


def tee_baseline(params: TeeTrainParams, datasets: Mapping[str, BaselineData]) -> dict[str, float]:
    """The same library on the pooled data, outside any enclave, without a memory cap."""
    x, y = pool_vertical(datasets)
    p = params.algorithm_params()
    if params.model == "lr":
        scores = lr.baseline_scores(x, y, p)
    elif params.model == "gbdt":
        scores = gbdt.train_gbdt(InMemoryTable(x, y), p).predict_block(x)
    else:
        from sharelearn.algorithms.tee import xgboost as txgb

        scores = txgb.baseline_scores(x, y, p)
    return {"auc": float(roc_auc_score(y, scores))}


@dataclass(frozen=True, slots=True)
class TeeServeParams:
    """Parameters of `tee_serve`: scale out to `instances` and serve `requests` online predictions.

    Each request fuses every data party's own HPKE-encrypted feature part inside the enclave.
    """

    instances: int = 3
    requests: int = 200
    concurrency: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.instances <= 8:
            raise ConfigError(f"tee_serve.instances must be in 1..8, got {self.instances}")
        if not 1 <= self.requests <= 100_000:
            raise ConfigError(f"tee_serve.requests must be in 1..100000, got {self.requests}")
        if not 1 <= self.concurrency <= 64:
            raise ConfigError(f"tee_serve.concurrency must be in 1..64, got {self.concurrency}")


def run_tee_serve(ctx: StepContext, params: TeeServeParams) -> dict[str, Any]:
    """Scale the cluster out (key sync), load the sealed model everywhere, serve fused requests."""
    _require_tee(ctx, "tee_serve")
    model, session = ctx.model, ctx.tee
    if not isinstance(model, TeeModel) or session is None:
        raise ConfigError("`tee_serve` needs `tee_upload` and `tee_train` before it")
    trainer = _trainer(ctx)
    external = bool(ctx.tee_config)
    out = _load_everywhere(ctx, session, model, params.instances, trainer)
    announcer = trainer if external else _leader(ctx)
    if ctx.party == announcer:
        for peer in _others(ctx):
            ctx.link.send(peer, "tee/serving", True)
    else:
        ctx.link.recv(announcer, "tee/serving")
    if ctx.data is None:
        return out
    key, _ = _attested(session.client)
    if ctx.party == trainer:
        out |= _serve_as_trainer(ctx, session, model, key, params)
    else:
        ids_in = ctx.link.recv(trainer, "tee/serve_ids")
        if not isinstance(ids_in, list):
            raise ProtocolError("tee/serve_ids malformed", peer=trainer, tag="tee/serve_ids")
        ctx.link.send(
            trainer,
            "tee/serve_parts",
            _parts(ctx.data, [str(i) for i in ids_in], ctx.party, key, model.model_id),
        )
    out["simulation"] = session.simulation
    return out


def _load_everywhere(
    ctx: StepContext, session: TeeSession, model: TeeModel, instances: int, trainer: str
) -> dict[str, Any]:
    """Embedded default (at the leader): scale out to `instances` and load the model on each;
    a `tee:` cluster (at the trainer): load it on every routed instance. Else: nothing to do."""
    if session.embedded is not None:
        return {"instances": session.embedded.serve(model.blob, instances)}
    if ctx.tee_config and ctx.party == trainer:
        from sharelearn.tee.endpoint import call_endpoint

        routes = session.client.routes(fresh=True)
        for ep, iid, _ in routes:
            call_endpoint(ep, {"op": "call", "instance": iid, "method": "load_model", "arg": model.blob})
        return {"instances": len(routes)}
    return {}


def _serve_as_trainer(
    ctx: StepContext, session: TeeSession, model: TeeModel, key: AttestedClusterKey, params: TeeServeParams
) -> dict[str, Any]:
    """The label holder gathers every party's encrypted parts and sends the signed requests."""
    assert ctx.data is not None  # invariant: only data parties serve
    n = min(params.requests, len(ctx.data))
    ids = [str(i) for i in ctx.data.ids[:n]]
    peers = [p for p in ctx.data_parties if p != ctx.party]
    for peer in peers:
        ctx.link.send(peer, "tee/serve_ids", list[Wire](ids))
    parts: dict[str, list[Wire]] = {ctx.party: _parts(ctx.data, ids, ctx.party, key, model.model_id)}
    for peer in peers:
        got = ctx.link.recv(peer, "tee/serve_parts")
        if not isinstance(got, list) or len(got) != n:
            raise ProtocolError("tee/serve_parts malformed", peer=peer, tag="tee/serve_parts")
        parts[peer] = got
    signer = session.signer  # the label holder's, admitted by the model
    if signer is None:
        raise ConfigError(f"party {ctx.party!r} serves as trainer but holds no request-signing key")
    out = _serve_requests(session.client, model, parts, n, params.concurrency, signer)
    expected = model.predict(ctx, ctx.data.take(np.arange(n)))
    assert expected is not None  # invariant: the trainer holds the label and the signer
    out["max_abs_diff_vs_evaluate"] = float(np.max(np.abs(np.asarray(out.pop("scores")) - expected)))
    return out


def _parts(data: Dataset, ids: list[str], party: str, key: AttestedClusterKey, model_id: str) -> list[Wire]:
    """This party's feature row per request, HPKE-encrypted to the attested cluster key."""
    index = {str(i): k for k, i in enumerate(data.ids)}
    missing = [i for i in ids if i not in index]
    if missing:
        raise DataError(f"party {party!r} has no row for ids {missing[:5]}")
    info = b"sml-predict-part" + model_id.encode()
    return [
        HPKE_SUITE.encrypt(
            encode({"party": party, "x": data.x[index[i] : index[i] + 1]}), key.public_key, info=info
        )
        for i in ids
    ]


def _serve_requests(
    client: TeeClient,
    model: TeeModel,
    parts: Mapping[str, list[Wire]],
    n: int,
    concurrency: int,
    signer: Ed25519PrivateKey,
) -> dict[str, Any]:
    client_pk = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def one(i: int) -> tuple[float, float]:
        resp = X25519PrivateKey.generate()
        resp_pk = x25519_public(resp)

        def make(key: AttestedClusterKey) -> Wire:
            req: dict[str, Wire] = {
                "model_id": model.model_id,
                "parts": [parts[p][i] for p in parts],
                "resp_pk": resp_pk,
                "client_pk": client_pk,
            }
            req["sig"] = signer.sign(predict_digest(model.model_id, req))
            return HPKE_SUITE.encrypt(encode(req), key.public_key, info=b"sml-predict")

        t0 = time.perf_counter()
        ct, _ = client.call("predict", make)
        elapsed = time.perf_counter() - t0
        assert isinstance(ct, bytes)  # invariant: service contract (decryption authenticates it)
        msg = decode(HPKE_SUITE.decrypt(ct, resp, info=b"sml-predict-resp"), peer="enclave", tag="predict")
        scores = expect_array(msg["scores"], peer="enclave", tag="scores", dtype=np.float64, shape=(1,))  # type: ignore[index, call-overload]
        return elapsed, float(scores[0])

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    lat = np.array([r[0] for r in results]) * 1000
    return {
        "requests": n,
        "failed": 0,
        "retries": client.retries,
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "throughput_rps": round(n / wall, 1),
        "scores": [r[1] for r in results],
    }


TEE_UPLOAD_STEP = StepDef(
    "tee_upload", TeeUploadParams, run_tee_upload, "attest the enclave cluster and upload HPKE data envelopes"
)
TEE_TRAIN_STEP = StepDef(
    "tee_train",
    TeeTrainParams,
    run_tee_train,
    "train lr | gbdt | xgboost inside the enclave under a memory cap; model sealed to the cluster keys",
    baseline=tee_baseline,
)
TEE_SERVE_STEP = StepDef(
    "tee_serve",
    TeeServeParams,
    run_tee_serve,
    "online prediction by the enclave cluster (fused encrypted features)",
)

TEE_STEPS = (TEE_UPLOAD_STEP, TEE_TRAIN_STEP, TEE_SERVE_STEP)
