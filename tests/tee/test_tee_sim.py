from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sharelearn.core.errors import AttestationError, ConfigError, CryptoError, ProtocolError
from sharelearn.tee.attestation import attest
from sharelearn.tee.backend import EnclaveBackend, EnclaveHandle, EnclaveIdentity
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule
from sharelearn.tee.process import read_bundle
from sharelearn.tee.sim.backend import SimBackend, measure_bundle
from sharelearn.tee.sim.platform import SimPlatform

MakeBundle = Callable[..., Path]


def _policy(platform: SimPlatform, ident: EnclaveIdentity) -> AttestationPolicy:
    return AttestationPolicy(
        accept=(EnclaveIdentityRule(mrenclave=ident.mrenclave),),
        name="svc",
        allow_simulation=True,
        simulation_root_der=platform.root_der,
    )


def test_backend_satisfies_protocols(backend: SimBackend, make_bundle: MakeBundle) -> None:
    with backend.launch(backend.load(make_bundle())) as enclave:
        assert isinstance(backend, EnclaveBackend) and isinstance(enclave, EnclaveHandle)
        assert enclave.call("echo", {"a": [1, b"x"]}) == {"a": [1, b"x"]}


def test_measurement_covers_files_and_config(backend: SimBackend, make_bundle: MakeBundle) -> None:
    base = backend.load(make_bundle("a")).identity

    assert backend.load(make_bundle("b")).identity.mrenclave == base.mrenclave
    assert backend.load(make_bundle("c", extra="# one more byte\n")).identity.mrenclave != base.mrenclave
    assert backend.load(make_bundle("d", isv_svn=3)).identity.mrenclave != base.mrenclave
    assert backend.load(make_bundle("e", debug=True)).identity.debug


def test_tampered_bundle_is_refused_at_launch(backend: SimBackend, make_bundle: MakeBundle) -> None:
    bundle = make_bundle()
    image = backend.load(bundle)
    (bundle / "app.py").write_text((bundle / "app.py").read_text() + "\nLEAK = True\n")

    with pytest.raises(AttestationError, match="tampered bundle"):
        backend.launch(image)


def test_added_file_is_refused_at_launch(backend: SimBackend, make_bundle: MakeBundle) -> None:
    bundle = make_bundle()
    image = backend.load(bundle)
    (bundle / "evil.py").write_text("x = 1\n")

    with pytest.raises(AttestationError, match="measurement"):
        backend.launch(image)


def test_tampered_then_resigned_bundle_is_refused_by_policy(
    platform: SimPlatform, backend: SimBackend, make_bundle: MakeBundle
) -> None:
    good = backend.load(make_bundle("good")).identity
    evil = backend.load(make_bundle("evil", extra="# backdoor\n"))
    rd = os.urandom(64)

    with backend.launch(evil) as enclave:
        quote = enclave.call("quote", rd)

    assert isinstance(quote, bytes)
    with pytest.raises(AttestationError, match=r"MRENCLAVE=.*identity matches no accepted rule"):
        attest(quote, _policy(platform, good), expected_report_data=rd)


def test_symlink_in_bundle_is_refused(make_bundle: MakeBundle) -> None:
    bundle = make_bundle()
    (bundle / "link.py").symlink_to(bundle / "app.py")

    with pytest.raises(ConfigError, match="not a regular file"):
        read_bundle(bundle)


def test_quote_from_enclave_carries_platform_measured_identity(
    platform: SimPlatform, backend: SimBackend, make_bundle: MakeBundle
) -> None:
    image = backend.load(make_bundle())
    rd = os.urandom(64)

    with backend.launch(image) as enclave:
        quote = enclave.call("quote", rd)

    assert isinstance(quote, bytes)
    ev = attest(quote, _policy(platform, image.identity), expected_report_data=rd)
    assert (ev.mrenclave, ev.mrsigner, ev.isv_prod_id, ev.isv_svn) == (
        image.identity.mrenclave,
        image.identity.mrsigner,
        7,
        2,
    )
    assert ev.mrenclave == measure_bundle(read_bundle(image.bundle))


def test_sealed_data_opens_only_in_the_same_measurement(backend: SimBackend, make_bundle: MakeBundle) -> None:
    a = backend.load(make_bundle("a"))
    a_again = backend.load(make_bundle("a2"))  # same content -> same MRENCLAVE
    b = backend.load(make_bundle("b", extra="# another build\n"))

    with backend.launch(a) as enclave_a:
        blob = enclave_a.call("seal", b"model key")
    with backend.launch(a_again) as enclave_a2:
        assert enclave_a2.call("unseal", blob) == b"model key"
    with backend.launch(b) as enclave_b, pytest.raises(ProtocolError, match="unseal failed"):
        enclave_b.call("unseal", blob)


def test_sealed_data_does_not_move_to_another_platform(make_bundle: MakeBundle, backend: SimBackend) -> None:
    image = backend.load(make_bundle())
    other = SimBackend(SimPlatform(), Ed25519PrivateKey.generate())

    with backend.launch(image) as enclave:
        blob = enclave.call("seal", b"k")
    with other.launch(image) as moved, pytest.raises(ProtocolError, match="unseal failed"):
        moved.call("unseal", blob)


def test_seal_key_for_higher_svn_is_refused(platform: SimPlatform) -> None:
    ident = EnclaveIdentity(os.urandom(32), os.urandom(32), 1, 2)

    with pytest.raises(CryptoError, match="ISVSVN 3 refused"):
        platform.seal_key(ident, "mrenclave", os.urandom(32), 3)
    assert platform.seal_key(ident, "mrsigner", b"k" * 32, 1) != platform.seal_key(
        ident, "mrenclave", b"k" * 32, 1
    )


def test_enclave_process_is_reaped_on_close(backend: SimBackend, make_bundle: MakeBundle) -> None:
    enclave = backend.launch(backend.load(make_bundle()))
    pid = enclave.pid

    enclave.close()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProtocolError, match="has exited"):
        enclave.call("echo", 1)
