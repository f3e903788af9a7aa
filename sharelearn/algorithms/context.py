"""What a step's role function gets from the runtime: its link, data, parameters and a progress hook."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import numpy as np

from sharelearn.core.executor import Executor
from sharelearn.core.link import Link
from sharelearn.core.types import PartyId

if TYPE_CHECKING:  # only annotations name the TEE actors; importing this module starts nothing
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sharelearn.algorithms.package import ModelPackage
    from sharelearn.tee.cluster import TeeClient

__all__ = [
    "BaselineData",
    "Dataset",
    "EmbeddedTee",
    "Engine",
    "PartyIdentity",
    "Progress",
    "StepContext",
    "StepDef",
    "TeeSession",
    "TrainedModel",
]

Engine: TypeAlias = Literal["federated", "tee"]
Progress: TypeAlias = Callable[[str, Mapping[str, Any]], None]


class Dataset(Protocol):
    """A party's table: string ids, float features, optional float labels (runtime.data.PartyData).

    `weights` are the optional sample weights (the data block's `weight:` column); `categories`
    maps each categorical feature to its categories (the column holds codes into them); features
    are NaN only where the data block said `missing: allow`.
    """

    @property
    def ids(self) -> np.ndarray: ...

    @property
    def x(self) -> np.ndarray: ...

    @property
    def y(self) -> np.ndarray | None: ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    @property
    def source(self) -> Path: ...

    @property
    def weights(self) -> np.ndarray | None: ...

    @property
    def categories(self) -> Mapping[str, tuple[str, ...]]: ...

    def take(self, indices: np.ndarray) -> Dataset: ...

    def __len__(self) -> int: ...


@dataclass
class TeeSession:
    """One party's TEE state across the steps of a job (`tee_upload` opens it).

    Attributes:
        client: the attested client of the job's cluster manager.
        simulation: whether the cluster's evidence is simulated (reported by every TEE step).
        signer: the label holder's request-signing key (admitted by the models it trains).
        datasets: the envelope URLs the trainer hands to the enclave, in job order of parties.
        embedded: the embedded default cluster, at the job's leader; None with a `tee:` cluster.
    """

    client: TeeClient
    simulation: bool
    signer: Ed25519PrivateKey | None = None
    datasets: list[str] = field(default_factory=list)
    embedded: EmbeddedTee | None = None

    def close(self) -> None:
        """Stop the embedded services this party started (no-op with an external cluster)."""
        if self.embedded is not None:
            self.embedded.close()


@dataclass(frozen=True)
class PartyIdentity:
    """This party's mTLS identity (PEM): the job's CA, its certificate and its private key.

    Protocols that must bind a message to its sender across a relay (secure aggregation through
    the server) sign with this key; receivers check the certificate against the same CA.
    """

    party: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def _no_progress(message: str, metrics: Mapping[str, Any]) -> None:
    """The default progress hook: report nothing."""


class EmbeddedTee(Protocol):
    """The embedded default TEE cluster as the leader's steps see it (`algorithms.tee.embedded`):
    started in this process, or by the launcher and reached over its endpoints."""

    @property
    def cm_endpoint(self) -> str: ...

    @property
    def root_der(self) -> bytes: ...

    def serve(self, blob: bytes, instances: int) -> int:
        """Scale out to `instances` live enclaves, load the model `blob` on each; the live count."""
        ...

    def close(self) -> None: ...


@dataclass
class StepContext:
    """One party's view of a running job, handed to each step in turn.

    The runner (`algorithms.runner.run_party_steps`) builds one per party and job, re-scopes
    `link` for every step, and steps hand results to later steps through the typed fields below
    (never through a string-keyed bag).

    Attributes:
        link: the party's link (already scoped to the step).
        party: this party's name.
        roles: every party of the job and its role, in job order.
        data: this party's rows (aligned to the common ids once `psi` has run), or None.
        data_parties: parties that hold data, in job order.
        workdir: this party's own output folder.
        job_dir: the job file's folder; relative paths in step parameters are resolved against it.
        job: the job's name (model packages record it).
        run_id: this run's id, the same at every party (random per run; model ids derive from it).
        step_index: the place of the running step in the job (set by the runner).
        progress: report a line of progress (and optional metrics) to whoever runs the job.
        engine: the job's route: "federated" (HE / MPC protocols between the parties) or "tee".
        tee_config: the job's `tee:` block (an external enclave cluster), or None.
        aligned: True once `psi` ran and `data` holds this party's common rows in the common order.
        model: this party's part of the model the latest training (or `predict` loading) step left.
        package: that model's package (identity, feature schema), once published or loaded.
        tee: the TEE steps' shared session (cluster client, keys, embedded services), or None.
        tee_embedded: the embedded default TEE cluster this party's runner started (the leader of
            a TEE job with no `tee:` block; see `algorithms.tee.embedded`), or None.
        catalog: the steps of this run by name, so `predict` can find the loader of a saved model.
        executor: where this party's heavy kernels run (its `compute:` block); None: in the caller.
        identity: this party's certificate and key (set by the worker), or None.
        splits: after `split`: this party's rows by part ("all", "train", "validation", "test");
            `data` is then the train part, `evaluate` scores "test" and `predict` scores "all".
        preprocessing: the fitted preprocessing steps (`impute`, `scale`, `encode`) applied to
            `data` and `splits` so far, in order; `publish_model` stores them in the package.
    """

    link: Link
    party: PartyId
    roles: Mapping[PartyId, str]
    data: Dataset | None
    data_parties: Sequence[PartyId]
    workdir: Path
    job_dir: Path = Path(".")
    job: str = ""
    run_id: str = ""
    step_index: int = 0
    progress: Progress = _no_progress
    engine: Engine = "federated"
    tee_config: Mapping[str, Any] | None = None
    aligned: bool = False
    model: TrainedModel | None = None
    package: ModelPackage | None = None
    tee: TeeSession | None = None
    tee_embedded: EmbeddedTee | None = None
    catalog: Mapping[str, StepDef] = field(default_factory=dict)
    executor: Executor | None = None
    identity: PartyIdentity | None = None
    splits: dict[str, Dataset] = field(default_factory=dict)
    preprocessing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def role(self) -> str:
        return self.roles[self.party]


class TrainedModel(Protocol):
    """This party's part of a trained model, left in `ctx.model` by a training step.

    `evaluate` and `predict` drive it; every party of the job calls `predict` in the same step, so
    collaborative prediction is a protocol like any other (each party sends only what its role may).

    Attributes:
        step: the name of the step that trained it; that step's `StepDef.load` reads it back.
        task: "binary" (scores are P(y=1), shape (n,)), "multiclass" (probabilities, shape (n, k))
            or "regression" (predictions, shape (n,)).
        history: per-epoch (or per-round / per-tree) training curves, e.g. {"loss": [...]}; may be empty.
    """

    @property
    def step(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def history(self) -> Mapping[str, Sequence[float]]: ...

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        """Run this party's role of prediction on `data` (rows aligned across parties).

        Returns the scores at the party that may learn them (the label holder), None elsewhere.
        """
        ...

    @property
    def aligned_rows(self) -> bool:
        """Whether prediction pairs this party's rows with other parties' rows (vertical models).

        Such a model predicts only on rows that `psi` aligned; a horizontal model predicts on each
        party's own rows, and a TEE model joins rows on ids inside the enclave.
        """
        ...

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """This party's part only (never another party's secrets): plain values and arrays.

        `publish_model` wraps them in the party's model package; the step's `StepDef.load` reads
        them back from a `ModelPackage`.
        """
        ...


# A party's role and its table, as the launcher reads them for a centralised baseline.
BaselineData = tuple[str, Dataset]


@dataclass(frozen=True, slots=True)
class StepDef:
    """A step of the job format: its parameters type and the function every party runs for it.

    Attributes:
        load: for training steps, rebuild one party's model part from its checked package
            (`algorithms.package.load_package`; the model's `export` made its meta and arrays).
        baseline: for training steps, train the same model on the pooled data of every party
            (party -> (role, table), the launcher's view when all data is local) and return the
            metrics `evaluate` reports (e.g. {"auc": ...}); the report adds `<metric>_centralized`
            and `<metric>_delta`. Only ever run by a local launcher, never by a party.
        handles_missing: the step accepts rows with missing (NaN) feature values; for any other
            step the runner stops with a DataError asking for `impute` first.
    """

    name: str
    params: type
    run: Callable[[StepContext, Any], dict[str, Any]]
    summary: str = ""
    load: Callable[[ModelPackage], TrainedModel] | None = None
    baseline: Callable[[Any, Mapping[PartyId, BaselineData]], dict[str, float]] | None = None
    handles_missing: bool = False
