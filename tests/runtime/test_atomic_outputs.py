from __future__ import annotations

import errno
from pathlib import Path
from typing import BinaryIO

import pytest

from sharelearn.core.errors import DataError
from sharelearn.core.fileio import TMP_GLOB, OutputWriteError, atomic_write, atomic_write_text


def _fill_then(exc: BaseException) -> object:
    def writer(fh: BinaryIO) -> None:
        fh.write(b"half of the output")
        raise exc

    return writer


def test_an_injected_enospc_is_a_data_error_naming_the_file_and_leaves_the_old_file(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "model.json", "old")

    with pytest.raises(OutputWriteError, match=r"model\.json.*No space left on device") as info:
        atomic_write(target, _fill_then(OSError(errno.ENOSPC, "No space left on device")))  # type: ignore[arg-type]

    assert isinstance(info.value, DataError)
    assert target.read_text() == "old"
    assert not list(tmp_path.glob(TMP_GLOB))


@pytest.mark.parametrize("exc", [SystemExit(143), KeyboardInterrupt(), OSError(errno.EIO, "I/O error")])
def test_an_interrupted_write_leaves_neither_a_tmp_nor_an_empty_file(
    tmp_path: Path, exc: BaseException
) -> None:
    with pytest.raises(type(exc)):
        atomic_write(tmp_path / "out.csv", _fill_then(exc))  # type: ignore[arg-type]

    assert list(tmp_path.iterdir()) == []
