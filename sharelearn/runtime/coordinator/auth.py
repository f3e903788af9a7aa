"""Who calls the coordinator: an operator (the admin token in the state folder) or an enrolled party
(the API token it got at enrollment, tied to its certificate). A party's token stops working when
its certificate expires or is revoked: every request checks both."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.core.fileio import atomic_write_text
from sharelearn.runtime.coordinator.manager import Manager
from sharelearn.runtime.coordinator.models import EnrollToken, Job, Party
from sharelearn.runtime.enroll import check_certificate, sign_request

__all__ = ["ADMIN", "Caller", "Identity", "token_hash"]

ADMIN = "admin"
_ENROLL_TTL_S = 24 * 3600.0


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    name: str

    @property
    def admin(self) -> bool:
        return self.name == ADMIN

    def may_see(self, job: Job) -> bool:
        """A party sees only the jobs it takes part in; the operator sees every job."""
        return self.admin or self.name in json.loads(job.parties)


class Identity:
    """The coordinator's tokens, its CA (it signs enrollment requests) and the revocation list."""

    def __init__(self, manager: Manager, state_dir: Path) -> None:
        self.manager, self.state_dir = manager, state_dir
        self.ca_dir = state_dir / "ca"
        token_file = state_dir / "admin.token"
        if not token_file.is_file():
            atomic_write_text(token_file, secrets.token_urlsafe(32)).chmod(0o600)
        self._admin_hash = token_hash(token_file.read_text().strip())

    def caller(self, bearer: str | None) -> Caller:
        if not bearer:
            raise PermissionError("missing `Authorization: Bearer <token>`")
        digest = token_hash(bearer)
        if hmac.compare_digest(digest, self._admin_hash):
            return Caller(ADMIN)
        with self.manager.session() as s:
            party = s.scalars(select(Party).where(Party.token_hash == digest)).first()
            if party is None:
                raise PermissionError("unknown token")
            if party.revoked:
                raise PermissionError(f"party {party.name}: its certificate is revoked")
            try:
                check_certificate(
                    party.cert_pem.encode(), self.ca_pem(), revoked=self.revoked(), party=party.name
                )
            except CryptoError as exc:
                raise PermissionError(str(exc)) from exc
            return Caller(party.name)

    def ca_pem(self) -> bytes:
        return (self.ca_dir / "ca.pem").read_bytes()

    def revoked(self) -> list[str]:
        with self.manager.session() as s:
            return [p.serial for p in s.scalars(select(Party).where(Party.revoked.is_(True)))]

    def enrollment_token(self, party: str, ttl_s: float = _ENROLL_TTL_S) -> str:
        """A one-time token with which `party` may have its CSR signed (valid `ttl_s` seconds)."""
        token = secrets.token_urlsafe(24)
        with self.manager.session() as s:
            s.add(
                EnrollToken(
                    token_hash=token_hash(token), party=party, expires=time.time() + ttl_s, used=False
                )
            )
        return token

    def enroll(self, party: str, token: str, csr_pem: bytes) -> dict[str, str]:
        """Sign a party's CSR against its one-time token; return its certificate, the CA and an API token."""
        with self.manager.session() as s:
            row = s.get(EnrollToken, token_hash(token))
            if row is None or row.used or row.party != party or row.expires < time.time():
                raise PermissionError(
                    f"enrollment of {party!r}: the token is unknown, used, expired or for another party"
                )
            cert_pem = sign_request(csr_pem, self.ca_dir, party=party)
            api_token = secrets.token_urlsafe(32)
            from cryptography import x509

            serial = format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")
            p = s.get(Party, party) or Party(name=party)
            p.cert_pem, p.serial, p.revoked = cert_pem.decode(), serial, False
            p.token_hash, p.enrolled = token_hash(api_token), time.time()
            s.add(p)
            row.used = True
        return {"cert": cert_pem.decode(), "ca": self.ca_pem().decode(), "api_token": api_token}

    def revoke(self, party: str) -> str:
        with self.manager.session() as s:
            p = s.get(Party, party)
            if p is None or not p.serial:
                raise ConfigError(f"revoke: party {party!r} is not enrolled")
            p.revoked = True
            return p.serial
