"""Model packages: one party's part of a trained model, with its schema and identity.

Every training step saves its part through `publish_model`, and every loader reads it through
`load_package`: one format (`sharelearn-package/1`, a msgpack document decoded by the wire codec,
never pickle) and one file name (`<workdir>/models/<step>.model`). A package holds:

- identity: the model id and version shared by every part of the same model (the parties agree on
  the id without a message: `model_id_for`), the step, the job, this party and its role, every party and role;
- the party's feature schema (names, order, dtypes), so features are matched by name at predict
  and serve time, never by position;
- the label classes (at the label holder), the preprocessing it was trained with, a fingerprint of
  the training rows, the model's own parameters (`meta`, `arrays`), and a SHA-256 digest of all of
  it that `load_package` checks.

Nothing crosses the wire while publishing (the parties derive the model id from the run's id);
`check_same_model` sends each party's (model id, version, step) to the first party of the job.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.algorithms.context import Dataset, StepContext, TrainedModel
from sharelearn.core import codec
from sharelearn.core.errors import DataError, DecodeError
from sharelearn.core.fileio import atomic_write_bytes
from sharelearn.core.messages import Message
from sharelearn.core.types import Wire

__all__ = [
    "FORMAT",
    "FeatureSchema",
    "ModelIdentity",
    "ModelPackage",
    "check_same_model",
    "data_fingerprint",
    "load_package",
    "model_id_for",
    "model_path",
    "publish_model",
    "save_package",
    "with_version",
]

FORMAT = "sharelearn-package/1"
# Packages are local files and may hold large trees or embeddings: allow more than a wire message.
_LIMITS = codec.Limits(max_message_bytes=1 << 31, max_array_bytes=1 << 31)


@dataclass(frozen=True, slots=True)
class FeatureSchema(Message):
    """A party's feature columns as the model was trained on them: names in order, and dtypes."""

    names: tuple[str, ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, data: Dataset) -> FeatureSchema:
        x = np.asarray(data.x)
        return cls(tuple(data.feature_names), tuple(str(x.dtype) for _ in data.feature_names))

    def align(self, data: Dataset, *, party: str) -> Dataset:
        """`data` with its feature columns in this schema's order, matched by name.

        Raises:
            DataError: a column the model needs is missing, or the table has columns it does not
                know (naming them, the party and the file).
        """
        have = list(data.feature_names)
        missing = [n for n in self.names if n not in have]
        extra = [n for n in have if n not in self.names]
        if missing or extra:
            raise DataError(
                f"party {party!r}: {data.source}: the model was trained on columns {list(self.names)}; "
                f"missing {missing}, not in the model {extra}"
            )
        if tuple(have) == self.names:
            return data
        order = np.asarray([have.index(n) for n in self.names], dtype=np.int64)
        return _Reordered(data, order, self.names)


@dataclass(frozen=True, slots=True)
class _Reordered:
    """A view of a table with its feature columns reordered (ids, labels and rows unchanged)."""

    base: Dataset
    order: np.ndarray
    names: tuple[str, ...]

    @property
    def ids(self) -> np.ndarray:
        return self.base.ids

    @property
    def x(self) -> np.ndarray:
        return np.asarray(self.base.x)[:, self.order]

    @property
    def y(self) -> np.ndarray | None:
        return self.base.y

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.names

    @property
    def source(self) -> Path:
        return self.base.source

    @property
    def weights(self) -> np.ndarray | None:
        return self.base.weights

    @property
    def categories(self) -> Mapping[str, tuple[str, ...]]:
        return self.base.categories

    def take(self, indices: np.ndarray) -> Dataset:
        return _Reordered(self.base.take(indices), self.order, self.names)

    def __len__(self) -> int:
        return len(self.base)


@dataclass(frozen=True, slots=True)
class ModelIdentity(Message):
    """Which model a part belongs to, and whose part it is.

    Attributes:
        model_id: shared by every part of one trained model (agreed when training ends).
        version: the model's version (1 for a freshly trained model).
        step: the training step that made it (its loader reads the package).
        job: the job that trained it.
        party / role: the party holding this part, and its role in the job.
        parties: every party of the model, with its role, in job order.
    """

    model_id: str
    version: int
    step: str
    job: str
    party: str
    role: str
    parties: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ModelPackage(Message):
    """One party's part of a model, with everything needed to use it safely later.

    Attributes:
        identity: which model this part belongs to, and whose part it is.
        task: "binary", "multiclass" or "regression".
        schema: the party's feature columns (None for a party without data, e.g. an arbiter).
        label_classes: the label values seen in training (at the label holder), else None.
        data_fingerprint: `data_fingerprint` of the training rows ("" without data).
        meta / arrays: the model's own parameters (`TrainedModel.export`).
        preprocessing: the fitted preprocessing steps, in order, applied before the model.
        created_at: Unix time of training.
    """

    identity: ModelIdentity
    task: str
    schema: FeatureSchema | None
    label_classes: tuple[float, ...] | None
    data_fingerprint: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    preprocessing: tuple[dict[str, Any], ...] = ()
    created_at: float = field(default_factory=time.time)

    @property
    def digest(self) -> str:
        """SHA-256 of the package's wire form (what `save_package` stores beside it)."""
        return hashlib.sha256(codec.encode(self.to_wire())).hexdigest()


