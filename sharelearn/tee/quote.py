"""Pure-Python parsing and encoding of Intel DCAP quotes: SGX quote v3 and TDX quote v4.

Parsing only reads bytes; it proves nothing. A parsed quote is untrusted until
`sharelearn.tee.attestation.verify_quote` has checked its signature chain. Every length is
checked before it is used, and every malformed input raises `AttestationError` naming the field
and its offset (never IndexError / struct.error). Layouts: TEE.md Appendix A (little-endian).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sharelearn.core.errors import AttestationError

__all__ = [
    "ATT_KEY_ECDSA_P256",
    "CERT_TYPE_PCK_CHAIN",
    "CERT_TYPE_QE_REPORT",
    "HEADER_LEN",
    "INTEL_QE_VENDOR_ID",
    "MAX_QUOTE_BYTES",
    "SGX_ATTR_DEBUG",
    "SGX_REPORT_LEN",
    "TDX_REPORT_LEN",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "Quote",
    "QuoteHeader",
    "QuoteSignature",
    "SgxReportBody",
    "TdReportBody",
    "build_sgx_report",
    "encode_sgx_quote_v3",
    "parse_quote",
    "parse_sgx_report",
]

HEADER_LEN = 48
SGX_REPORT_LEN = 384
TDX_REPORT_LEN = 584
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATT_KEY_ECDSA_P256 = 2
CERT_TYPE_PCK_CHAIN = 5  # PEM chain PCK -> intermediate CA -> root
CERT_TYPE_QE_REPORT = 6  # TDX v4: QE report certification data, nesting a type-5 chain
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
SGX_ATTR_DEBUG = 0x2  # ATTRIBUTES.flags bit 1: enclave memory is readable by a debugger
TDX_ATTR_DEBUG = 0x1  # TD_ATTRIBUTES bit 0 (TUD.DEBUG)
# Real quotes are ~5 KB (mostly the PEM chain); anything far larger is not a quote.
MAX_QUOTE_BYTES = 64 * 1024


class _Reader:
    """Bounds-checked cursor over a byte string; errors name the field and offset."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise AttestationError(
                f"malformed {self.what}: field {field!r} needs {n} bytes at offset {self.pos}, "
                f"only {len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, field: str) -> int:
        return int(struct.unpack("<H", self.take(2, field))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack("<I", self.take(4, field))[0])

    def rest(self) -> int:
        return len(self.data) - self.pos


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header (signed together with the report body)."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> QuoteHeader:
        r = _Reader(raw, "quote header")
        version, key_type, tee_type = r.u16("version"), r.u16("att_key_type"), r.u32("tee_type")
        qe_svn, pce_svn = r.u16("qe_svn"), r.u16("pce_svn")
        return cls(
            version, key_type, tee_type, qe_svn, pce_svn, r.take(16, "qe_vendor_id"), r.take(20, "user_data")
        )

    def to_bytes(self) -> bytes:
        if len(self.qe_vendor_id) != 16 or len(self.user_data) != 20:
            raise AttestationError("quote header: qe_vendor_id must be 16 bytes and user_data 20 bytes")
        head = struct.pack(
            "<HHIHH", self.version, self.att_key_type, self.tee_type, self.qe_svn, self.pce_svn
        )
        return head + self.qe_vendor_id + self.user_data


@dataclass(frozen=True, slots=True)
class SgxReportBody:
    """The 384-byte SGX (ISV or QE) report body: the enclave identity the CPU measured."""

    cpu_svn: bytes
    misc_select: int
    attributes_flags: int
    attributes_xfrm: int
    mrenclave: bytes
    mrsigner: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    report_data: bytes
    raw: bytes

    @property
    def debug(self) -> bool:
        return bool(self.attributes_flags & SGX_ATTR_DEBUG)

    def to_bytes(self) -> bytes:
        return self.raw


