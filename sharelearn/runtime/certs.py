"""A certificate authority and one certificate per party, for gRPC with mutual TLS.

Each party certificate names the party in its subject CN and as a DNS subject alternative name,
and is valid for both TLS server and client authentication. A worker accepts a peer only if the
peer's certificate chains to the job's CA *and* names a party of the job; a client verifies that
the server it reached is the party it meant (the party name is the TLS target name).

`throwaway_certs` is the local launcher's key lifecycle: a private (0700) folder, in /dev/shm when
there is one so the keys never reach a disk, removed when the block ends however it ends. A reaper
process deletes it if the launcher is killed outright (SIGKILL), and the next run deletes any
throwaway folder whose launcher is gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sharelearn.core.errors import ConfigError
from sharelearn.core.fileio import atomic_write_bytes

__all__ = [
    "PARTY_NAME",
    "THROWAWAY_PREFIX",
    "PartyCredentials",
    "check_party_name",
    "init_certs",
    "key_pem",
    "load_credentials",
    "reap_orphaned_certs",
    "subject_name",
    "throwaway_certs",
]

THROWAWAY_PREFIX = "sharelearn-certs-"
# The reaper blocks reading its stdin; EOF means every copy of the write end closed: the launcher ended.
_REAPER = "import shutil, sys; sys.stdin.buffer.read(); shutil.rmtree(sys.argv[1], ignore_errors=True)"

PARTY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class PartyCredentials:
    """PEM material one party needs: the CA certificate, its own certificate and private key."""

    party: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # the private key must never reach logs
        return f"PartyCredentials(party={self.party!r})"


def subject_name(cn: str) -> x509.Name:
    """The subject (and issuer) name of every sharelearn certificate: O=sharelearn, CN=cn."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sharelearn"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (written 0600 by the callers)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject_name(cn))
        .issuer_name(subject_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_party(party: str, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName(party), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject_name(party))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def check_party_name(party: str) -> str:
    if not PARTY_NAME.match(party):
        raise ConfigError(f"party name {party!r} must be 1-63 letters, digits, '_', '.' or '-'")
    return party


def init_certs(
    parties: Sequence[str], out_dir: Path | str, *, ca_name: str = "sharelearn job CA"
) -> dict[str, PartyCredentials]:
    """Create `ca.pem`, `ca.key` and `<party>.pem` / `<party>.key` for every party in `out_dir`."""
    if not parties:
        raise ConfigError("certs init needs at least one party")
    if len(set(parties)) != len(parties):
        raise ConfigError(f"party names must be unique: {list(parties)}")
    for p in parties:
        check_party_name(p)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _make_ca(ca_name)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    atomic_write_bytes(out / "ca.pem", ca_pem)
    atomic_write_bytes(out / "ca.key", key_pem(ca_key)).chmod(0o600)
    creds = {}
    for p in parties:
        cert_pem, party_key = _make_party(p, ca_key, ca)
        atomic_write_bytes(out / f"{p}.pem", cert_pem)
        atomic_write_bytes(out / f"{p}.key", party_key).chmod(0o600)
        creds[p] = PartyCredentials(p, ca_pem, cert_pem, party_key)
    return creds


def load_credentials(certs_dir: Path | str, party: str) -> PartyCredentials:
    """Read a party's credentials from a folder made by `init_certs`."""
    d = Path(certs_dir)
    paths = [d / "ca.pem", d / f"{party}.pem", d / f"{party}.key"]
    for path in paths:
        if not path.is_file():
            raise ConfigError(
                f"{path}: missing; create it with `sharelearn certs init --parties ... --out {d}`"
            )
    return PartyCredentials(party, *(p.read_bytes() for p in paths))


def _throwaway_base() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphaned_certs(base: Path | None = None) -> list[Path]:
    """Delete throwaway certificate folders (ours) whose launcher process is gone; return them."""
    root = _throwaway_base() if base is None else base
    reaped = []
    for folder in root.glob(f"{THROWAWAY_PREFIX}*-*"):
        pid = folder.name[len(THROWAWAY_PREFIX) :].split("-", 1)[0]
        with contextlib.suppress(OSError):
            if pid.isdigit() and folder.stat().st_uid == os.getuid() and not _pid_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                reaped.append(folder)
    return reaped


@contextlib.contextmanager
def throwaway_certs(parties: Sequence[str], *, base: Path | None = None) -> Iterator[Path]:
    """A private folder with a fresh CA and every party's key, deleted on every way out.

    The folder is mode 0700 and named after this process, under /dev/shm when available. A reaper
    process deletes it when this process dies, even by SIGKILL; folders left by dead launchers whose
    reaper was killed too are deleted by the next call.
    """
    root = _throwaway_base() if base is None else base
    reap_orphaned_certs(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{THROWAWAY_PREFIX}{os.getpid()}-", dir=root))
    reaper = subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives a kill of the launcher's process group
    )
    try:
        init_certs(list(parties), folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if reaper.stdin is not None:
            reaper.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            reaper.wait(5)
