"""Inside the enclave: join several parties' envelopes on ids under a memory cap (EPC stand-in).

`MemoryBudget` is the data accountant of TEE.md §2.4: every buffer of row data the training code
holds is reserved against `memory_cap_mb`, and a reservation beyond the cap raises, so algorithms
must stream. (It caps data buffers, not the interpreter: it is not a performance model of EPC
paging, only a hard limit that forces external-memory algorithms.)

`JoinedTable.build` inner-joins feature-split tables without ever holding a whole table (partial
overlap is the normal case: rows without a match in every party are dropped, and the joined
size and each party's size are reported):
1. one streaming pass per envelope collects keyed 64-bit hashes of the ids (8 bytes/row) and
   intersects them; the common rows, sorted by hash, get row numbers;
2. a second pass scatters each party's rows into per-block spill files;
3. each block is assembled from every party's pieces (columns in party order, the label from the
   label holder) and written back as one joined block.
Spilled data lives on untrusted disk, so every record is AES-256-GCM encrypted under a key derived
inside the enclave, with (file, record number) in the AAD; the host sees only sizes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sharelearn.core.codec import decode, encode, expect_array
from sharelearn.core.errors import ConfigError, CryptoError, DataError
from sharelearn.tee.envelope import EnvelopeReader

__all__ = ["BlockSource", "InMemoryTable", "JoinedTable", "MemoryBudget", "SpillStore", "block_rows_for"]


class MemoryBudget:
    """Accounts row-data buffers against a cap; `hold` raises DataError when it would be exceeded."""

    def __init__(self, cap_bytes: int) -> None:
        if cap_bytes <= 0:
            raise ConfigError(f"memory_cap_mb must be > 0, got {cap_bytes} bytes")
        self.cap = cap_bytes
        self.used = 0
        self.peak = 0

    @contextmanager
    def hold(self, nbytes: int, what: str) -> Iterator[None]:
        self.reserve(nbytes, what)
        try:
            yield
        finally:
            self.release(nbytes)

    def reserve(self, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.cap:
            raise DataError(
                f"enclave memory cap exceeded: {what} needs {nbytes} bytes, {self.used} of {self.cap} in use "
                "(raise memory_cap_mb or lower the block size)"
            )
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def release(self, nbytes: int) -> None:
        self.used -= nbytes


def block_rows_for(cap_bytes: int, n_features: int, *, share: float = 0.2) -> int:
    """Rows per block so that one float64 block uses about `share` of the cap."""
    return max(32, int(cap_bytes * share) // (8 * max(1, n_features + 1)))


@dataclass
class SpillStore:
    """Encrypted append-only record files in an enclave-private scratch directory on untrusted disk."""

    key: bytes = field(repr=False)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sml-spill-")))
    _counts: dict[str, int] = field(default_factory=dict)
    written: int = 0

    def append(self, name: str, payload: bytes) -> None:
        seq = self._counts.get(name, 0)
        self._counts[name] = seq + 1
        nonce = os.urandom(12)
        ct = AESGCM(self.key).encrypt(nonce, payload, f"{name}#{seq}".encode())
        with open(self.root / name, "ab") as fh:
            fh.write(struct.pack(">I", len(ct)) + nonce + ct)
        self.written += len(ct)

    def records(self, name: str) -> Iterator[bytes]:
        path = self.root / name
        if not path.exists():
            return
        with open(path, "rb") as fh:
            seq = 0
            while head := fh.read(4):
                (n,) = struct.unpack(">I", head)
                nonce, ct = fh.read(12), fh.read(n)
                try:
                    yield AESGCM(self.key).decrypt(nonce, ct, f"{name}#{seq}".encode())
                except InvalidTag as exc:
                    raise CryptoError(f"spilled record {name}#{seq} was modified on disk") from exc
                seq += 1
        if seq != self._counts.get(name, 0):
            raise CryptoError(
                f"spill file {name}: {seq} records on disk, {self._counts.get(name, 0)} written"
            )

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)
        self._counts.pop(name, None)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class BlockSource(Protocol):
    """What the streaming trainers read: row blocks in a fixed order, a budget and a spill store."""

    budget: MemoryBudget
    spill: SpillStore
    block_rows: int

    @property
    def n_rows(self) -> int: ...

    @property
    def n_features(self) -> int: ...

    @property
    def n_blocks(self) -> int: ...

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


def _hash_ids(ids: Sequence[str], salt: bytes) -> np.ndarray:
    out = np.empty(len(ids), dtype=np.uint64)
    for i, s in enumerate(ids):  # ids arrive as text; one keyed hash each, no crypto hot path
        out[i] = int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8, key=salt).digest(), "little")
    return out


@dataclass
class JoinedTable:
    """The joined rows of every party, as encrypted spilled blocks of `block_rows` rows."""

    spill: SpillStore
    budget: MemoryBudget
    row_hashes: np.ndarray  # sorted keyed hashes of the common ids (row order)
    salt: bytes = field(repr=False)
    block_rows: int
    n_blocks: int
    features: tuple[str, ...]
    parties: tuple[str, ...]
    widths: tuple[int, ...]
    positives: int = 0
    party_rows: tuple[int, ...] = ()  # each party's rows before the join

    @property
    def n_rows(self) -> int:
        return int(self.row_hashes.shape[0])

    @property
    def n_features(self) -> int:
        return len(self.features)

    @classmethod
    def build(
        cls,
        readers: Sequence[EnvelopeReader],
        budget: MemoryBudget,
        spill: SpillStore,
        *,
        block_rows: int = 0,
    ) -> JoinedTable:
        """Inner-join the envelopes' tables on ids (exactly one of them must carry the label).

        Rows of a party without a match in every other party are dropped; `n_rows` is the
        joined size and `party_rows` each party's size before the join.
        """
        _one_label_holder(readers)
        salt = os.urandom(16)
        features = tuple(f"{r.header.owner}.{f}" for r in readers for f in r.header.features)
        if block_rows <= 0:
            block_rows = block_rows_for(budget.cap, len(features))
        common, sizes = _common_ids(readers, budget, salt)
        n_blocks = -(-common.shape[0] // block_rows)
        for p, r in enumerate(readers):
            _scatter(r, p, common, salt, block_rows, budget, spill)
        widths = tuple(len(r.header.features) for r in readers)
        positives = sum(
            _assemble(k, common.shape[0], block_rows, widths, budget, spill) for k in range(n_blocks)
        )
        return cls(
            spill,
            budget,
            common,
            salt,
            block_rows,
            n_blocks,
            features,
            tuple(r.header.owner for r in readers),
            widths,
            positives,
            sizes,
        )

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (x, y) joined blocks in row order, each held against the budget while in use."""
        for k in range(self.n_blocks):
            (rec,) = list(self.spill.records(f"joined_{k}"))
            msg = decode(rec, peer="spill", tag=f"joined_{k}")
            assert isinstance(msg, dict)  # invariant: written by this enclave, authenticated
            x = expect_array(msg["x"], peer="spill", tag="x", dtype=np.float64)
            y = expect_array(msg["y"], peer="spill", tag="y", dtype=np.float64)
            with self.budget.hold(x.nbytes + y.nbytes, f"joined block {k}"):
                yield x, y

    def rows_of_ids(self, ids: Sequence[str]) -> np.ndarray:
        """Row numbers of `ids` in the joined table (-1 where an id is not in the join)."""
        h = _hash_ids(ids, self.salt)
        pos = np.searchsorted(self.row_hashes, h)
        pos[pos >= self.n_rows] = 0
        return np.where(self.row_hashes[pos] == h, pos, -1).astype(np.int64)


