"""Atomic file writes: a crash leaves either the old file or the new one, never half of one.

A write that fails (a full disk, a quota, a signal) removes its temp file, so neither a 0-byte
artifact nor a `.tmp` is left behind. A full disk or quota raises `OutputWriteError` (a
`DataError`: exit code 3) naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from sharelearn.core.errors import DataError

__all__ = [
    "TMP_GLOB",
    "OutputWriteError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]

TMP_GLOB = ".*.tmp"  # the temp files `atomic_write` makes (and removes)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OutputWriteError(DataError):
    """An output file could not be written because its file system is full (or over quota)."""


def atomic_write(path: Path | str, writer: Callable[[BinaryIO], None]) -> Path:
    """Write `path` by calling `writer` on a temp file in the same folder, then `os.replace`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise OutputWriteError(f"{target}: cannot write it: {os.strerror(exc.errno)}") from exc
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            raise OutputWriteError(f"{target}: cannot write it: {os.strerror(exc.errno)}") from exc
        raise
    return target


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    def write(fh: BinaryIO) -> None:
        fh.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