def model_path(workdir: Path, step: str) -> Path:
    """Where a party keeps its part of the model of `step`: `<workdir>/models/<step>.model`."""
    return workdir / "models" / f"{step}.model"


def save_package(path: Path, package: ModelPackage) -> Path:
    """Write a package atomically (its fields, the format and the digest); return the path."""
    doc: dict[str, Wire] = {"format": FORMAT, "digest": package.digest, "package": package.to_wire()}
    return atomic_write_bytes(path, codec.encode(doc))


def load_package(path: Path, *, party: str | None = None, step: str | None = None) -> ModelPackage:
    """Read and check a package: format, digest, and (when given) that it is `party`'s part of `step`.

    Raises:
        DataError: naming the file, for anything that is not an intact package of that party/step.
    """
    where = f"model file {str(path)!r}"
    try:
        doc = codec.decode(Path(path).read_bytes(), peer=str(path), tag="model", limits=_LIMITS)
    except OSError as exc:
        raise DataError(f"{where}: {exc.strerror or exc}") from exc
    except DecodeError as exc:
        raise DataError(f"{where} is not a sharelearn model package: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{where} is not a {FORMAT} document")
    try:
        package = ModelPackage.from_wire(doc.get("package"), peer=str(path), tag="package")
    except DecodeError as exc:
        raise DataError(f"{where}: malformed package: {exc}") from exc
    if doc.get("digest") != package.digest:
        raise DataError(f"{where}: digest mismatch: the file was changed after it was written")
    ident = package.identity
    if party is not None and ident.party != party:
        raise DataError(f"{where} holds party {ident.party!r}'s part of the model, not {party!r}'s")
    if step is not None and ident.step != step:
        raise DataError(f"{where} holds a {ident.step!r} model, expected {step!r}")
    return package


def data_fingerprint(data: Dataset | None) -> str:
    """A SHA-256 over a table's ids, feature names and values: which rows a model was trained on."""
    if data is None:
        return ""
    h = hashlib.sha256()
    h.update(codec.encode([list(data.feature_names), [str(i) for i in data.ids]]))
    h.update(np.ascontiguousarray(np.asarray(data.x, dtype=np.float64)).tobytes())
    if data.y is not None:
        h.update(np.ascontiguousarray(np.asarray(data.y, dtype=np.float64)).tobytes())
    return h.hexdigest()


def model_id_for(ctx: StepContext, step: str) -> str:
    """The id of the model step number `ctx.step_index` of this run trains: the same at every party.

    Derived from the run's id (random per run, given to every party by whoever starts the job)
    and the step's place in the job, so the parties agree without a message.
    """
    digest = hashlib.sha256(f"sharelearn-model|{ctx.run_id}|{ctx.step_index}|{step}".encode()).hexdigest()
    return digest[:32]


def publish_model(ctx: StepContext, model: TrainedModel, *, version: int = 1) -> Path:
    """Make `model` this party's current model and save its package; every party calls it together."""
    meta, arrays = model.export()
    y = None if ctx.data is None else ctx.data.y
    identity = ModelIdentity(
        model_id=model_id_for(ctx, model.step),
        version=version,
        step=model.step,
        job=ctx.job,
        party=ctx.party,
        role=ctx.role,
        parties=tuple(ctx.roles.items()),
    )
    package = ModelPackage(
        identity=identity,
        task=model.task,
        schema=None if ctx.data is None else FeatureSchema.of(ctx.data),
        label_classes=None if y is None else tuple(float(c) for c in np.unique(np.asarray(y))),
        data_fingerprint=data_fingerprint(ctx.data),
        meta=meta,
        arrays=arrays,
        preprocessing=_preprocessing(ctx),
    )
    ctx.model = model
    ctx.package = package
    return save_package(model_path(ctx.workdir, model.step), package)


def _preprocessing(ctx: StepContext) -> tuple[dict[str, Any], ...]:
    """The fitted preprocessing, after the training categories of columns still held as codes."""
    steps = tuple(ctx.preprocessing)
    if ctx.data is not None and ctx.data.categories:
        codes = {"kind": "categories", "columns": {k: list(v) for k, v in ctx.data.categories.items()}}
        steps = (codes, *steps)
    return steps


def check_same_model(ctx: StepContext, package: ModelPackage) -> None:
    """Every party checks that every other party loaded a part of the same model and version.

    Each party sends (model id, version, step) to the first party of the job, which answers with
    the name of the first party whose part differs (or nothing); every party then raises the same
    error. Reveals: the model ids, which every party of the model already knows.
    """
    leader = next(iter(ctx.roles))
    link = ctx.link.scope("same_model")
    mine = [package.identity.model_id, package.identity.version, package.identity.step]
    if ctx.party != leader:
        link.send(leader, "identity", mine)  # type: ignore[arg-type]
        verdict = link.recv(leader, "verdict")
    else:
        odd = [p for p in ctx.roles if p != leader and link.recv(p, "identity") != mine]
        verdict = odd[0] if odd else ""
        for peer in ctx.roles:
            if peer != leader:
                link.send(peer, "verdict", verdict)
    if verdict:
        raise DataError(
            f"party {verdict!r} loaded a part of another model or version than party {leader!r} "
            f"(model {mine[0]} version {mine[1]}, step {mine[2]}); every party must load the same model"
        )


def with_version(package: ModelPackage, version: int) -> ModelPackage:
    """A copy of `package` under another version (the registry assigns versions)."""
    return replace(package, identity=replace(package.identity, version=version))
