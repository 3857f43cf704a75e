"""One encrypted round driven by the product's REST client (:class:`AggregatorClient`).

Three sites register their identities; the dealer creates the CKKS key set, uploads its public
part and seals and signs the secret context for the others; each site opens its own envelope
after checking the signature, masks and encrypts its update, streams it up, downloads the
encrypted sum and decrypts it. Everything a security test
needs to look for afterwards (tokens, private keys, secret-key bytes) is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.crypto import create_secret_context, decrypt_sum
from tests.sites import Site, encrypt_for, open_own_envelope, signed_envelopes

#: The crypto layer's documented absolute precision for a small weighted sum (lean preset).
ATOL = 1e-6
N_VALUES = 5000
MASK = "d" * 64
SAMPLES = {"north": 120, "south": 80, "east": 200}


@dataclass
class RoundSite(Site):
    """One simulated hospital, with every secret it holds and its REST client."""

    api: AggregatorClient | None = None


@dataclass
class RoundResult:
    """What a finished round left behind, seen from the sites."""

    federation_id: str
    enrollment_token: str
    sites: list[RoundSite]
    values: dict[str, np.ndarray]
    averages: dict[str, np.ndarray] = field(default_factory=dict)

    weights: dict[str, float] = field(default_factory=dict)

    @property
    def expected(self) -> np.ndarray:
        """The plaintext weighted average, computed independently."""
        return np.average(
            np.stack([self.values[s.name] for s in self.sites]),
            axis=0,
            weights=[self.weights[s.client_id] for s in self.sites],
        )

    def site(self, name: str) -> RoundSite:
        """A site by name."""
        return next(s for s in self.sites if s.name == name)


def federation_spec(**overrides: Any) -> dict[str, Any]:
    """A one-round lean federation of three sites."""
    return {
        "name": "security",
        "rounds": 1,
        "min_clients": 3,
        "quorum": 3,
        "round_timeout_s": 600,
        "auto_advance": False,
        "crypto_preset": "lean",
        "model": {"kind": "mlp", "input_shape": [8]},
        **overrides,
    }


def enrol(admin: AggregatorClient, anonymous: AggregatorClient) -> tuple[str, str, list[RoundSite]]:
    """Create a federation, register the sites, distribute the key set through envelopes."""
    created = admin.create_federation(federation_spec())
    fid, enrolment = str(created["id"]), str(created["enrollment_token"])
    sites = []
    for name, n in SAMPLES.items():
        site = RoundSite(name, n)
        reg = anonymous.register(
            fid,
            enrollment_token=enrolment,
            name=name,
            identity=site.identity.public(),
            num_samples=n,
        )
        site.client_id, site.token, site.is_dealer = reg.client_id, reg.token, reg.is_dealer
        site.api = anonymous.with_token(reg.token)
        sites.append(site)
    dealer = sites[0]
    assert dealer.is_dealer and dealer.api is not None
    dealer.key_set = create_secret_context("lean")
    dealer.api.put_context(fid, dealer.key_set.public_bytes())
    for client_id, envelope in signed_envelopes(dealer, dealer.key_set, fid, sites).items():
        dealer.api.put_envelope(fid, client_id, envelope)
    for site in sites[1:]:
        assert site.api is not None
        mine = site.api.get_envelope(fid)
        assert mine is not None
        site.key_set = open_own_envelope(site, mine, fid, dealer)
        assert site.key_set.digest == dealer.key_set.digest
    return fid, enrolment, sites


def run_round(admin: AggregatorClient, anonymous: AggregatorClient, work: Path) -> RoundResult:
    """Enrol three sites and run round 0 to the end; every site decrypts the average."""
    work.mkdir(parents=True, exist_ok=True)
    fid, enrolment, sites = enrol(admin, anonymous)
    status = admin.start_round(fid)
    assert set(status.participants) == {s.client_id for s in sites}
    rng = np.random.default_rng(17)
    result = RoundResult(
        fid,
        enrolment,
        sites,
        {s.name: rng.normal(0, 0.05, N_VALUES).astype(np.float32) for s in sites},
        weights=dict(status.weights),
    )
    round_json = {
        "index": 0,
        "attempt": status.attempt,
        "participants": list(status.participants),
        "participants_digest": status.participants_digest,
        "pairwise_masks": True,
    }
    for site in sites:
        assert site.api is not None and site.key_set is not None
        body = work / f"{site.name}-update.bin"
        body.write_bytes(
            encrypt_for(
                site.key_set,
                site,
                result.values[site.name],
                status.weights[site.client_id],
                status=round_json,
                federation_id=fid,
                members=sites,
                mask_digest=MASK,
            )
        )
        answer = site.api.upload(fid, 0, "values", body)
        assert answer["accepted"] and answer["n_values"] == N_VALUES
    stop = time.monotonic() + 30
    while admin.get_round(fid, 0).state != "closed":
        assert time.monotonic() < stop, admin.get_round(fid, 0)
        time.sleep(0.1)
    for site in sites:
        assert site.api is not None and site.key_set is not None
        target = work / f"{site.name}-aggregate.bin"
        site.api.download_aggregate(fid, 0, "values", target)
        with target.open("rb") as fh:
            header, total = decrypt_sum(site.key_set, fh)
        assert set(header.contributors) == {s.client_id for s in sites}
        result.averages[site.name] = total / header.weight
        site.api.close()
    return result
