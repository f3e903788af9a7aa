"""`sharelearn tee ...`: cluster manager, simulated enclave host, and the data-envelope tool.

SIMULATION: `tee host` runs enclaves on a simulated platform (no SGX, no memory
confidentiality); its evidence is labelled SIMULATION and verifiers refuse it unless they pin
the simulation root it writes (`--root-out`). `tee encrypt` attests the target itself.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sharelearn.algorithms.tee.service import TRAIN_OP, build_bundle
from sharelearn.core.errors import ConfigError
from sharelearn.runtime.data import read_party_data
from sharelearn.runtime.jobspec import DataSpec
from sharelearn.tee.cluster import ClusterManager, EnclaveHost, TeeClient
from sharelearn.tee.control import ControlSigner
from sharelearn.tee.envelope import EnvelopeHeader, rows_of, write_envelope
from sharelearn.tee.keys import AttestedClusterKey
from sharelearn.tee.pccs import CollateralCache, PccsServer
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule

__all__ = ["app", "cm_command", "encrypt_command", "host_command", "pccs_command"]

app = typer.Typer(
    help="TEE route: cluster manager, enclave host (simulation), data envelopes.", no_args_is_help=True
)


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()


@app.command("pccs")
def pccs_command(
    cache: Annotated[Path, typer.Option(help="collateral cache folder")],
    add: Annotated[list[Path] | None, typer.Option(help="import a collateral JSON file (repeatable)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free port)")] = 0,
) -> None:
    """Run the provisioning proxy (PCCS-lite): serve cached DCAP collateral on the PCCS v4 paths."""
    store = CollateralCache(cache)
    for path in add or []:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
        tee, fmspc = store.import_json(text, source=str(path))
        typer.echo(json.dumps({"imported": str(path), "tee": tee, "fmspc": fmspc}))
    server = PccsServer(store, host=host, port=port)
    typer.echo(json.dumps({"pccs": server.url, "pid": os.getpid()}), nl=True)
    _wait_for_signal()
    server.close()


@app.command("cm")
def cm_command(
    port: Annotated[int, typer.Option(help="loopback port (0: any free port)")] = 0,
    lease_s: Annotated[float, typer.Option(help="drop an instance after this long without heartbeats")] = 0.8,
    admin_pk: Annotated[
        str, typer.Option(help="comma-separated Ed25519 keys (hex) allowed to set weights / admit hosts")
    ] = "",
    host_pk: Annotated[str, typer.Option(help="comma-separated host keys (hex) whose heartbeats count")] = "",
) -> None:
    """Run a cluster manager (untrusted: routing and heartbeats only, no keys).

    Control commands (set_weights, add_host) must be signed by an `--admin-pk` key; without one a
    fresh admin key is made and printed once (`admin_sk`) on stdout, the operator's own pipe.
    """
    cm = ClusterManager(lease_s=lease_s, port=port, admin=_keys(admin_pk), hosts=_keys(host_pk) or ())
    typer.echo(json.dumps({"cm": cm.endpoint, "pid": os.getpid(), **_admin_out(cm.admin)}), nl=True)
    _wait_for_signal()
    cm.close()


@app.command("host")
def host_command(
    cm: Annotated[str, typer.Option(help="cluster manager host:port")],
    workdir: Annotated[Path, typer.Option(help="folder for bundles and the simulation root")],
    instances: Annotated[int, typer.Option(help="instances of build v1 to start")] = 3,
    cluster: Annotated[str, typer.Option(help="service cluster name (measured)")] = "sharelearn-serve",
    owner_pk: Annotated[str, typer.Option(help="owner Ed25519 key (hex) that may authorize upgrades")] = "",
    hb_s: Annotated[float, typer.Option(help="heartbeat period (seconds)")] = 0.2,
    admin_pk: Annotated[
        str, typer.Option(help="comma-separated Ed25519 keys (hex) allowed to launch / kill / upgrade")
    ] = "",
) -> None:
    """Run a SIMULATED enclave host: builds v1 (and v2 = next ISVSVN) and starts v1 instances.

    It prints its heartbeat key (`host_pk`): the CM counts its heartbeats once an admin admits it
    (`add_host`, or `tee cm --host-pk`).
    """
    host = EnclaveHost(cm=cm, hb_s=hb_s, admin=_keys(admin_pk))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "simulation_root.der").write_bytes(host.platform.root_der)
    # The simulated PCS's collateral, for `sharelearn tee pccs --add` (it also travels in evidence).
    (workdir / "sim_collateral.json").write_text(host.platform.collateral_json)
    extra = {"owner_pk": owner_pk} if owner_pk else None
    images = {}
    for name, svn in (("v1", 1), ("v2", 2)):
        bundle = build_bundle(
            workdir / name,
            cluster=cluster,
            simulation_root_der=host.platform.root_der,
            isv_svn=svn,
            extra=extra,
        )
        images[name] = host.load(bundle, name).identity.mrenclave.hex()
    started = [host.launch(host.images["v1"]).iid for _ in range(instances)]
    info = {
        "endpoint": host.endpoint,
        "pid": os.getpid(),
        "simulation": True,
        "simulation_root": str(workdir / "simulation_root.der"),
        "sim_collateral": str(workdir / "sim_collateral.json"),
        "images": images,
        "instances": {iid: host.instances[iid].enclave.pid for iid in started},
        "host_pk": host.signer.public,
        **_admin_out(host.admin),
    }
    typer.echo(json.dumps(info), nl=True)
    typer.echo("SIMULATION: enclaves are local processes on a simulated platform (no SGX)", err=True)
    _wait_for_signal()
    host.close()


@app.command("encrypt")
def encrypt_command(
    data: Annotated[Path, typer.Option(help="the party's CSV/parquet table")],
    out: Annotated[str, typer.Option(help="envelope URL (path, file://, or any fsspec URL)")],
    mrenclave: Annotated[str, typer.Option(help="the enclave build (hex MRENCLAVE) allowed to open it")],
    cm: Annotated[str, typer.Option(help="cluster manager host:port (to find instances)")] = "",
    endpoint: Annotated[str, typer.Option(help="an enclave host host:port (instead of --cm)")] = "",
    simulation_root: Annotated[
        Path | None, typer.Option(help="accept SIMULATED evidence under this root")
    ] = None,
    id_column: Annotated[str, typer.Option("--id", help="id column")] = "id",
    label: Annotated[str | None, typer.Option(help="label column")] = None,
    dataset: Annotated[str, typer.Option(help="dataset name (in the header)")] = "",
    owner: Annotated[str, typer.Option(help="owner name (in the header)")] = "owner",
    ops: Annotated[str, typer.Option(help="comma-separated allowed operations")] = TRAIN_OP,
    chunk_rows: Annotated[int, typer.Option(help="rows per encrypted chunk")] = 4096,
    owner_key: Annotated[
        Path | None, typer.Option(help="your Ed25519 signing key (raw 32 bytes; created 0600 if absent)")
    ] = None,
    parties: Annotated[
        Path | None, typer.Option(help="JSON {owner: Ed25519 public key hex} of every data owner of the job")
    ] = None,
) -> None:
    """Attest the target enclave cluster with YOUR policy, then encrypt and sign a table to its key."""
    signer = _owner_key(owner_key)
    target = _attest_target(mrenclave, simulation_root, cm, endpoint)
    table = read_party_data(DataSpec(data, id=id_column, label=label))
    header = write_envelope(
        out,
        rows_of(list(table.ids), table.x, table.y, chunk_rows),
        target=target,
        dataset=dataset or data.stem,
        owner=owner,
        features=table.feature_names,
        label=label,
        allowed_ops=[o.strip() for o in ops.split(",") if o.strip()],
        owner_key=signer,
        parties=_parties(parties) if parties is not None else None,
    )
    typer.echo(json.dumps(_summary(out, len(table), header, target)))


def _summary(out: str, rows: int, header: EnvelopeHeader, target: AttestedClusterKey) -> dict[str, Any]:
    """What `tee encrypt` prints: where the envelope went, for whom, and whether evidence was simulated."""
    return {
        "envelope": out,
        "rows": rows,
        "dataset": header.dataset,
        "audience": list(header.audience),
        "cluster": header.cluster,
        "simulation": target.evidence.simulated,
        "owner_pk": header.owner_sig_pk,
    }


def _attest_target(
    mrenclave: str, simulation_root: Path | None, cm: str, endpoint: str
) -> AttestedClusterKey:
    """Attest the first routed instance of the accepted build (`--mrenclave`) under the tool's policy."""
    if not cm and not endpoint:
        raise ConfigError("tee encrypt: give --cm or --endpoint")
    try:
        accepted = bytes.fromhex(mrenclave)
    except ValueError:
        accepted = b""
    if len(accepted) != 32:
        raise ConfigError(f"tee encrypt: --mrenclave must be 64 hex digits, got {mrenclave!r}")
    root = simulation_root.read_bytes() if simulation_root is not None else None
    policy = AttestationPolicy(
        accept=(EnclaveIdentityRule(mrenclave=accepted),),
        name="encrypt-tool",
        allow_simulation=root is not None,
        simulation_root_der=root,
    )
    client = TeeClient(policy, cm=cm or None, endpoints=[endpoint] if endpoint else ())
    routes = client.routes()
    if not routes:
        raise ConfigError("tee encrypt: no instance of an accepted build is registered")
    ep, iid, _ = routes[0]
    return client.attest(ep, iid)