def _one_label_holder(readers: Sequence[EnvelopeReader]) -> None:
    labelled = [r.header.dataset for r in readers if r.has_label]
    if len(labelled) != 1:
        raise DataError(f"in-enclave join needs exactly one labelled dataset, got {labelled}")


def _common_ids(
    readers: Sequence[EnvelopeReader], budget: MemoryBudget, salt: bytes
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Pass 1 (ids only): the sorted keyed hashes of the ids every party has, and each party's size."""
    common: np.ndarray | None = None
    sizes: list[int] = []
    for r in readers:
        hashes = [_hash_ids(b.ids, salt) for b in r.blocks()]
        mine = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
        sizes.append(int(mine.shape[0]))
        budget.reserve(mine.nbytes, f"ids of {r.header.dataset}")
        if np.unique(mine).shape[0] != mine.shape[0]:
            raise DataError(f"dataset {r.header.dataset!r} of {r.header.owner!r} has duplicate ids")
        before = 0 if common is None else common.nbytes
        common = mine if common is None else np.intersect1d(common, mine, assume_unique=True)
        budget.release(mine.nbytes + before - common.nbytes)
    assert common is not None  # invariant: readers is non-empty (one labelled)
    if common.shape[0] == 0:
        owners = [r.header.owner for r in readers]
        raise DataError(
            f"the parties' datasets have no id in common (rows: {dict(zip(owners, sizes, strict=True))})"
        )
    return np.sort(common), tuple(sizes)


def _scatter(
    r: EnvelopeReader,
    p: int,
    common: np.ndarray,
    salt: bytes,
    block_rows: int,
    budget: MemoryBudget,
    spill: SpillStore,
) -> None:
    """Pass 2: scatter party `p`'s joined rows into per-block spill files (unmatched rows dropped)."""
    for b in r.blocks():
        with budget.hold(
            b.x.nbytes + len(b.ids) * 16,
            f"an envelope chunk of {r.header.dataset} ({len(b.ids)} rows; upload with fewer chunk_rows)",
        ):
            h = _hash_ids(b.ids, salt)
            pos = np.searchsorted(common, h)
            pos[pos >= common.shape[0]] = 0
            keep = common[pos] == h
            rows = pos[keep].astype(np.int64)
            x, y = b.x[keep], None if b.y is None else b.y[keep]
            blk = rows // block_rows
            for k in np.unique(blk):
                sel = blk == k
                msg: dict[str, object] = {"rows": rows[sel], "x": x[sel]}
                if y is not None:
                    msg["y"] = y[sel]
                spill.append(f"p{p}_b{int(k)}", encode(msg))  # type: ignore[arg-type]


def _assemble(
    k: int, n_rows: int, block_rows: int, widths: Sequence[int], budget: MemoryBudget, spill: SpillStore
) -> int:
    """Pass 3: assemble joined block `k` from every party's pieces; return its positive labels."""
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    lo = k * block_rows
    n = min(block_rows, n_rows - lo)
    with budget.hold(2 * n * (int(offsets[-1]) + 1) * 8, "joined block"):
        xb = np.zeros((n, int(offsets[-1])))
        yb = np.full(n, np.nan)
        for p in range(len(widths)):
            name = f"p{p}_b{k}"
            for rec in spill.records(name):
                msg = decode(rec, peer="spill", tag=name)
                assert isinstance(msg, dict)  # invariant: written by this enclave, authenticated
                rows = expect_array(msg["rows"], peer="spill", tag=name, dtype=np.int64) - lo
                xb[rows, offsets[p] : offsets[p + 1]] = expect_array(
                    msg["x"], peer="spill", tag=name, dtype=np.float64
                )
                if "y" in msg:
                    yb[rows] = expect_array(msg["y"], peer="spill", tag=name, dtype=np.float64)
            spill.remove(name)
        if np.isnan(yb).any():
            raise DataError("in-enclave join: some joined rows have no label")
        spill.append(f"joined_{k}", encode({"x": xb, "y": yb}))
        return int((yb > 0.5).sum())


class InMemoryTable:
    """A pooled table held in memory as one block (the outside-the-enclave baseline and tests)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, *, block_rows: int | None = None) -> None:
        self.x, self.y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.block_rows = block_rows or max(1, self.x.shape[0])
        self.budget = MemoryBudget(1 << 62)
        self.spill = SpillStore(os.urandom(32))

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block_rows)

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for lo in range(0, self.n_rows, self.block_rows):
            yield self.x[lo : lo + self.block_rows], self.y[lo : lo + self.block_rows]