def parse_sgx_report(raw: bytes) -> SgxReportBody:
    """Parse a 384-byte SGX report body (offsets of TEE.md A.1)."""
    if len(raw) != SGX_REPORT_LEN:
        raise AttestationError(f"malformed SGX report body: {len(raw)} bytes, expected {SGX_REPORT_LEN}")
    flags, xfrm = struct.unpack_from("<QQ", raw, 48)
    prod, svn, cfg_svn = struct.unpack_from("<HHH", raw, 256)
    return SgxReportBody(
        cpu_svn=raw[0:16],
        misc_select=int(struct.unpack_from("<I", raw, 16)[0]),
        attributes_flags=int(flags),
        attributes_xfrm=int(xfrm),
        mrenclave=raw[64:96],
        mrsigner=raw[128:160],
        config_id=raw[192:256],
        isv_prod_id=int(prod),
        isv_svn=int(svn),
        config_svn=int(cfg_svn),
        report_data=raw[320:384],
        raw=raw,
    )


@dataclass(frozen=True, slots=True)
class TdReportBody:
    """The 584-byte TDX TD report body (TDREPORT 1.0) of a quote v4."""

    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    td_attributes: int
    xfam: int
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    raw: bytes

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes & TDX_ATTR_DEBUG)


def _parse_td_report(raw: bytes) -> TdReportBody:
    if len(raw) != TDX_REPORT_LEN:
        raise AttestationError(f"malformed TD report body: {len(raw)} bytes, expected {TDX_REPORT_LEN}")
    td_attrs, xfam = struct.unpack_from("<QQ", raw, 120)
    rtmrs = (raw[328:376], raw[376:424], raw[424:472], raw[472:520])
    return TdReportBody(
        tee_tcb_svn=raw[0:16],
        mrseam=raw[16:64],
        mrsignerseam=raw[64:112],
        td_attributes=int(td_attrs),
        xfam=int(xfam),
        mrtd=raw[136:184],
        mrconfigid=raw[184:232],
        mrowner=raw[232:280],
        mrownerconfig=raw[280:328],
        rtmrs=rtmrs,
        report_data=raw[520:584],
        raw=raw,
    )


@dataclass(frozen=True, slots=True)
class QuoteSignature:
    """The ECDSA quote signature data: ISV signature, attestation key, QE report, PCK chain."""

    isv_signature: bytes  # r||s over header||body, by the attestation key
    attestation_key: bytes  # x||y of the P-256 attestation key
    qe_report: SgxReportBody
    qe_report_signature: bytes  # r||s over the QE report, by the PCK key
    qe_auth_data: bytes
    cert_type: int
    cert_data: bytes  # for type 5: the PEM chain PCK -> CA -> root


@dataclass(frozen=True, slots=True)
class Quote:
    """A parsed (not yet verified) DCAP quote."""

    header: QuoteHeader
    body: SgxReportBody | TdReportBody
    signature: QuoteSignature
    raw: bytes

    @property
    def is_tdx(self) -> bool:
        return self.header.tee_type == TEE_TYPE_TDX

    @property
    def signed_bytes(self) -> bytes:
        """Header and report body: what the attestation key signed."""
        return self.raw[: HEADER_LEN + len(self.body.raw)]


def _parse_qe_block(r: _Reader) -> tuple[SgxReportBody, bytes, bytes, int, bytes]:
    qe_report = parse_sgx_report(r.take(SGX_REPORT_LEN, "qe_report"))
    qe_sig = r.take(64, "qe_report_signature")
    qe_auth = r.take(r.u16("qe_auth_len"), "qe_auth_data")
    cert_type = r.u16("cert_type")
    cert_data = r.take(r.u32("cert_data_len"), "cert_data")
    return qe_report, qe_sig, qe_auth, cert_type, cert_data


def _parse_signature(sig: bytes, *, tdx: bool) -> QuoteSignature:
    r = _Reader(sig, "quote signature data")
    isv_sig, att_key = r.take(64, "isv_signature"), r.take(64, "attestation_key")
    if tdx:
        outer_type = r.u16("cert_type")
        if outer_type != CERT_TYPE_QE_REPORT:
            raise AttestationError(f"TDX quote v4: certification data type {outer_type}, expected 6")
        inner = _Reader(r.take(r.u32("cert_data_len"), "qe_cert_data"), "QE certification data")
        qe_report, qe_sig, qe_auth, cert_type, cert_data = _parse_qe_block(inner)
        leftover = inner.rest()
    else:
        qe_report, qe_sig, qe_auth, cert_type, cert_data = _parse_qe_block(r)
        leftover = 0
    if r.rest() or leftover:
        raise AttestationError(f"malformed quote: {r.rest() + leftover} trailing bytes in signature data")
    return QuoteSignature(isv_sig, att_key, qe_report, qe_sig, qe_auth, cert_type, cert_data)


