"""The wire audit: a record of every message a party received, and leak scans over it.

Every message delivered to an inbox is recorded as (src, dst, tag, nbytes) and, when payloads are
kept, its bytes. `count_leaks` looks for byte patterns of secret values (ids, features, labels) in
what one party received. A value is searched in each of its plain encodings: UTF-8 text, the
msgpack string, and 8-byte little-endian int64 / float64. Patterns shorter than `MIN_PATTERN_LEN`
bytes are skipped: a 3-byte pattern turns up by chance in a few megabytes of ciphertext.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np

__all__ = ["MIN_PATTERN_LEN", "Message", "WireAudit", "byte_patterns", "scan"]

MIN_PATTERN_LEN = 6
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message."""

    src: str
    dst: str
    tag: str
    nbytes: int


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


def _windows(data: bytes, length: int) -> Iterator[np.ndarray]:
    buf = np.frombuffer(data, dtype=np.uint8)
    for start in range(0, max(len(buf) - length + 1, 0), _CHUNK):
        chunk = buf[start : start + _CHUNK + length - 1]
        if len(chunk) < length:
            return
        win = np.lib.stride_tricks.sliding_window_view(chunk, length)
        yield np.ascontiguousarray(win).view(f"S{length}").ravel()


def scan(payloads: Iterable[bytes], patterns: Iterable[bytes]) -> set[bytes]:
    """Return the patterns that occur in any payload (vectorised: one sorted search per length)."""
    by_len: dict[int, set[bytes]] = {}
    for p in patterns:
        by_len.setdefault(len(p), set()).add(p)
    found: set[bytes] = set()
    data = list(payloads)
    for length, pats in by_len.items():
        table = np.array(sorted(pats), dtype=f"S{length}")
        for payload in data:
            for win in _windows(payload, length):
                hits = win[np.isin(win, table)]
                found.update(bytes(h).ljust(length, b"\x00") for h in np.unique(hits))
    return found


class WireAudit:
    """Thread-safe record of delivered messages; keeps payloads when `keep_payloads` is set."""

    def __init__(self, keep_payloads: bool = True) -> None:
        self.keep_payloads = keep_payloads
        self._messages: list[Message] = []
        self._payloads: list[bytes] = []
        self._lock = threading.Lock()

    def record(self, src: str, dst: str, tag: str, payload: bytes) -> None:
        with self._lock:
            self._messages.append(Message(src, dst, tag, len(payload)))
            if self.keep_payloads:
                self._payloads.append(payload)

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    def received(self, party: str) -> list[bytes]:
        """Payloads delivered to `party` (empty when payloads are not kept)."""
        with self._lock:
            return [p for m, p in zip(self._messages, self._payloads, strict=False) if m.dst == party]

    def bytes_received(self, party: str) -> int:
        return sum(m.nbytes for m in self.messages if m.dst == party)

    def count_leaks(self, party: str, secrets: Iterable[object]) -> int:
        """Count the secret values with at least one plain encoding in what `party` received."""
        owners: dict[bytes, int] = {}
        values = list(secrets)
        for i, v in enumerate(values):
            for p in byte_patterns(v):
                owners.setdefault(p, i)
        found = scan(self.received(party), owners)
        return len({owners[p] for p in found})

    def save(self, path: Path) -> None:
        """Write the record (with payloads) as msgpack; the launcher merges the parties' files."""
        with self._lock:
            rows = [[m.src, m.dst, m.tag, p] for m, p in zip(self._messages, self._payloads, strict=False)]
        path.write_bytes(msgpack.packb(rows, use_bin_type=True))

    @classmethod
    def load(cls, path: Path) -> WireAudit:
        audit = cls()
        rows = msgpack.unpackb(path.read_bytes(), raw=False)
        for src, dst, tag, payload in rows:
            audit.record(str(src), str(dst), str(tag), bytes(payload))
        return audit

    def merge(self, other: WireAudit) -> None:
        with other._lock:
            pairs = list(zip(other._messages, other._payloads, strict=False))
        for m, p in pairs:
            self.record(m.src, m.dst, m.tag, p)
