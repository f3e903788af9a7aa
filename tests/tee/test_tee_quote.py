from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sharelearn.core.errors import AttestationError
from sharelearn.tee.quote import SgxReportBody, TdReportBody, parse_quote


def test_parses_real_sgx_quote_fields(vectors: Path) -> None:
    quote = parse_quote((vectors / "dcap-qvl/sgx_quote").read_bytes())

    body = quote.body
    assert isinstance(body, SgxReportBody)
    assert (quote.header.version, quote.header.tee_type, quote.signature.cert_type) == (3, 0, 5)
    assert body.mrenclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert body.mrsigner.hex() == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    assert (body.attributes_flags, body.debug, body.isv_prod_id, body.isv_svn) == (0x05, False, 0, 0)
    assert body.report_data == b"Hello, world!".ljust(64, b"\0")


def test_parses_real_tdx_quote_fields(vectors: Path) -> None:
    quote = parse_quote((vectors / "dcap-qvl/tdx_quote").read_bytes())

    body = quote.body
    assert isinstance(body, TdReportBody)
    assert quote.is_tdx and quote.header.version == 4
    assert len(body.mrtd) == 48 and len(body.rtmrs) == 4 and all(len(r) == 48 for r in body.rtmrs)
    assert not body.debug


def test_parses_occlum_debug_quote(vectors: Path) -> None:
    body = parse_quote((vectors / "trustee/occlum_quote.dat").read_bytes()).body

    assert isinstance(body, SgxReportBody)
    assert body.attributes_flags == 0x07 and body.debug
    assert body.report_data.rstrip(b"\0") == b"test"


@pytest.mark.parametrize("name", ["dcap-qvl/sgx_quote", "dcap-qvl/tdx_quote", "trustee/occlum_quote.dat"])
def test_our_parser_agrees_with_dcap_qvl(vectors: Path, name: str) -> None:
    dcap_qvl = pytest.importorskip(
        "dcap_qvl", reason="dcap-qvl not installed (pip install 'sharelearn[tee]')"
    )
    raw = (vectors / name).read_bytes()

    ours, theirs = parse_quote(raw).body, dcap_qvl.parse_quote(raw).report

    assert ours.report_data == bytes(theirs.report_data)
    if isinstance(ours, SgxReportBody):
        assert (ours.mrenclave, ours.mrsigner) == (bytes(theirs.mr_enclave), bytes(theirs.mr_signer))
    else:
        assert ours.mrtd == bytes(theirs.mr_td) and ours.rtmrs[3] == bytes(theirs.rt_mr3)


def test_every_truncation_raises_attestation_error_only(vectors: Path) -> None:
    raw = (vectors / "dcap-qvl/sgx_quote").read_bytes()

    for n in range(len(raw)):
        with pytest.raises(AttestationError):
            parse_quote(raw[:n])


def test_corrupt_length_fields_raise_attestation_error(vectors: Path) -> None:
    raw = bytearray((vectors / "dcap-qvl/sgx_quote").read_bytes())
    # signature_data_len, qe_auth_len and cert_data_len set to absurd values
    for offset, fmt in [(432, "<I"), (1012, "<H"), (1012 + 2 + 32 + 2, "<I")]:
        bad = bytearray(raw)
        struct.pack_into(fmt, bad, offset, (1 << (8 * struct.calcsize(fmt))) - 1)
        with pytest.raises(AttestationError):
            parse_quote(bytes(bad))


def test_rejects_unknown_version_trailing_garbage_and_non_bytes(vectors: Path) -> None:
    raw = (vectors / "dcap-qvl/sgx_quote").read_bytes()

    with pytest.raises(AttestationError, match="unsupported quote version"):
        parse_quote(struct.pack("<H", 5) + raw[2:])
    with pytest.raises(AttestationError, match="trailing"):
        parse_quote(raw + b"\x01")
    with pytest.raises(AttestationError):
        parse_quote("not bytes")  # type: ignore[arg-type]
    assert parse_quote(raw + bytes(70)).raw.startswith(raw)  # zero padding, as in the TDX sample
