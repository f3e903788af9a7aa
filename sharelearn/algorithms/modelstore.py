"""Model files: one party's part of a model as a msgpack document (metadata + numpy arrays).

Never pickle: a model file may come from another organisation's pipeline, so it is decoded with the
same whitelisting codec as wire messages, and checked against the step that is meant to load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.core import codec
from sharelearn.core.errors import ConfigError, DataError, DecodeError
from sharelearn.core.fileio import atomic_write_bytes

__all__ = ["FORMAT", "load_model", "resolve_model_path", "save_model"]

FORMAT = "sharelearn-model/1"
# Model files are local and may hold large trees or embeddings: allow more than a wire message.
_LIMITS = codec.Limits(max_message_bytes=1 << 31, max_array_bytes=1 << 31)


def save_model(path: Path, step: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write a model part atomically: `meta` holds plain values, `arrays` numpy arrays."""
    doc: dict[str, Any] = {"format": FORMAT, "step": step, "meta": dict(meta), "arrays": dict(arrays)}
    return atomic_write_bytes(path, codec.encode(doc))


def load_model(path: Path, step: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a model part written by `save_model` for `step`; errors name the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"model file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        doc = codec.decode(data, peer=str(path), tag="model", limits=_LIMITS)
    except DecodeError as exc:
        raise DataError(f"model file {str(path)!r} is not a sharelearn model: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"model file {str(path)!r} is not a {FORMAT} document")
    if doc.get("step") != step:
        raise DataError(f"model file {str(path)!r} holds a {doc.get('step')!r} model, expected {step!r}")
    meta, arrays = doc.get("meta"), doc.get("arrays")
    if not isinstance(meta, dict) or not isinstance(arrays, dict):
        raise DataError(f"model file {str(path)!r}: malformed meta/arrays")
    if not all(isinstance(v, np.ndarray) for v in arrays.values()):
        raise DataError(f"model file {str(path)!r}: arrays must all be numpy arrays")
    return dict(meta), {str(k): v for k, v in arrays.items() if isinstance(v, np.ndarray)}


def resolve_model_path(template: str, *, party: str, job_dir: Path) -> Path:
    """Expand `{party}` in a model path template and resolve it against the job file's folder."""
    try:
        expanded = template.format(party=party)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"model path {template!r}: only the placeholder {{party}} is allowed") from exc
    path = Path(expanded)
    return path if path.is_absolute() else job_dir / path
