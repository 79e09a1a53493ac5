"""Record authentication: sign, verify, tamper, wrong role, unknown root, rotation."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from schemas import authn, codec
from schemas.authn import Forged, Keyring, SignedChain, Verifier
from schemas.publisher import checkpoint_of
from schemas.records import ChainCheckpoint, LineageRecord
from schemas.topics import CHECKPOINTS, CONTROL, LINEAGE
from tests.unit import builders

ROOT = bytes(range(32))


def sealed(chain: SignedChain, record: Any) -> tuple[bytes, bytes | None]:
    _, value = chain.seal_encoded(record)
    headers = chain.headers(value)
    return value, authn.header_of(headers)


def test_a_record_signed_by_its_producer_verifies_and_names_its_role() -> None:
    ring = Keyring([ROOT])
    chain = SignedChain("admin-1a2b", keyring=ring)
    value, header = sealed(chain, builders.key_issued())
    assert Verifier(ring).check(CONTROL.name, value, header) == "admin"
    assert header is not None and header.startswith(b"v1." + ring.signing_id.encode() + b".admin.")


def test_a_changed_byte_fails_the_mac() -> None:
    ring = Keyring([ROOT])
    value, header = sealed(SignedChain("admin-1a2b", keyring=ring), builders.key_issued())
    tampered = value[:-1] + bytes([value[-1] ^ 1])
    with pytest.raises(Forged, match="forged: bad mac"):
        Verifier(ring).check(CONTROL.name, tampered, header)


def test_a_record_without_header_is_unauthenticated() -> None:
    value = codec.encode(builders.key_issued())
    with pytest.raises(Forged, match="unauthenticated: no auth header"):
        Verifier(Keyring([ROOT])).check(CONTROL.name, value, None)


def test_a_gateway_may_not_write_control_nor_a_key_issued_anywhere() -> None:
    ring = Keyring([ROOT])
    value, header = sealed(SignedChain("gateway-1a2b", keyring=ring), builders.key_issued())
    with pytest.raises(Forged, match="forged: role gateway may not write control"):
        Verifier(ring).check(CONTROL.name, value, header)
    with pytest.raises(Forged, match=r"forged: role gateway may not write key\.issued"):
        Verifier(ring).check(LINEAGE.name, value, header)
    with pytest.raises(Forged, match="may not write"):
        Verifier(ring).check("govledger.unknown", value, header)


def test_the_role_is_bound_into_the_key_so_claiming_another_fails() -> None:
    ring = Keyring([ROOT])
    value, header = sealed(SignedChain("gateway-1a2b", keyring=ring), builders.key_issued())
    assert header is not None
    claimed = header.replace(b".gateway.", b".admin.")
    with pytest.raises(Forged, match="forged: bad mac"):
        Verifier(ring).check(CONTROL.name, value, claimed)


def test_a_key_under_another_producer_id_fails() -> None:
    ring = Keyring([ROOT])
    record = builders.call()
    # Signed by a producer holding its own key, sealed under a running gateway's id.
    chain = SignedChain("gateway-victim", keyring=ring)
    _, value = chain.seal_encoded(record)
    forger = ring.credential("gateway", "gateway-forger")
    with pytest.raises(Forged, match="forged: bad mac"):
        Verifier(ring).check(LINEAGE.name, value, forger.header(value))


def test_an_unknown_root_and_a_malformed_header_are_refused() -> None:
    other = Keyring([os.urandom(32)])
    value, header = sealed(SignedChain("admin-1a2b", keyring=other), builders.key_issued())
    with pytest.raises(Forged, match="forged: unknown root"):
        Verifier(Keyring([ROOT])).check(CONTROL.name, value, header)
    for bad in (b"v1.x", b"v2.0011223344556677.admin." + b"0" * 64, b"\xff" * 10, b"a" * 500):
        with pytest.raises(Forged, match="forged: malformed auth header"):
            Verifier(Keyring([ROOT])).check(CONTROL.name, value, bad)
    with pytest.raises(Forged, match="unknown root"):
        Verifier(None).check(CONTROL.name, value, header)


def test_two_auth_headers_are_refused() -> None:
    with pytest.raises(Forged, match="more than one"):
        authn.header_of([(authn.HEADER, b"a"), (authn.HEADER, b"b")])
    assert authn.header_of({authn.HEADER: b"x"}) == b"x"
    assert authn.header_of(None) is None


def test_rotating_the_root_keeps_old_records_and_checkpoints_valid(tmp_path: Path) -> None:
    ring = authn.resolve_keyring(tmp_path, "", create=True)
    assert stat.S_IMODE((tmp_path / authn.ROOT_FILE).stat().st_mode) == 0o600
    old_id = ring.signing_id
    old_value, old_header = sealed(SignedChain("admin-old", keyring=ring), builders.key_issued())
    old_chain = SignedChain("gateway-old", keyring=ring)
    signed = old_chain.sign_checkpoint(checkpoint_of(old_chain, "stop"))
    old_checkpoint = codec.decode_as(old_chain.seal_encoded(signed)[1], ChainCheckpoint)
    new_id = authn.rotate_root(tmp_path / authn.ROOT_FILE)
    rotated = authn.resolve_keyring(tmp_path, "", create=False)
    assert rotated.ids == [old_id, new_id] and rotated.signing_id == new_id
    assert Verifier(rotated).check(CONTROL.name, old_value, old_header) == "admin"
    assert authn.checkpoint_signature_problem(old_checkpoint, rotated.org_public_keys()) is None
    new_value, new_header = sealed(SignedChain("admin-new", keyring=rotated), builders.key_issued())
    assert new_header is not None and f".{new_id}.".encode() in new_header
    # A verifier started before the rotation reads the file again for the new root.
    ring._reloaded_at -= authn.RELOAD_EVERY_S
    assert Verifier(ring).check(CONTROL.name, new_value, new_header) == "admin"


def test_a_configured_root_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(authn.KeyringError):
        authn.resolve_keyring(tmp_path, str(tmp_path / "missing.keys"), create=True)
    bad = tmp_path / "bad.keys"
    bad.write_text("not hex\n")
    with pytest.raises(authn.KeyringError, match="not a hex root"):
        authn.resolve_keyring(tmp_path, str(bad), create=True)


def test_a_signed_checkpoint_verifies_with_the_org_public_key_alone() -> None:
    ring = Keyring([ROOT])
    chain = SignedChain("gateway-1a2b", keyring=ring)
    chain.seal(builders.call())
    signed = chain.sign_checkpoint(checkpoint_of(chain, "stop"))
    sealed_checkpoint = codec.decode(chain.seal_encoded(signed)[1])
    assert isinstance(sealed_checkpoint, ChainCheckpoint)
    public = ring.org_public_keys()
    assert authn.checkpoint_signature_problem(sealed_checkpoint, public) is None
    moved = replace(sealed_checkpoint, checkpoint_seq=sealed_checkpoint.checkpoint_seq - 1)
    assert authn.checkpoint_signature_problem(moved, public) == (
        "checkpoint signature does not verify"
    )
    other_org = Keyring([os.urandom(32)]).org_public_keys()
    self_certified = replace(sealed_checkpoint, signer_root_id=next(iter(other_org)))
    assert "not certified" in str(authn.checkpoint_signature_problem(self_certified, other_org))
    assert authn.checkpoint_signature_problem(checkpoint_of(chain, "x"), public) == (
        "checkpoint is not signed"
    )


def test_a_checkpoint_is_writable_by_every_role_and_lineage_by_gateways_only() -> None:
    ring = Keyring([ROOT])
    for prefix in ("gateway", "admin", "streams", "sink"):
        chain = SignedChain(f"{prefix}-1", keyring=ring)
        value, header = sealed(chain, chain.sign_checkpoint(checkpoint_of(chain, "stop")))
        assert Verifier(ring).check(CHECKPOINTS.name, value, header) == authn.role_of(f"{prefix}-1")
    value, header = sealed(SignedChain("streams-1", keyring=ring), builders.call())
    with pytest.raises(Forged, match="role processor may not write lineage"):
        Verifier(ring).check(LINEAGE.name, value, header)


def test_every_record_type_names_the_roles_that_may_write_it() -> None:
    from schemas.codec import ALL_RECORD_TYPES as RECORD_TYPES

    # A type left out would be refused from every producer (fail closed): name its role.
    assert set(authn.ROLES_BY_TYPE) == set(RECORD_TYPES)


def test_producer_id_is_read_from_the_envelope() -> None:
    record = SignedChain("gateway-éx", keyring=Keyring([ROOT])).seal(builders.call())
    assert authn.producer_id_of(codec.encode(record)) == "gateway-éx"
    assert isinstance(record, LineageRecord)


def test_the_spool_keeps_each_frames_auth_and_reads_frames_spooled_before_it(
    tmp_path: Path,
) -> None:
    from schemas.spool import LEGACY_HEADER, Frame, Spool

    spool = Spool(tmp_path, "gateway-1", 1 << 20)
    frames = [Frame("govledger.lineage", b"t", b"value-1", b"v1.x"), Frame("t", b"", b"v2")]
    for frame in frames:
        spool.append(frame)
    assert [f for f, _ in spool.frames()] == frames
    assert spool.size_bytes == (tmp_path / "gateway-1.spool").stat().st_size
    assert [f.headers for f in frames] == [[(authn.HEADER, b"v1.x")], []]
    legacy = tmp_path / "gateway-2.spool"
    legacy.write_bytes(LEGACY_HEADER.pack(1, 1, 2) + b"tkvv")
    assert [f for f, _ in Spool(tmp_path, "gateway-2", 1 << 20).frames()] == [
        Frame("t", b"k", b"vv")
    ]


def test_org_keys_are_read_from_the_pubkey_listing() -> None:
    from replay.forged import read_org_keys

    ring = Keyring([ROOT])
    ((root_id, public),) = ring.org_public_keys().items()
    listing = f"{root_id}\ted25519:{public.hex()}\tsigning\n"
    assert read_org_keys(listing) == {root_id: public}
    for bad in ("", "x\ty\n", f"{root_id}\trsa:00\n"):
        with pytest.raises(ValueError, match="org public key"):
            read_org_keys(bad)


def test_the_sinks_check_with_a_known_header_prefix_still_refuses_what_check_refuses() -> None:
    ring = Keyring([ROOT])
    verifier = Verifier(ring)
    chain = SignedChain("gateway-1a2b", keyring=ring)
    value, header = sealed(chain, builders.call())
    assert header is not None
    entry = codec.schema_of(value)
    assert verifier.check_sealed(LINEAGE.name, value, header, entry) == "gateway"
    other, other_header = sealed(chain, builders.call())  # the producer's MAC is now kept
    assert verifier.check_sealed(LINEAGE.name, other, other_header, entry) == "gateway"
    tampered = value[:-1] + bytes([value[-1] ^ 1])
    forger = ring.credential("gateway", "gateway-forger")
    refusals = [
        (tampered, header, "forged: bad mac"),
        (value, other_header, "forged: bad mac"),  # another record's MAC
        (value, forger.header(value), "forged: bad mac"),  # another producer's key
        (value, header[:-1] + b".", "forged: malformed auth header"),
        (value, header[:-1] + b"\xff", "forged: malformed auth header"),
        (value, header + b"0", "forged: malformed auth header"),
        (value, None, "unauthenticated: no auth header"),
        (value, b"", "unauthenticated: no auth header"),
    ]
    for record, claimed, reason in refusals:
        with pytest.raises(Forged, match=reason):
            verifier.check(LINEAGE.name, record, claimed)
        with pytest.raises(Forged, match=reason):
            verifier.check_sealed(LINEAGE.name, record, claimed, entry)
    with pytest.raises(Forged, match="forged: role gateway may not write control"):
        verifier.check_sealed(CONTROL.name, value, header, entry)
