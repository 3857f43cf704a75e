"""The upload path: frames added to the running sum while the body streams in, one data fsync
per upload, a fallback when another upload was committed meanwhile, and running sums that a
power cut damaged rebuilt at restart."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient

import fedsparsify.api.blobs as blobs_module
import fedsparsify.api.services.uploads as uploads_module
from fedsparsify.api import Settings, create_app
from fedsparsify.api.services.auth import Caller
from fedsparsify.api.services.round_store import read_header, sum_digest_key, sum_key
from fedsparsify.crypto import SecretContext, decrypt_sum
from tests.api.conftest import Fed, Harness, vectors

ATOL = 1e-6


def average_is(h: Harness, fed: Fed, members: list[int], values: list[np.ndarray]) -> None:
    header, total = decrypt_sum(h.key_set, io.BytesIO(h.aggregate(fed, 0, fed.members[0])))
    assert sorted(header.contributors) == sorted(fed.members[i].id for i in members)
    weights = [fed.members[i].num_samples for i in members]
    want = np.average(np.stack([values[i] for i in members]), axis=0, weights=weights)
    np.testing.assert_allclose(total / header.weight, want, atol=ATOL, rtol=0)


def test_an_upload_is_summed_while_it_streams_in(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploaded one after the other, no upload is added at commit time: the sum streamed in
    with the body is the one committed. The aggregate is served in seeded form."""
    fed = h.federation(samples=(10, 20, 30), pairwise_masks=True)
    values = vectors(3)
    at_commit: list[int] = []
    files = h.app.state.rounds.files
    real = files.add_to_sum
    monkeypatch.setattr(files, "add_to_sum", lambda *a: at_commit.append(1) or real(*a))
    for m, v in zip(fed.members, values, strict=True):
        r = h.upload(fed, 0, m, h.encrypt(m, v, h.weight(fed, m)))
        assert r.status_code == 201, r.text
    assert at_commit == []
    average_is(h, fed, [0, 1, 2], values)
    header = read_header(h.state.blobs.path(f"federations/{fed.id}/rounds/0/aggregate-values.bin"))
    assert header is not None and (header.payload, header.seeds) == ("packed", 3)


def test_an_upload_committed_meanwhile_falls_back_to_adding_at_commit(h: Harness) -> None:
    """Two bodies streamed in against the same (empty) sum: the second commit sees that the
    sum it streamed into is out of date and folds its upload into the current sum instead."""
    fed = h.federation(samples=(10, 20, 30), pairwise_masks=False)
    values = vectors(3)
    service = h.app.state.rounds.uploads
    state = h.state

    async def body(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 7000):
            yield data[i : i + 7000]

    staged = []
    for m, v in zip(fed.members[:2], values[:2], strict=True):
        caller = Caller(client_id=m.id, federation_id=fed.id, is_admin=False)
        ticket = service.prepare(fed.id, 0, "values", caller)
        data = h.encrypt(m, v, m.num_samples / 60)
        one = anyio.run(uploads_module.stage_upload, state, service.files, ticket, body(data))
        assert one.streamed is not None and one.streamed.base == ()
        staged.append((ticket, one))
    for ticket, one in staged:
        assert service.commit(ticket, one).accepted
    assert not list(state.blobs.tmp_dir.iterdir())  # the unused streamed sum is gone
    last = fed.members[2]
    assert h.upload(fed, 0, last, h.encrypt(last, values[2], 30 / 60)).status_code == 201
    average_is(h, fed, [0, 1, 2], values)


def test_one_data_fsync_per_upload(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upload's bytes are synced once, its rename once (a directory); the running sum not
    at all (the database commit syncs its own journal)."""
    fed = h.federation(samples=(10, 20, 30), pairwise_masks=False)
    values = vectors(2)
    synced: list[str] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    monkeypatch.setattr(uploads_module.os, "fsync", counting)
    monkeypatch.setattr(blobs_module.os, "fsync", counting)
    for m, v in zip(fed.members[:2], values, strict=True):
        synced.clear()
        assert h.upload(fed, 0, m, h.encrypt(m, v, m.num_samples / 60)).status_code == 201
        assert synced == ["file", "dir"]


def test_a_running_sum_damaged_by_a_power_cut_is_rebuilt(
    client: TestClient, h: Harness, settings: Settings, key_set: SecretContext
) -> None:
    """An unsynced running sum can come back from a power cut with its header intact and its
    frames lost: the digest file does not match it, so the restart rebuilds it."""
    fed = h.federation(samples=(10, 20, 30), pairwise_masks=False)
    values = vectors(3)
    for m, v in zip(fed.members[:2], values[:2], strict=True):
        assert h.upload(fed, 0, m, h.encrypt(m, v, m.num_samples / 60)).status_code == 201
    running = h.state.blobs.path(sum_key(fed.id, 0, "values"))
    data = running.read_bytes()
    running.write_bytes(data[:-4000] + bytes(4000))  # the page cache never reached the disk
    assert read_header(running) is not None
    assert h.state.blobs.exists(sum_digest_key(fed.id, 0, "values"))
    client.__exit__(None, None, None)
    app = create_app(settings)
    with TestClient(app) as client2:
        h2 = Harness(client2, app, key_set, feds={fed.id: fed})
        assert running.read_bytes() != data[:-4000] + bytes(4000)
        last = fed.members[2]
        assert h2.upload(fed, 0, last, h2.encrypt(last, values[2], 30 / 60)).status_code == 201
        average_is(h2, fed, [0, 1, 2], values)
