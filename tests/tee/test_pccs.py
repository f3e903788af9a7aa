from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sharelearn.core.errors import AttestationError, DataError
from sharelearn.tee.attestation import verify_quote
from sharelearn.tee.pccs import CollateralCache, PccsServer, fetch_collateral

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "tee-vectors" / "dcap-qvl"
# Inside both vectors' collateral windows (TCB info issued 2025-06-19).
SGX_NOW, TDX_NOW = 1750334171, 1750331763


@pytest.fixture
def cache(tmp_path: Path) -> CollateralCache:
    cache = CollateralCache(tmp_path / "pccs")
    for name in ("sgx", "tdx"):
        cache.import_json((VECTORS / f"{name}_quote_collateral.json").read_text(), source=name)
    return cache


@pytest.mark.parametrize(
    ("name", "now", "status"),
    [("sgx", SGX_NOW, "ConfigurationAndSWHardeningNeeded"), ("tdx", TDX_NOW, "UpToDate")],
)
def test_dcap_qvl_fetches_from_the_proxy_and_verifies_a_real_quote(
    cache: CollateralCache, name: str, now: int, status: str
) -> None:
    quote = (VECTORS / f"{name}_quote").read_bytes()
    with PccsServer(cache, clock=lambda: now) as pccs:
        collateral = fetch_collateral(pccs.url, quote)
    evidence = verify_quote(quote, now=now, collateral=collateral)
    assert evidence.tcb_status == status
    # what came over HTTP is what was imported
    imported = json.loads((VECTORS / f"{name}_quote_collateral.json").read_text())
    fetched = json.loads(collateral)
    assert json.loads(fetched["tcb_info"]) == json.loads(imported["tcb_info"])


def test_expired_collateral_is_withheld_and_verification_fails_closed(cache: CollateralCache) -> None:
    quote = (VECTORS / "sgx_quote").read_bytes()
    later = SGX_NOW + 400 * 86400
    with PccsServer(cache, clock=lambda: later) as pccs:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{pccs.url}/sgx/certification/v4/tcb?fmspc=00A067110000")
        assert err.value.code == 410
        with pytest.raises(AttestationError, match="collateral from"):
            fetch_collateral(pccs.url, quote)


def test_unknown_platforms_and_paths_are_404_and_bad_imports_name_the_source(
    cache: CollateralCache, tmp_path: Path
) -> None:
    with PccsServer(cache, clock=lambda: SGX_NOW) as pccs:
        for path in (
            "/sgx/certification/v4/tcb?fmspc=FFFFFFFFFFFF",
            "/sgx/certification/v4/pckcrl?ca=x",
            "/nope",
        ):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(pccs.url + path)
            assert err.value.code == 404
    with pytest.raises(DataError, match="upload.json: collateral lacks"):
        CollateralCache(tmp_path / "c2").import_json('{"tcb_info": "{}"}', source="upload.json")


def test_cli_proxy_imports_and_serves_what_dcap_qvl_verifies(tmp_path: Path) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "sharelearn", "tee", "pccs", "--cache", str(tmp_path / "c")]
    cmd += ["--add", str(VECTORS / "tdx_quote_collateral.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        imported = json.loads(proc.stdout.readline())
        assert imported["tee"] == "tdx" and imported["fmspc"] == "B0C06F000000"
        url = json.loads(proc.stdout.readline())["pccs"]
        quote = (VECTORS / "tdx_quote").read_bytes()
        # the CLI proxy serves on the wall clock: the vector's collateral has long expired
        with pytest.raises(AttestationError):
            fetch_collateral(url, quote)
        body = urllib.request.urlopen(f"{url}/sgx/certification/v4/pckcrl?ca=platform&encoding=der").read()
        assert body[:1] == b"\x30"  # a DER CRL
    finally:
        proc.terminate()
        proc.wait(10)
