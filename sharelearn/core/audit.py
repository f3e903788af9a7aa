"""The wire audit: a record of every message a party received, and leak scans over it.

Every message delivered to an inbox is recorded as (src, dst, tag, nbytes) and, when payloads are
kept, its bytes. `count_leaks` looks for byte patterns of secret values (ids, features, labels) in
what one party received. A value is searched in each of its plain encodings: UTF-8 text, the
msgpack string, and 8-byte little-endian int64 / float64. Patterns shorter than `MIN_PATTERN_LEN`
bytes are skipped: a 3-byte pattern turns up by chance in a few megabytes of ciphertext.

`sample_leaks` is the cheap default check of a run: it scans the received bytes in a random
(unpredictable to the parties) order, one 1 MiB piece at a time, and stops when its time budget is
spent, saying how many bytes it covered. `count_leaks` is the exhaustive scan (`--audit full`).

The record is bounded: past `payload_cap` bytes from one sender to one receiver only a digest and
a short sample of each message are kept, and `save` writes the file atomically with mode 0600 (it
holds what the party received).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgpack
import numpy as np

from sharelearn.core.fileio import atomic_write

__all__ = [
    "DEFAULT_PAYLOAD_CAP",
    "MIN_PATTERN_LEN",
    "SAMPLE_BYTES",
    "SAMPLE_CAP",
    "SAMPLE_SECRETS",
    "LeakSample",
    "Message",
    "WireAudit",
    "byte_patterns",
    "sample_leaks",
    "scan",
]

log = logging.getLogger(__name__)

MIN_PATTERN_LEN = 6
# Per (sender, receiver): far above what a test moves, and what a leak scan can search quickly.
DEFAULT_PAYLOAD_CAP = 64 << 20
SAMPLE_BYTES = 256
SAMPLE_CAP = 1 << 20
_CHUNK = 1 << 20
SAMPLE_SECRETS = 4096  # ids a sampled audit searches for: a leak of 0.1% of 100k ids is seen 98% of the time


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message; `digest` (BLAKE2b-128) is set when only a sample of it was kept."""

    src: str
    dst: str
    tag: str
    nbytes: int
    digest: bytes = b""

    @property
    def complete(self) -> bool:
        return not self.digest


def byte_patterns(value: object) -> set[bytes]:
    """Return the byte strings under which `value` could cross the wire in plain form."""
    pats: set[bytes] = set()
    if isinstance(value, bytes):
        pats.add(value)
    elif isinstance(value, str):
        raw = value.encode()
        pats.add(raw)
        pats.add(msgpack.packb(value))
    elif isinstance(value, bool | np.bool_):
        return pats
    elif isinstance(value, int | np.integer):
        v = int(value)
        pats.add(str(v).encode())
        if -(2**63) <= v < 2**63:
            pats.add(struct.pack("<q", v))
            pats.add(struct.pack("<d", float(v)))
    elif isinstance(value, float | np.floating):
        pats.add(struct.pack("<d", float(value)))
        pats.add(struct.pack(">d", float(value)))  # msgpack floats are big-endian
    return {p for p in pats if len(p) >= MIN_PATTERN_LEN}


