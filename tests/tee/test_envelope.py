from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sharelearn.core.errors import AttestationError, CryptoError
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.envelope import (
    ENVELOPE_MAGIC,
    EnvelopeHeader,
    EnvelopeReader,
    Rows,
    check_parties,
    rows_of,
    write_envelope,
)
from sharelearn.tee.keys import AttestedClusterKey, ClusterKeys, make_statement, verify_statement
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule
from sharelearn.tee.sim.platform import SimPlatform


def _ident() -> EnclaveIdentity:
    return EnclaveIdentity(os.urandom(32), os.urandom(32), 1, 1)


def _policy(platform: SimPlatform, ident: EnclaveIdentity, *, sim: bool = True) -> AttestationPolicy:
    return AttestationPolicy(
        accept=(EnclaveIdentityRule(mrenclave=ident.mrenclave),),
        name="owner",
        allow_simulation=sim,
        simulation_root_der=platform.root_der if sim else None,
    )


def _attested(platform: SimPlatform, ident: EnclaveIdentity, keys: ClusterKeys) -> AttestedClusterKey:
    nonce = os.urandom(32)
    statement, quote = make_statement(keys, nonce, lambda rd: platform.evidence(ident, rd))
    return verify_statement(statement, quote, _policy(platform, ident), nonce)


def _table(n: int = 50, d: int = 3) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return [f"id{i}" for i in range(n)], rng.normal(size=(n, d)), (rng.random(n) > 0.5).astype(float)


def _write(path: Path, target: AttestedClusterKey, chunk_rows: int = 10, dataset: str = "bank") -> None:
    ids, x, y = _table()
    write_envelope(
        path,
        rows_of(ids, x, y, chunk_rows),
        target=target,
        dataset=dataset,
        owner="bank",
        features=("a", "b", "c"),
        label="y",
        allowed_ops=["tee_train"],
    )


def _reader(path: Path, ident: EnclaveIdentity, keys: ClusterKeys, op: str = "tee_train") -> EnvelopeReader:
    return EnvelopeReader(
        path, identity=ident, ingest_keys={(keys.cluster, keys.epoch): keys.ingest_key}, op=op
    )


def _chunks(path: Path) -> tuple[bytes, list[bytes]]:
    raw = path.read_bytes()
    off = len(ENVELOPE_MAGIC)
    (hlen,) = struct.unpack_from(">I", raw, off)
    off += 4 + hlen
    for _ in ("signature", "kem"):
        (n,) = struct.unpack_from(">I", raw, off)
        off += 4 + n
    head, chunks = raw[:off], []
    while off < len(raw):
        (n,) = struct.unpack_from(">I", raw, off)
        chunks.append(raw[off : off + 4 + n])
        off += 4 + n
    return head, chunks


def test_roundtrip_streams_every_row_in_order(tmp_path: Path, platform: SimPlatform) -> None:
    ident, keys = _ident(), ClusterKeys.generate("train")
    _write(tmp_path / "e", _attested(platform, ident, keys), chunk_rows=7)

    reader = _reader(tmp_path / "e", ident, keys)
    blocks = list(reader.blocks())

    ids, x, y = _table()
    assert [len(b.ids) for b in blocks] == [7] * 7 + [1]
    assert [i for b in blocks for i in b.ids] == ids
    np.testing.assert_array_equal(np.vstack([b.x for b in blocks]), x)
    np.testing.assert_array_equal(np.concatenate([b.y for b in blocks if b.y is not None]), y)
    assert reader.header.audience == (ident.mrenclave.hex(),)
    assert b"id1" not in (tmp_path / "e").read_bytes()  # no plaintext ids on storage


