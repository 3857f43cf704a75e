"""Secrets: after a real round, nothing the aggregator stores or logs can decrypt anything.

A real ``fedsparsify serve`` (HTTPS, debug logging) runs a federation round with real keys and
envelopes sealed by the dealer. Then every file of its data directory, every cell of every
table of its database, and its log are read back and searched:

- no stored TenSEAL context holds a secret key, and none can decrypt;
- no stored envelope opens with any 32-byte string found in storage (the server holds no X25519
  private key), while the recipient's own key opens it;
- the CKKS secret key and the sites' X25519 private keys appear nowhere, in any encoding;
- admin, enrolment and client tokens appear nowhere; their SHA-256 hashes do;
- an envelope replayed to another recipient or another federation does not open (typed error).

Each search has a positive control (something known to be stored is found by the same search),
so the scan cannot pass by reading nothing.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import pytest
import tenseal as ts

from fedsparsify.clients.launcher import AggregatorProcess
from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.crypto import PublicContext, SiteIdentity, open_envelope
from fedsparsify.errors import EnvelopeError, SecretKeyRequiredError
from tests.security.conftest import ADMIN_TOKEN
from tests.security.pki import Pki
from tests.security.rounds import ATOL, RoundResult, run_round
from tests.security.storage import KEY_BYTES, Storage, key_candidates, read_storage, text_forms
from tests.sites import Site

pytestmark = pytest.mark.e2e

_U32 = struct.Struct(">I")


@dataclass
class Scene:
    """A finished round and what its aggregator stores."""

    server: AggregatorProcess
    result: RoundResult
    storage: Storage

    @property
    def envelopes(self) -> dict[str, bytes]:
        """Stored envelope files by recipient client id."""
        return {
            path.stem: data
            for path, data in self.storage.files.items()
            if path.parent.name == "envelopes"
        }


@pytest.fixture(scope="module")
def scene(
    tls_server: AggregatorProcess, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    with (
        tls_server.admin() as admin,
        AggregatorClient(tls_server.url, verify=str(pki.ca)) as anonymous,
    ):
        result = run_round(admin, anonymous, tmp_path_factory.mktemp("sites"))
    for site in result.sites:
        np.testing.assert_allclose(result.averages[site.name], result.expected, atol=ATOL, rtol=0)
    yield Scene(tls_server, result, read_storage(tls_server.data_dir, tls_server.log_path))


def sections(data: bytes, magic: bytes, count: int) -> list[bytes]:
    """The length-prefixed sections of a key-set file (format: crypto/context.py docstring)."""
    assert data[:4] == magic and data[4] == 1
    pos, out = 5, []
    for _ in range(count):
        (length,) = _U32.unpack_from(data, pos)
        out.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    assert pos == len(data)
    return out


def test_the_scan_reads_everything(scene: Scene) -> None:
    storage = scene.storage
    assert set(storage.tables) >= {"server_secrets", "federations", "clients", "rounds", "uploads"}
    names = {p.name for p in storage.files}
    assert "fedsparsify.db" in names and "context.bin" in names
    assert len(scene.envelopes) == 2
    assert any(p.name.startswith("aggregate-") for p in storage.files)
    assert scene.result.federation_id.encode() in storage.log
    for site in scene.result.sites:  # known to be stored: the public keys
        assert storage.find(site.public_key), site.name


def test_no_stored_context_can_decrypt(scene: Scene) -> None:
    dealer = scene.result.sites[0]
    assert dealer.key_set is not None
    pub_len = len(dealer.key_set.public_bytes())
    secret_prefix = b"FSSC\x01" + _U32.pack(pub_len) + b"FSPC"
    assert secret_prefix in dealer.key_set.secret_bytes()  # the marker a secret context has
    assert scene.storage.find(secret_prefix) == []
    contexts = 0
    for path, data in scene.storage.files.items():
        bodies = [data]
        if data[:4] == b"FSPC":
            preset_json, body = sections(data, b"FSPC", 2)
            assert json.loads(preset_json)["name"] == "lean"
            bodies.append(body)
            with pytest.raises(SecretKeyRequiredError):
                PublicContext.from_bytes(data).decrypt()
        for body in bodies:
            try:
                ctx = ts.context_from(body)
            except Exception:  # not a TenSEAL context at all
                continue
            contexts += 1
            assert not ctx.is_private() and not ctx.has_secret_key(), path
            with pytest.raises(ValueError):
                ctx.secret_key()
            vector = ts.ckks_vector(ctx, [1.0, 2.0, 3.0])
            with pytest.raises(ValueError):
                vector.decrypt()
    assert contexts == 1  # the federation's public context, and nothing else loads as one


def _open(
    envelope: bytes, key: bytes, federation_id: str, recipient_id: str, dealer: Site
) -> bytes:
    secret, _digest = open_envelope(
        envelope,
        recipient_private_key=key,
        federation_id=federation_id,
        recipient_id=recipient_id,
        dealer_signing_key=dealer.identity.public().signing_key,
    )
    return secret


def _no_envelope_opens(scene: Scene, candidates: set[bytes]) -> None:
    fid = scene.result.federation_id
    by_id = {s.client_id: s for s in scene.result.sites}
    dealer = scene.result.sites[0]
    for client_id, envelope in scene.envelopes.items():
        owner = by_id[client_id]
        assert owner.private_key not in candidates
        # the control: its recipient opens it
        assert _open(envelope, owner.private_key, fid, client_id, dealer)
        for candidate in candidates:
            with pytest.raises(EnvelopeError):
                _open(envelope, candidate, fid, client_id, dealer)


def test_no_envelope_opens_with_anything_the_server_holds(scene: Scene) -> None:
    """Database, log: every offset; blobs (ciphertexts, envelopes, context): every 32nd."""
    candidates = key_candidates(scene.storage, blob_stride=KEY_BYTES)
    assert len(candidates) > 1000
    _no_envelope_opens(scene, candidates)


@pytest.mark.slow
def test_no_envelope_opens_with_any_32_bytes_stored_anywhere(scene: Scene) -> None:
    """The same at every offset of every blob too (about half a million candidates)."""
    _no_envelope_opens(scene, key_candidates(scene.storage))


def _slices(secret: bytes, size: int = 48, count: int = 12) -> list[bytes]:
    """Pieces spread over ``secret`` (offsets a multiple of 3, so base64 forms line up too)."""
    step = max(size, (len(secret) // count) // 3 * 3)
    return [secret[i : i + size] for i in range(0, len(secret) - size + 1, step)]


def test_no_secret_key_or_private_key_is_stored_or_logged(scene: Scene) -> None:
    dealer = scene.result.sites[0]
    assert dealer.key_set is not None
    public, secret_key = sections(dealer.key_set.secret_bytes(), b"FSSC", 2)
    assert len(secret_key) > 1000
    assert scene.storage.find(public), "control: the public context is stored"
    for piece in [secret_key, *_slices(secret_key)]:
        for form in text_forms(piece):
            assert scene.storage.find(form) == [], "CKKS secret key found"
    for site in scene.result.sites:
        for form in text_forms(site.private_key):
            assert scene.storage.find(form) == [], f"{site.name}'s X25519 private key found"


def test_tokens_are_stored_only_as_hashes(scene: Scene) -> None:
    result = scene.result
    tokens = {
        ("server_secrets", "value_hash"): [ADMIN_TOKEN],
        ("federations", "enrollment_token_hash"): [result.enrollment_token],
        ("clients", "token_hash"): [s.token for s in result.sites],
    }
    for (table, column), secrets in tokens.items():
        stored = {c.value for c in scene.storage.cells if (c.table, c.column) == (table, column)}
        for token in secrets:
            assert hashlib.sha256(token.encode()).hexdigest() in stored, (table, column)
            for form in text_forms(token.encode()):
                assert scene.storage.find(form) == [], f"a token in plaintext in {table}"
            assert scene.storage.find(token[4:].encode()) == []  # not even without its prefix


def test_envelopes_are_bound_to_federation_and_recipient(scene: Scene) -> None:
    fid = scene.result.federation_id
    _dealer, b, c = scene.result.sites
    envelope = scene.envelopes[b.client_id]
    opened = _open(envelope, b.private_key, fid, b.client_id, _dealer)
    assert opened.startswith(b"FSSC")
    moved = {
        "another recipient id": (b.private_key, fid, c.client_id),
        "another federation id": (b.private_key, "f" * 32, b.client_id),
        "another recipient": (c.private_key, fid, c.client_id),
    }
    for key, federation_id, recipient_id in moved.values():
        with pytest.raises(EnvelopeError):
            _open(envelope, key, federation_id, recipient_id, _dealer)


def test_an_envelope_replayed_through_the_server_does_not_open(scene: Scene, pki: Pki) -> None:
    """The aggregator (or anyone who can write its storage) moves b's envelope to c's slot, and
    to b's own identity in another federation: neither opens, with a typed error."""
    server, result = scene.server, scene.result
    fid = result.federation_id
    dealer, b, c = result.sites
    envelope = scene.envelopes[b.client_id]
    with ExitStack() as stack:
        anonymous = stack.enter_context(AggregatorClient(server.url, verify=str(pki.ca)))

        def as_(token: str) -> AggregatorClient:
            return stack.enter_context(anonymous.with_token(token))

        dealer_api, c_api = as_(dealer.token), as_(c.token)
        dealer_api.put_envelope(fid, c.client_id, envelope)
        replayed = c_api.get_envelope(fid)
        assert replayed == envelope
        with pytest.raises(EnvelopeError):
            _open(replayed, c.private_key, fid, c.client_id, dealer)
        # b joins a second federation with the same X25519 identity.
        with server.admin() as admin:
            other = admin.create_federation({"name": "replay", "min_clients": 2, "quorum": 2})
        regs = [
            anonymous.register(
                other["id"],
                enrollment_token=other["enrollment_token"],
                name=name,
                identity=identity.public(),
                num_samples=10,
            )
            for name, identity in (("dealer", SiteIdentity.generate()), ("b-again", b.identity))
        ]
        as_(regs[0].token).put_envelope(other["id"], regs[1].client_id, envelope)
        again = as_(regs[1].token).get_envelope(other["id"])
        assert again == envelope
        with pytest.raises(EnvelopeError):
            _open(again, b.private_key, other["id"], regs[1].client_id, dealer)