def parse_quote(raw: bytes) -> Quote:
    """Parse an SGX quote v3 or TDX quote v4 with strict length checks.

    Args:
        raw: the quote bytes as produced by the quoting enclave.

    Returns:
        The parsed quote. Nothing about it is trusted yet.

    Raises:
        AttestationError: on any malformed, truncated, oversized or unsupported input.
    """
    if not isinstance(raw, bytes | bytearray) or len(raw) > MAX_QUOTE_BYTES:
        raise AttestationError(f"quote must be bytes of at most {MAX_QUOTE_BYTES} bytes")
    raw = bytes(raw)
    r = _Reader(raw, "quote")
    header = QuoteHeader.from_bytes(r.take(HEADER_LEN, "header"))
    if header.att_key_type != ATT_KEY_ECDSA_P256:
        raise AttestationError(
            f"unsupported attestation key type {header.att_key_type} (only 2 = ECDSA-P256)"
        )
    if (header.version, header.tee_type) == (3, TEE_TYPE_SGX):
        body: SgxReportBody | TdReportBody = parse_sgx_report(r.take(SGX_REPORT_LEN, "report_body"))
    elif (header.version, header.tee_type) == (4, TEE_TYPE_TDX):
        body = _parse_td_report(r.take(TDX_REPORT_LEN, "td_report_body"))
    else:
        raise AttestationError(
            f"unsupported quote version {header.version} / tee_type {header.tee_type:#x} "
            "(supported: SGX v3, TDX v4)"
        )
    signature = _parse_signature(
        r.take(r.u32("signature_data_len"), "signature_data"), tdx=header.tee_type == TEE_TYPE_TDX
    )
    # Quote buffers from real QEs may be zero-padded (the TDX sample carries 70 zero bytes after
    # the signature data); anything else after the signature data is refused.
    if raw[r.pos :].strip(b"\0"):
        raise AttestationError(
            f"malformed quote: {r.rest()} non-zero trailing bytes after the signature data"
        )
    return Quote(header=header, body=body, signature=signature, raw=raw)


def encode_sgx_quote_v3(header: QuoteHeader, body: bytes, signature: QuoteSignature) -> bytes:
    """Encode an SGX quote v3 (used by the simulation platform to build DCAP-shaped quotes)."""
    if (
        len(body) != SGX_REPORT_LEN
        or len(signature.isv_signature) != 64
        or len(signature.attestation_key) != 64
    ):
        raise AttestationError("encode_sgx_quote_v3: body must be 384 bytes, signature and key 64 bytes")
    sig = (
        signature.isv_signature
        + signature.attestation_key
        + signature.qe_report.to_bytes()
        + signature.qe_report_signature
        + struct.pack("<H", len(signature.qe_auth_data))
        + signature.qe_auth_data
        + struct.pack("<HI", signature.cert_type, len(signature.cert_data))
        + signature.cert_data
    )
    return header.to_bytes() + body + struct.pack("<I", len(sig)) + sig


def build_sgx_report(
    *,
    mrenclave: bytes,
    mrsigner: bytes,
    isv_prod_id: int,
    isv_svn: int,
    attributes_flags: int,
    report_data: bytes,
    attributes_xfrm: int = 0xE7,
) -> SgxReportBody:
    """Build a 384-byte SGX report body (the simulation platform's EREPORT analogue)."""
    if len(mrenclave) != 32 or len(mrsigner) != 32 or len(report_data) != 64:
        raise AttestationError("build_sgx_report: mrenclave/mrsigner must be 32 bytes, report_data 64 bytes")
    if not (0 <= isv_prod_id <= 0xFFFF and 0 <= isv_svn <= 0xFFFF):
        raise AttestationError(
            f"build_sgx_report: isv_prod_id/isv_svn out of u16 range ({isv_prod_id}, {isv_svn})"
        )
    raw = bytearray(SGX_REPORT_LEN)
    struct.pack_into("<QQ", raw, 48, attributes_flags, attributes_xfrm)
    raw[64:96] = mrenclave
    raw[128:160] = mrsigner
    struct.pack_into("<HH", raw, 256, isv_prod_id, isv_svn)
    raw[320:384] = report_data
    return parse_sgx_report(bytes(raw))
