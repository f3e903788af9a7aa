"""The host serving process: partial results of its part of a model, for the ids the guest asks for.

The host holds its model packages (a folder of `*.model` files) and a feature provider. The guest
calls `Partial(model, version, ids)`; the host looks the ids up, computes its part's per-row
partial results (`scoring.HostScorer.partial`) and returns them with the positions of the ids it
does not know. It answers only parties of the model (mTLS certificate names) and only versions it
has loaded: `Load` reads a version from its folder (phase one of a switch), `Activate` records
which version the guest now serves (phase two), `Status` reports both.

What the host learns: the ids asked for and when, the model version in use. It sends only partial
results of its own part (see `scoring`), never a feature.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.algorithms.package import ModelPackage, load_package
from sharelearn.core.codec import expect_type
from sharelearn.core.errors import ConfigError, DataError
from sharelearn.runtime.serving.providers import FeatureProvider
from sharelearn.runtime.serving.scoring import HostScorer, host_scorer

__all__ = ["HostService", "check_started", "find_package"]

MAX_IDS = 100_000  # a bound on one request's ids, whatever the guest's batch cap


def find_package(folder: Path, *, party: str, model_id: str, version: int | None) -> ModelPackage:
    """This party's package of `model_id` in `folder` (`version`, or the newest); DataError naming them."""
    found: list[ModelPackage] = []
    for path in sorted(Path(folder).glob("*.model")):
        try:
            pkg = load_package(path)
        except DataError:
            continue  # another file in the folder; a broken package of *this* model is reported below
        ident = pkg.identity
        if ident.model_id == model_id and ident.party == party and version in (None, ident.version):
            found.append(pkg)
    if not found:
        which = "any version" if version is None else f"version {version}"
        raise DataError(f"party {party!r}: no package of model {model_id} {which} in {folder}")
    return max(found, key=lambda p: p.identity.version)


@dataclass
class HostService:
    """A host's serving state: its loaded versions of one model, its provider, the active version."""

    party: str
    model_id: str
    folder: Path
    provider: FeatureProvider
    versions: dict[int, HostScorer] = field(default_factory=dict)
    active: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self, version: int | None) -> HostScorer:
        """Load (or find loaded) `version` (None: the newest in the folder); check the provider's columns."""
        if version is not None and version in self.versions:
            return self.versions[version]
        pkg = find_package(self.folder, party=self.party, model_id=self.model_id, version=version)
        scorer = host_scorer(pkg)
        missing = [n for n in scorer.names if n not in self.provider.columns]
        if missing:
            raise DataError(f"party {self.party!r}: the feature source lacks columns {missing} of the model")
        with self._lock:
            self.versions[pkg.identity.version] = scorer
            if self.active is None:
                self.active = pkg.identity.version
        return scorer

    @property
    def allowed(self) -> set[str]:
        """Parties whose certificates may call: every party of the model."""
        return {p for s in self.versions.values() for p, _ in s.package.identity.parties}

    def _scorer(self, doc: dict[str, Any]) -> HostScorer:
        model = expect_type(doc.get("model"), str, peer="guest", tag="model")
        version = expect_type(doc.get("version"), int, peer="guest", tag="version")
        if model != self.model_id:
            raise DataError(f"host {self.party!r} serves model {self.model_id}, not {model}")
        scorer = self.versions.get(version)
        if scorer is None:
            raise DataError(
                f"host {self.party!r} has not loaded version {version} of model {model} "
                f"(loaded: {sorted(self.versions)}); load it on every party before switching"
            )
        return scorer

    def partial(self, doc: dict[str, Any], caller: str) -> dict[str, Any]:
        scorer = self._scorer(doc)
        ids = expect_type(doc.get("ids"), list, peer=caller, tag="ids")
        if len(ids) > MAX_IDS or not all(isinstance(i, str) for i in ids):
            raise DataError(f"host {self.party!r}: ids must be at most {MAX_IDS} strings")
        x, unknown = self.provider.lookup(ids, scorer.names)
        out = scorer.partial(np.where(unknown[:, None], 0.0, x))
        return {"partial": out, "unknown": np.flatnonzero(unknown).astype(np.int64)}

    def rpc_load(self, doc: dict[str, Any], caller: str) -> dict[str, Any]:
        version = expect_type(doc.get("version"), int, peer=caller, tag="version")
        scorer = self.load(version)
        return {"version": version, "digest": scorer.package.digest}

    def rpc_activate(self, doc: dict[str, Any], caller: str) -> dict[str, Any]:
        scorer = self._scorer(doc)
        with self._lock:
            self.active = scorer.package.identity.version
        return {"active": self.active}

    def rpc_status(self, doc: dict[str, Any], caller: str) -> dict[str, Any]:
        return {
            "party": self.party,
            "model": self.model_id,
            "active": self.active,
            "loaded": sorted(self.versions),
        }

    def handlers(self) -> dict[str, Any]:
        return {
            "Partial": self.partial,
            "Load": self.rpc_load,
            "Activate": self.rpc_activate,
            "Status": self.rpc_status,
        }


def check_started(service: HostService) -> None:
    if not service.versions:
        raise ConfigError(f"host {service.party!r}: no version of model {service.model_id} loaded")
