"""PCCS-lite: the provisioning proxy (TEE.md section 3.8), so enclave hosts need no internet.

Verifiers of DCAP quotes need collateral: the PCK CRL of the quote's CA, the root CA CRL, the TCB info
of the platform's FMSPC and the QE identity, each with its issuer chain and Intel's signature. Intel's
PCCS caches these inside the data centre; this is a small version of it:

* `CollateralCache`: a folder of imported collateral (dcap-qvl's JSON form, as an internet-connected
  sync job or an offline import writes it), keyed by TEE type and FMSPC; PCK CRLs are kept per CA.
* `PccsServer`: serves the cache over HTTP on the PCCS v4 paths that dcap-qvl's `get_collateral`
  fetches (`/{sgx,tdx}/certification/v4/{pckcrl, rootcacrl, tcb, qe/identity}`), with the issuer
  chains in the same (URL-encoded PEM) headers. Entries past their `nextUpdate` are answered with
  410 Gone: a verifier must fail closed on expired collateral, never be fed stale TCB levels.
* `fetch_collateral`: what a verifier calls: dcap-qvl fetches from the proxy and returns the JSON that
  `tee.attestation.verify_quote(collateral=...)` takes.

The proxy is not trusted for integrity: every item it serves is signed by Intel's keys and checked
by dcap-qvl against the root it has built in. It can only withhold collateral (deny service).
A simulated platform's collateral (`sim.pcs.SimPcs`, written by `sharelearn tee host` as
`sim_collateral.json`) imports the same way, into its own cache: it verifies only under that
platform's simulation root, never Intel's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509

from sharelearn.core.errors import AttestationError, ConfigError, DataError
from sharelearn.core.fileio import atomic_write_text
from sharelearn.tee.sim.pcs import SIM_PCK_CA_CN

__all__ = ["CollateralCache", "PccsServer", "fetch_collateral"]

_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
_CA_NAMES = {
    "Intel SGX PCK Processor CA": "processor",
    "Intel SGX PCK Platform CA": "platform",
    SIM_PCK_CA_CN: "platform",  # a simulated PCS's collateral (one cache per trust root)
}


def _next_update(doc: str, what: str, source: str) -> int:
    try:
        stamp = json.loads(doc)["nextUpdate"]
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{source}: {what} has no valid nextUpdate") from exc


class CollateralCache:
    """Imported collateral in a folder: `<tee>-<FMSPC>.json` per platform, `pckcrl-<ca>.json` per CA."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def import_json(self, text: str, *, source: str = "collateral") -> tuple[str, str]:
        """Import one dcap-qvl collateral JSON document; return its (tee, FMSPC)."""
        try:
            doc = json.loads(text)
            missing = [f for f in _FIELDS if not isinstance(doc.get(f), str)]
            tcb = json.loads(doc["tcb_info"]) if not missing else {}
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source}: not a collateral JSON document: {exc}") from exc
        if missing:
            raise DataError(f"{source}: collateral lacks {', '.join(missing)}")
        tee, fmspc = str(tcb.get("id", "")).lower(), str(tcb.get("fmspc", "")).upper()
        if tee not in ("sgx", "tdx") or len(fmspc) != 12:
            raise DataError(f"{source}: tcb_info has no SGX/TDX id or a 6-byte FMSPC")
        try:
            crl = x509.load_der_x509_crl(bytes.fromhex(doc["pck_crl"]))
        except ValueError as exc:
            raise DataError(f"{source}: pck_crl is not a hex DER CRL: {exc}") from exc
        names = crl.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        ca = _CA_NAMES.get(str(names[0].value) if names else "")
        if ca is None:
            raise DataError(f"{source}: the PCK CRL is not issued by an Intel (or simulation) PCK CA")
        _next_update(doc["tcb_info"], "tcb_info", source)
        _next_update(doc["qe_identity"], "qe_identity", source)
        platform = {k: doc[k] for k in _FIELDS if not k.startswith("pck_crl")}
        atomic_write_text(self.folder / f"{tee}-{fmspc}.json", json.dumps(platform))
        pck = {"pck_crl": doc["pck_crl"], "pck_crl_issuer_chain": doc["pck_crl_issuer_chain"]}
        atomic_write_text(self.folder / f"pckcrl-{ca}.json", json.dumps(pck))
        return tee, fmspc

    def platform(self, tee: str, fmspc: str) -> dict[str, str] | None:
        path = self.folder / f"{tee}-{fmspc.upper()}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def pck_crl(self, ca: str) -> dict[str, str] | None:
        path = self.folder / f"pckcrl-{ca}.json"
        return json.loads(path.read_text()) if ca in _CA_NAMES.values() and path.is_file() else None

    def root_ca_crl(self) -> str | None:
        for path in sorted(self.folder.glob("*-*.json")):
            if not path.name.startswith("pckcrl-"):
                return str(json.loads(path.read_text())["root_ca_crl"])
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, urllib.parse.quote(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.strip("/").split("/")
        if len(parts) < 4 or parts[0] not in ("sgx", "tdx") or parts[1:3] != ["certification", "v4"]:
            self._send(404, b"unknown path")
            return
        tee, what = parts[0], "/".join(parts[3:])
        cache, now = self.server.cache, self.server.clock()
        if what == "pckcrl":
            entry = cache.pck_crl(query.get("ca", ""))
            if entry is None:
                self._send(404, b"no PCK CRL for that CA")
                return
            self._send(
                200,
                bytes.fromhex(entry["pck_crl"]),
                {"SGX-PCK-CRL-Issuer-Chain": entry["pck_crl_issuer_chain"]},
            )
            return
        if what == "rootcacrl":
            root = cache.root_ca_crl()
            self._send(200, root.encode()) if root else self._send(404, b"no root CA CRL cached")
            return
        fmspc = query.get("fmspc", "")
        if what == "qe/identity":
            entry = next((e for e in self.server.platforms(tee)), None)
        else:
            entry = cache.platform(tee, fmspc) if what == "tcb" else None
        if entry is None:
            self._send(404, f"nothing cached for {tee} {what} {fmspc}".encode())
            return
        doc, sig, chain_key, chain_header = (
            ("tcb_info", "tcb_info_signature", "tcb_info_issuer_chain", "TCB-Info-Issuer-Chain")
            if what == "tcb"
            else (
                "qe_identity",
                "qe_identity_signature",
                "qe_identity_issuer_chain",
                "SGX-Enclave-Identity-Issuer-Chain",
            )
        )
        if _next_update(entry[doc], doc, "cache") <= now:
            self._send(410, f"{doc} expired; sync the cache".encode())
            return
        body_key = "tcbInfo" if what == "tcb" else "enclaveIdentity"
        # The signed document is spliced in verbatim: the signature covers its exact bytes.
        body = '{"' + body_key + '":' + entry[doc] + ',"signature":"' + entry[sig] + '"}'
        self._send(200, body.encode(), {chain_header: entry[chain_key]})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], cache: CollateralCache, clock: Callable[[], float]) -> None:
        super().__init__(address, _Handler)
        self.cache, self.clock = cache, clock

    def platforms(self, tee: str) -> list[dict[str, str]]:
        return [json.loads(p.read_text()) for p in sorted(self.cache.folder.glob(f"{tee}-*.json"))]


class PccsServer:
    """Serve a `CollateralCache` on http://host:port (loopback by default); a context manager.

    `clock` gives the time used for expiry (pinned in tests, since real collateral expires).
    """

    def __init__(
        self,
        cache: CollateralCache,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            self._server = _Server((host, port), cache, clock)
        except OSError as exc:
            raise ConfigError(f"pccs: cannot listen on {host}:{port}: {exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="pccs-lite", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{name}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> PccsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch_collateral(pccs_url: str, raw_quote: bytes) -> str:
    """Fetch a quote's collateral through dcap-qvl from a PCCS (or this proxy); return its JSON."""
    try:
        import dcap_qvl
    except ImportError as exc:
        raise ConfigError("fetching collateral needs dcap-qvl: pip install 'sharelearn[tee]'") from exc

    async def fetch() -> Any:
        return await dcap_qvl.get_collateral(pccs_url, raw_quote)

    try:
        collateral = asyncio.run(fetch())
    except (ValueError, RuntimeError) as exc:
        raise AttestationError(f"collateral from {pccs_url}: {exc}") from exc
    return str(collateral.to_json())