def _owner_key(path: Path | None) -> Ed25519PrivateKey:
    """Load the owner's Ed25519 key (raw 32 bytes), creating it 0600 when the file is absent."""
    if path is None:
        return Ed25519PrivateKey.generate()
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes_raw())
        return key
    raw = path.read_bytes()
    if len(raw) != 32:
        raise ConfigError(f"{path}: an owner key is 32 raw bytes, got {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _parties(path: Path) -> dict[str, bytes]:
    try:
        obj = json.loads(path.read_text())
        return {str(k): bytes.fromhex(str(v)) for k, v in dict(obj).items()}
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: --parties must be a JSON map owner -> public key hex ({exc})") from exc


def _keys(text: str) -> list[str] | None:
    """Comma-separated Ed25519 public keys (hex), or None when empty."""
    keys = [k.strip().lower() for k in text.split(",") if k.strip()]
    for k in keys:
        try:
            ok = len(bytes.fromhex(k)) == 32
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"{k[:20]!r} is not an Ed25519 public key in hex (64 digits)")
    return keys or None


def _admin_out(admin: ControlSigner | None) -> dict[str, str]:
    """The generated admin key, printed once, when the operator gave none."""
    if admin is None:
        return {}
    typer.echo("no --admin-pk: generated an admin key (admin_sk on stdout, shown once)", err=True)
    return {"admin_sk": admin.key.private_bytes_raw().hex(), "admin_pk": admin.public}
