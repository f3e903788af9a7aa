"""The control events a party reports while it runs a job, and their one wire form (JSON lines).

A party never reports data, keys or intermediate values here: only that it listens, which step it
is in, progress lines with metrics, each step's outputs, its traffic, and its error. The local
launcher reads them from each party's stdout; a coordinator receives the same records from its
workers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from sharelearn.core.errors import (
    AttestationError,
    ConfigError,
    CryptoError,
    DataError,
    PartyFailed,
    ProtocolError,
    SharelearnError,
)

# The README's exit-code table, for a party's own failure (the CLI's `EXIT_CODES` agree).
_EXIT_CODES: tuple[tuple[type[SharelearnError], int], ...] = (
    (PartyFailed, 1),
    (ConfigError, 2),
    (DataError, 3),
    (ProtocolError, 4),
    (CryptoError, 5),
    (AttestationError, 6),
)


def exit_code_for(exc: BaseException) -> int:
    """The exit code a party (or the CLI) ends with for `exc`: 70 for anything unexpected."""
    for kind, code in _EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 70


__all__ = [
    "ControlEvent",
    "Exited",
    "Listening",
    "PartyDone",
    "PartyError",
    "Progress",
    "StepDone",
    "StepStarted",
    "event_from_json",
    "event_to_json",
    "exit_code_for",
]


@dataclass(frozen=True, slots=True)
class Listening:
    """The party's data-plane server is up on `port`.

    `tee_admin`: at the leader of a TEE job with no `tee:` block, the public control key (hex) the
    launcher's embedded cluster host admits for the leader's scale-out commands; else "".
    """

    KIND: ClassVar[str] = "listening"
    party: str
    port: int
    pid: int
    tee_admin: str = ""


@dataclass(frozen=True, slots=True)
class StepStarted:
    KIND: ClassVar[str] = "step_started"
    party: str
    step: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class Progress:
    """A line of progress inside a step, with optional metrics (e.g. {"epoch": 3, "loss": 0.41})."""

    KIND: ClassVar[str] = "progress"
    party: str
    step: str
    message: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepDone:
    KIND: ClassVar[str] = "step_done"
    party: str
    step: str
    outputs: dict[str, Any]
    index: int = 0


@dataclass(frozen=True, slots=True)
class PartyDone:
    """Every step finished: the outputs per step, the link's traffic counters, peak memory."""

    KIND: ClassVar[str] = "done"
    party: str
    outputs: dict[str, Any]
    traffic: dict[str, Any]  # totals (int) and "peers": {peer: PeerStats as a dict}
    pid: int
    max_rss_mb: float


@dataclass(frozen=True, slots=True)
class PartyError:
    """The party failed; `error` is "<ExceptionType>: <message>"; `exit_code` what it exits with."""

    KIND: ClassVar[str] = "error"
    party: str
    error: str
    exit_code: int = 1


@dataclass(frozen=True, slots=True)
class Exited:
    """The launcher saw the party's process end (made by the launcher, never sent by a party)."""

    KIND: ClassVar[str] = "exited"
    party: str


ControlEvent: TypeAlias = Listening | StepStarted | Progress | StepDone | PartyDone | PartyError | Exited
_KINDS: dict[str, type[Any]] = {
    c.KIND: c for c in (Listening, StepStarted, Progress, StepDone, PartyDone, PartyError, Exited)
}


def event_to_json(event: ControlEvent) -> str:
    """One JSON line (without the newline) that `event_from_json` reads back."""
    return json.dumps({"event": event.KIND, **dataclasses.asdict(event)})


def event_from_json(line: str, party: str) -> ControlEvent | None:
    """Read one line a party wrote; None for anything that is not a well-formed event of `party`.

    A party's stdout may carry other output (a library printing), so unknown lines are skipped; a
    line may not speak for another party.
    """
    try:
        doc = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("party", party) != party:
        return None
    kind = _KINDS.get(str(doc.pop("event", "")))
    if kind is None:
        return None
    doc["party"] = party
    names = {f.name for f in dataclasses.fields(kind)}
    try:
        event: ControlEvent = kind(**{k: v for k, v in doc.items() if k in names})
    except TypeError:
        return None
    return event