def test_envelope_for_enclave_a_is_refused_by_an_enclave_of_another_measurement(
    tmp_path: Path, platform: SimPlatform
) -> None:
    enclave_a, enclave_b = _ident(), _ident()
    keys_a, keys_b = ClusterKeys.generate("train"), ClusterKeys.generate("train")
    _write(tmp_path / "e", _attested(platform, enclave_a, keys_a))

    with pytest.raises(AttestationError, match="not in its audience"):
        _reader(tmp_path / "e", enclave_b, keys_b)
    # Even if B lied about its identity, its own cluster key cannot unwrap A's data key.
    with pytest.raises(CryptoError, match="cannot unwrap"):
        _reader(tmp_path / "e", enclave_a, keys_b)


def test_operation_not_allowed_and_expired_are_refused(tmp_path: Path, platform: SimPlatform) -> None:
    ident, keys = _ident(), ClusterKeys.generate("train")
    _write(tmp_path / "e", _attested(platform, ident, keys))

    with pytest.raises(AttestationError, match="not in allowed_ops"):
        _reader(tmp_path / "e", ident, keys, op="export")
    with pytest.raises(AttestationError, match="expired"):
        EnvelopeReader(
            tmp_path / "e",
            identity=ident,
            ingest_keys={("train", 1): keys.ingest_key},
            op="tee_train",
            now=2**40,
        )


def test_header_edit_adding_an_audience_member_breaks_the_key_wrap(
    tmp_path: Path, platform: SimPlatform
) -> None:
    ident, intruder, keys = _ident(), _ident(), ClusterKeys.generate("train")
    _write(tmp_path / "e", _attested(platform, ident, keys))
    raw = (tmp_path / "e").read_bytes()
    edited = raw.replace(ident.mrenclave.hex().encode(), intruder.mrenclave.hex().encode())
    (tmp_path / "f").write_bytes(edited)

    with pytest.raises(AttestationError, match="not signed by owner 'bank'"):
        _reader(tmp_path / "f", intruder, keys)  # the owner's signature covers the header


@pytest.mark.parametrize("attack", ["reorder", "drop_last", "duplicate", "truncate", "swap_header"])
def test_chunk_tampering_is_detected(tmp_path: Path, platform: SimPlatform, attack: str) -> None:
    ident, keys = _ident(), ClusterKeys.generate("train")
    target = _attested(platform, ident, keys)
    _write(tmp_path / "e", target)
    head, chunks = _chunks(tmp_path / "e")
    if attack == "reorder":
        chunks[0], chunks[1] = chunks[1], chunks[0]
    elif attack == "drop_last":
        chunks = chunks[:-1]
    elif attack == "duplicate":
        chunks.insert(1, chunks[0])
    elif attack == "truncate":
        chunks[-1] = chunks[-1][:-5]
    else:  # the other envelope's header + key wrap in front of these chunks
        _write(tmp_path / "other", target, dataset="other")
        head = _chunks(tmp_path / "other")[0]
    (tmp_path / "t").write_bytes(head + b"".join(chunks))

    with pytest.raises(CryptoError):
        list(_reader(tmp_path / "t", ident, keys).blocks())


def test_statement_replay_and_production_policy_are_refused(platform: SimPlatform) -> None:
    ident, keys = _ident(), ClusterKeys.generate("train")
    statement, quote = make_statement(keys, os.urandom(32), lambda rd: platform.evidence(ident, rd))

    with pytest.raises(AttestationError, match="report_data"):
        verify_statement(statement, quote, _policy(platform, ident), os.urandom(32))  # other nonce
    nonce = os.urandom(32)
    statement, quote = make_statement(keys, nonce, lambda rd: platform.evidence(ident, rd))
    with pytest.raises(AttestationError, match="simulated evidence"):
        verify_statement(statement, quote, _policy(platform, ident, sim=False), nonce)
    forged = statement.replace(keys.ingest_pk.hex().encode(), os.urandom(32).hex().encode())
    with pytest.raises(AttestationError, match="report_data"):
        verify_statement(forged, quote, _policy(platform, ident), nonce)


