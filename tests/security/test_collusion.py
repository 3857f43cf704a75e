"""The collusion test: the aggregator plus one site try to read another site's update.

A real aggregator process keeps every upload (``FEDSPARSIFY_KEEP_UPLOADS``); three sites run a
masked round through it. The attacker then holds everything the aggregator stored and site-1's
whole state: its CKKS secret key and its mask key. It decrypts site-2's stored upload, also after
stripping the pair mask site-1 shares with site-2: what it gets is statistically independent of
site-2's update, while the round's sum still decrypts to the weighted average, and the most the
attacker learns is the sum of the two honest sites' updates.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedsparsify.api.services.round_store import upload_key
from fedsparsify.crypto import PairwiseMasker, SecretContext, UpdateParser, decrypt_sum
from tests.reliability.live import ATOL, Federation, LiveServer, expected_average
from tests.sites import binding_of

pytestmark = pytest.mark.e2e

#: 49 ciphertexts of 4096 values. Under independence the sample correlation has std 1/sqrt(n)
#: = 0.0022, so the bound |r| < 0.01 is 4.5 std away: it fails by chance with p < 1e-5.
N_VALUES = 49 * 4096


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path, env={"FEDSPARSIFY_KEEP_UPLOADS": "true"})
    try:
        yield srv
    finally:
        srv.stop()


def _decrypt_stripped(
    key_set: SecretContext, upload: bytes, strip: np.ndarray | None, n_values: int
) -> np.ndarray:
    """Decrypt every frame of ``upload`` with the secret key, after adding ``strip`` (per frame,
    RNS order) to the frame's first polynomial, where the masks live: the attacker removing a
    mask it knows."""
    parser = UpdateParser(key_set.public(), expect_kind=None)
    loaded = parser._feed(upload)
    header = parser.finish()
    moduli = np.asarray(key_set.public().moduli, dtype=np.uint64)
    ring = key_set.preset.poly_modulus_degree
    out = []
    for index, (_payload, frame) in enumerate(loaded):
        assert frame is not None
        if strip is not None:
            width = frame.c0.shape[1]
            c0 = frame.c0 + strip[index].reshape(len(moduli), ring)[:, :width]
            frame = dataclasses.replace(frame, c0=c0 % moduli[:, None])
        out.append(key_set._decrypt_frame(frame, header.frame_values(index)))
    return np.concatenate(out)[:n_values]


def test_the_aggregator_with_one_site_cannot_read_another_sites_update(
    server: LiveServer,
) -> None:
    fed = Federation.create(server, [100, 120, 140], rounds=1)
    honest_a, colluder, victim = fed.sites
    rng = np.random.default_rng(23)
    values = [rng.normal(0, 0.05, N_VALUES).astype(np.float32) for _ in fed.sites]
    status = fed.round(server, 0)
    for site, v in zip(fed.sites, values, strict=True):
        r = fed.upload(server, site, 0, fed.encrypt(server, site, v, 0, status=status))
        assert r.status_code == 201, r.text
    assert fed.wait_state(server, 0, ("closed", "failed"))["state"] == "closed"

    # What the aggregator stored: every upload, byte for byte.
    stored = server.data_dir / "blobs" / upload_key(fed.id, 0, "values", victim.client_id)
    upload = stored.read_bytes()
    key = colluder.key_set
    assert key is not None
    truth = values[2].astype(np.float64) * status["weights"][victim.client_id]

    alone = decrypt_sum(key, io.BytesIO(upload))[1]
    assert abs(np.corrcoef(alone, truth)[0, 1]) < 0.01
    assert np.abs(alone).mean() > 1000 * np.abs(truth).mean()

    # The colluder knows its own pair mask with the victim and strips it: still noise, since
    # the victim's pair with the other honest site masks it too.
    masker = PairwiseMasker(
        own_id=colluder.client_id,
        own_mask_private=colluder.identity.mask_private,
        mask_keys={s.client_id: s.identity.public().mask_key for s in fed.sites},
        binding=binding_of(status, fed.id),
        channel="values",
    )
    ring, moduli = key.preset.poly_modulus_degree, key.public().moduli
    frames = -(-N_VALUES // key.preset.values_per_ciphertext)
    strip = np.stack([masker.pair_mask(victim.client_id, f, moduli, ring) for f in range(frames)])
    stripped = _decrypt_stripped(key, upload, strip, N_VALUES)
    assert abs(np.corrcoef(stripped, truth)[0, 1]) < 0.01
    assert np.abs(stripped).mean() > 1000 * np.abs(truth).mean()
    control = _decrypt_stripped(key, upload, None, N_VALUES)
    np.testing.assert_allclose(control, alone, atol=1e-6)  # the attack's decryption is sound
    # Soundness of the stripping: with the other honest site's share too (which the attacker
    # does not have), the victim's update comes out. So the noise above is the mask, not a bug.
    other = PairwiseMasker(
        own_id=honest_a.client_id,
        own_mask_private=honest_a.identity.mask_private,
        mask_keys={s.client_id: s.identity.public().mask_key for s in fed.sites},
        binding=binding_of(status, fed.id),
        channel="values",
    )
    both = np.stack(
        [
            (strip[f] + other.pair_mask(victim.client_id, f, moduli, ring))
            % np.repeat(np.asarray(moduli, dtype=np.uint64), ring)
            for f in range(frames)
        ]
    )
    revealed = _decrypt_stripped(key, upload, both, N_VALUES)
    np.testing.assert_allclose(revealed, truth, atol=1e-4)

    # The round's sum decrypts to the weighted average; what the attacker learns beyond its own
    # update is the honest sites' sum, and nothing finer.
    weights = [status["weights"][s.client_id] for s in fed.sites]
    _who, average = fed.decrypted_average(server, honest_a, 0)
    np.testing.assert_allclose(average, expected_average(values, weights), atol=ATOL, rtol=0)
    honest_sum = average - values[1].astype(np.float64) * weights[1]
    want = values[0].astype(np.float64) * weights[0] + values[2].astype(np.float64) * weights[2]
    np.testing.assert_allclose(honest_sum, want, atol=ATOL, rtol=0)