class _PrefixScanner:
    """Finds byte patterns in a buffer with one sorted search of 8-byte keys per offset.

    Every window of the buffer is read as a little-endian uint64 (8 zero-copy views, one per
    alignment); a pattern's key is its first 8 bytes (fewer, masked, for a shorter pattern). A
    window whose key is in the sorted table is a candidate, confirmed by comparing the bytes.
    """

    def __init__(self, patterns: Iterable[bytes]) -> None:
        by_len: dict[int, set[bytes]] = {}
        for p in patterns:
            by_len.setdefault(len(p), set()).add(p)
        self.groups = []
        for length, pats in sorted(by_len.items()):
            width = min(length, 8)
            keys = np.unique(np.array([int.from_bytes(p[:width], "little") for p in pats], dtype=np.uint64))
            mask = np.uint64((1 << (8 * width)) - 1)
            self.groups.append((length, keys, mask, pats))
        self.longest = max(by_len, default=1)

    def find(self, data: bytes) -> set[bytes]:
        """The patterns that occur in `data`."""
        found: set[bytes] = set()
        padded = data + bytes(8)
        for length, keys, mask, pats in self.groups:
            for offset in range(8):
                words = np.frombuffer(padded, dtype="<u8", offset=offset, count=(len(padded) - offset) // 8)
                if length < 8:
                    words = words & mask
                at = np.minimum(np.searchsorted(keys, words), len(keys) - 1)
                for k in np.flatnonzero(keys[at] == words):
                    pos = offset + 8 * int(k)
                    if pos + length <= len(data) and data[pos : pos + length] in pats:
                        found.add(data[pos : pos + length])
        return found


def _pieces(payloads: Iterable[bytes], overlap: int) -> list[tuple[int, int, int]]:
    """(payload index, start, end) of ≤ `_CHUNK`-byte pieces overlapping by `overlap` bytes."""
    out = []
    for i, payload in enumerate(payloads):
        for start in range(0, max(len(payload) - overlap, 1), _CHUNK):
            out.append((i, start, min(len(payload), start + _CHUNK + overlap)))
    return out


def scan(payloads: Iterable[bytes], patterns: Iterable[bytes]) -> set[bytes]:
    """Return the patterns that occur in any payload (vectorised: sorted 8-byte key searches)."""
    scanner = _PrefixScanner(patterns)
    if not scanner.groups:
        return set()
    data = list(payloads)
    found: set[bytes] = set()
    for i, start, end in _pieces(data, scanner.longest - 1):
        found |= scanner.find(data[i][start:end])
    return found


@dataclass(frozen=True, slots=True)
class LeakSample:
    """A budgeted leak scan: secrets found among `checked` of `secrets` in `scanned` of `total` bytes."""

    leaks: int
    scanned: int
    total: int
    checked: int = 0
    secrets: int = 0


def sample_leaks(
    payloads: list[bytes],
    secrets: Iterable[object],
    budget_s: float,
    *,
    rng: random.Random | None = None,
    max_secrets: int = SAMPLE_SECRETS,
) -> LeakSample:
    """Scan random 1 MiB pieces of `payloads` for `secrets` until `budget_s` seconds are spent.

    At most `max_secrets` secrets, drawn at random, are searched for. The draws come from the OS
    CSPRNG (a party cannot tell which bytes or ids will be looked at); at least one piece is
    scanned. Every secret found is a real leak; a zero covers `scanned` bytes and `checked` ids.
    """
    values = list(secrets)
    n_secrets = len(values)
    chooser = rng or random.SystemRandom()
    if len(values) > max_secrets:
        values = chooser.sample(values, max_secrets)
    owners: dict[bytes, int] = {}
    for i, v in enumerate(values):
        for p in byte_patterns(v):
            owners.setdefault(p, i)
    scanner = _PrefixScanner(owners)
    overlap = scanner.longest - 1
    pieces = _pieces(payloads, overlap)
    chooser.shuffle(pieces)
    deadline = time.perf_counter() + budget_s
    found: set[bytes] = set()
    scanned = 0
    for index, (i, start, end) in enumerate(pieces):
        if index and time.perf_counter() >= deadline:
            break
        found |= scanner.find(payloads[i][start:end])
        scanned += end - start - (overlap if end < len(payloads[i]) else 0)
    total = sum(len(p) for p in payloads)
    return LeakSample(len({owners[p] for p in found}), scanned, total, len(values), n_secrets)


class WireAudit:
    """Thread-safe record of delivered messages; keeps payloads when `keep_payloads` is set.

    Payloads are kept up to `payload_cap` bytes per (sender, receiver) pair (None: no cap). Past
    it a message is recorded by its size, a BLAKE2b digest and its first `SAMPLE_BYTES` bytes (up
    to `SAMPLE_CAP` sampled bytes per pair, then the digest alone), so a peer that floods cannot
    fill the memory or the disk through the audit. A leak scan only sees what was kept:
    `truncated_bytes` says how much it missed, and `testing.leaks.assert_no_leak` refuses to
    certify an audit that missed anything.
    """

    def __init__(self, keep_payloads: bool = True, payload_cap: int | None = DEFAULT_PAYLOAD_CAP) -> None:
        if payload_cap is not None and payload_cap < 0:
            raise ValueError(f"payload_cap must be >= 0 or None, got {payload_cap}")
        self.keep_payloads = keep_payloads
        self.payload_cap = payload_cap
        self._messages: list[Message] = []
        self._payloads: list[bytes] = []
        self._kept: dict[tuple[str, str], int] = {}
        self._sampled: dict[tuple[str, str], int] = {}
        self._missed: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def record(
        self, src: str, dst: str, tag: str, payload: bytes, *, nbytes: int | None = None, digest: bytes = b""
    ) -> None:
        """Record one message; `nbytes` and `digest` are given when `payload` is already a sample."""
        size = len(payload) if nbytes is None else nbytes
        with self._lock:
            if not self.keep_payloads:
                self._messages.append(Message(src, dst, tag, size))
                return
            pair = (src, dst)
            kept = self._kept.get(pair, 0)
            if nbytes is None and (self.payload_cap is None or kept + size <= self.payload_cap):
                self._kept[pair] = kept + size
                self._messages.append(Message(src, dst, tag, size))
                self._payloads.append(payload)
                return
            sample = payload[:SAMPLE_BYTES] if self._sampled.get(pair, 0) < SAMPLE_CAP else b""
            self._sampled[pair] = self._sampled.get(pair, 0) + len(sample)
            self._missed[pair] = self._missed.get(pair, 0) + size - len(sample)
            if nbytes is None:
                digest = hashlib.blake2b(payload, digest_size=16).digest()
            self._messages.append(Message(src, dst, tag, size, digest))
            self._payloads.append(sample)

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    def received(self, party: str) -> list[bytes]:
        """Payloads delivered to `party` (samples past the cap; empty when payloads are not kept)."""
        with self._lock:
            return [p for m, p in zip(self._messages, self._payloads, strict=False) if m.dst == party]

    def bytes_received(self, party: str) -> int:
        return sum(m.nbytes for m in self.messages if m.dst == party)

    def truncated_bytes(self, party: str | None = None) -> int:
        """Bytes delivered to `party` (or anyone) that the record holds no copy of."""
        with self._lock:
            return sum(n for (_, dst), n in self._missed.items() if party is None or dst == party)

    def count_leaks(self, party: str, secrets: Iterable[object]) -> int:
        """Count the secret values with at least one plain encoding in what `party` received.

        Only the kept payloads are searched; see `truncated_bytes` for what was not kept.
        """
        owners: dict[bytes, int] = {}
        values = list(secrets)
        for i, v in enumerate(values):
            for p in byte_patterns(v):
                owners.setdefault(p, i)
        found = scan(self.received(party), owners)
        missed = self.truncated_bytes(party)
        if missed:
            log.warning(
                "leak scan of what %r received covers the kept payloads only: %d bytes were past the "
                "audit's payload cap",
                party,
                missed,
            )
        return len({owners[p] for p in found})

    def _rows(self) -> list[list[object]]:
        with self._lock:
            return [
                [m.src, m.dst, m.tag, p, m.nbytes, m.digest]
                for m, p in zip(self._messages, self._payloads, strict=False)
            ]

    def save(self, path: Path) -> None:
        """Write the record as msgpack, atomically and readable by its owner only (mode 0600)."""
        data = msgpack.packb(self._rows(), use_bin_type=True)

        def write(fh: BinaryIO) -> None:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Path) -> WireAudit:
        """Read a file written by `save` (rows of 4 fields from older files are accepted)."""
        audit = cls(payload_cap=None)
        rows = msgpack.unpackb(path.read_bytes(), raw=False)
        for row in rows:
            src, dst, tag, payload = (str(row[0]), str(row[1]), str(row[2]), bytes(row[3]))
            if len(row) >= 6 and row[5]:
                audit.record(src, dst, tag, payload, nbytes=int(row[4]), digest=bytes(row[5]))
            else:
                audit.record(src, dst, tag, payload)
        return audit

    def merge(self, other: WireAudit) -> None:
        with other._lock:
            pairs = list(zip(other._messages, other._payloads, strict=False))
        for m, p in pairs:
            if m.complete:
                self.record(m.src, m.dst, m.tag, p)
            else:
                self.record(m.src, m.dst, m.tag, p, nbytes=m.nbytes, digest=m.digest)