def test_fsspec_urls_are_supported(platform: SimPlatform) -> None:
    pytest.importorskip("fsspec")
    ident, keys = _ident(), ClusterKeys.generate("train")
    target = _attested(platform, ident, keys)
    write_envelope(
        "memory://sml/bank.smle",
        iter([Rows(["a", "b"], np.ones((2, 1)), None)]),
        target=target,
        dataset="bank",
        owner="bank",
        features=("f",),
        label=None,
        allowed_ops=["tee_train"],
    )
    (block,) = list(_reader("memory://sml/bank.smle", ident, keys).blocks())  # type: ignore[arg-type]
    assert block.ids == ["a", "b"] and block.y is None


def _signed(
    path: Path,
    target: AttestedClusterKey,
    owner: str,
    key: Ed25519PrivateKey,
    parties: dict[str, bytes],
    label: bool,
) -> EnvelopeHeader:
    ids, x, y = _table()
    return write_envelope(
        path,
        rows_of(ids, x, y if label else None, 10),
        target=target,
        dataset=f"{owner}-data",
        owner=owner,
        features=("a", "b", "c"),
        label="y" if label else None,
        allowed_ops=["tee_train"],
        owner_key=key,
        parties=parties,
    )


def test_forger_who_attests_the_cluster_cannot_pass_an_envelope_off_as_the_banks(
    tmp_path: Path, platform: SimPlatform
) -> None:
    """The adversary attests the cluster, writes `owner: bank` at bank's storage URL with its own key."""
    ident, keys = _ident(), ClusterKeys.generate("train")
    target = _attested(platform, ident, keys)
    bank, shop, forger = (Ed25519PrivateKey.generate() for _ in range(3))
    job = {"bank": bank.public_key().public_bytes_raw(), "shop": shop.public_key().public_bytes_raw()}
    genuine_shop = _signed(tmp_path / "shop", target, "shop", shop, job, False)
    genuine_bank = _signed(tmp_path / "bank", target, "bank", bank, job, True)
    assert check_parties([genuine_bank, genuine_shop]) == {k: v.hex() for k, v in job.items()}

    # (a) the forger lists its own key for bank: its envelope verifies alone, the job does not
    lied = dict(job, bank=forger.public_key().public_bytes_raw())
    forged = _signed(tmp_path / "forged", target, "bank", forger, lied, True)
    assert _reader(tmp_path / "forged", ident, keys).header.owner == "bank"
    with pytest.raises(AttestationError, match="disagree on the job's parties"):
        check_parties([forged, genuine_shop])
    # (b) the forger copies the genuine party list but signs with its own key
    raw = (tmp_path / "forged").read_bytes()
    good_head = (tmp_path / "bank").read_bytes()
    spliced = good_head[: len(ENVELOPE_MAGIC) + 4 + struct.unpack_from(">I", good_head, 6)[0]]
    rest = raw[len(ENVELOPE_MAGIC) + 4 + struct.unpack_from(">I", raw, 6)[0] :]
    (tmp_path / "spliced").write_bytes(spliced + rest)
    with pytest.raises(AttestationError, match="not signed by owner 'bank'"):
        _reader(tmp_path / "spliced", ident, keys)
    # (c) the header edited to name the forger's key is caught by the signature or the key wrap
    edited = (
        (tmp_path / "bank")
        .read_bytes()
        .replace(job["bank"].hex().encode(), forger.public_key().public_bytes_raw().hex().encode())
    )
    (tmp_path / "edited").write_bytes(edited)
    with pytest.raises(AttestationError, match="not signed by owner 'bank'"):
        _reader(tmp_path / "edited", ident, keys)
    # (d) a second envelope for one owner, or a listed party's envelope missing, is refused
    with pytest.raises(AttestationError, match="more than one envelope"):
        check_parties([genuine_bank, genuine_bank, genuine_shop])
    with pytest.raises(AttestationError, match="no envelope from listed"):
        check_parties([genuine_bank])
