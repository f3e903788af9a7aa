"""run_roles_grpc(): every role in its own OS process, over GrpcLink with mutual TLS.

The same role functions `run_roles` runs in threads run here in separate processes, each with its
own certificate from a fresh CA, so a test exercises the real transport. Role functions must be
importable (module-level) and return codec-encodable values (arrays, numbers, lists, dicts).
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import traceback
from collections.abc import Callable, Mapping
from functools import partial
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from sharelearn.core.audit import WireAudit
from sharelearn.core.codec import decode, encode
from sharelearn.core.errors import PartyFailed
from sharelearn.core.link import Link
from sharelearn.runtime.certs import init_certs, load_credentials
from sharelearn.runtime.grpc_link import GrpcLink
from sharelearn.testing.roles import RoleRun

__all__ = ["bind", "run_roles_grpc"]

Role = Callable[[Link], Any]


def _child(party: str, parties: list[str], certs: str, fn: Role, conn: Connection, timeout: float) -> None:
    link = None
    try:
        audit = WireAudit()
        link = GrpcLink(load_credentials(certs, party), parties, timeout=timeout, audit=audit)
        conn.send(("port", link.port))
        link.connect(conn.recv())
        result = fn(link)
        conn.send(("ok", encode(result), link.stats.as_dict(), [[r, p] for r, p in _received(audit, party)]))
    except BaseException as exc:  # reported to the parent with the party's name
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        if link is not None:
            link.close()
        conn.close()


def _received(audit: WireAudit, party: str) -> list[tuple[str, bytes]]:
    return [(m.src, p) for m, p in zip(audit.messages, audit.received(party), strict=False)]


def run_roles_grpc(
    roles: Mapping[str, Role],
    *,
    timeout: float = 60.0,
    certs_dir: Path | None = None,
    overrides: Mapping[str, Path] | None = None,
) -> RoleRun:
    """Run `roles[party](link)` in one process per party; return each party's decoded result.

    `overrides` maps a party to a different certificates folder (e.g. from another CA) to test
    that the peers refuse it. As with `run_roles`, the result also carries `.audit` (every party's
    received payloads) and `.stats` (each party's link counters).

    Raises:
        PartyFailed: naming the first party that failed; every process is stopped first.
    """
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="sharelearn-test-certs-") as tmp:
        certs = certs_dir or Path(tmp)
        if certs_dir is None:
            init_certs(list(roles), certs)
        pipes, procs = {}, {}
        for party, fn in roles.items():
            parent, child = ctx.Pipe()
            where = str((overrides or {}).get(party, certs))
            procs[party] = ctx.Process(
                target=_child, args=(party, list(roles), where, fn, child, timeout), daemon=True
            )
            procs[party].start()
            pipes[party] = parent
        try:
            return _drive(pipes, timeout)
        finally:
            for proc in procs.values():
                if proc.is_alive():
                    proc.terminate()
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()


def _expect(pipes: Mapping[str, Connection], party: str, timeout: float) -> tuple[Any, ...]:
    if not pipes[party].poll(timeout):
        raise PartyFailed(party, f"no answer within {timeout:g} s")
    try:
        message: tuple[Any, ...] = pipes[party].recv()
    except EOFError:
        raise PartyFailed(party, "process died") from None
    if message[0] == "error":
        raise PartyFailed(party, message[1])
    return message


def _drive(pipes: Mapping[str, Connection], timeout: float) -> RoleRun:
    ports = {p: _expect(pipes, p, timeout)[1] for p in pipes}
    addresses = {p: f"127.0.0.1:{port}" for p, port in ports.items()}
    for conn in pipes.values():
        conn.send(addresses)
    results = RoleRun()
    audit = WireAudit()
    stats = {}
    by_conn: dict[object, str] = {conn: party for party, conn in pipes.items()}
    waiting = set(pipes)
    while waiting:
        ready = wait([pipes[p] for p in waiting], timeout * 4)
        if not ready:
            raise PartyFailed(",".join(sorted(waiting)), f"no result within {timeout * 4:g} s")
        for ready_conn in ready:
            party = by_conn[ready_conn]
            _, payload, stats[party], received = _expect(pipes, party, 0)
            waiting.discard(party)
            results[party] = decode(payload)
            for src, data in received:
                audit.record(src, party, "?", data)
    results.audit = audit
    results.stats = stats
    return results


def bind(fn: Callable[..., Any], **kwargs: Any) -> Role:
    """A picklable role: `fn(link, **kwargs)`."""
    return partial(fn, **kwargs)
