"""A complete federation driven by hand over the REST API, step by step, with plain httpx.

Two sites ("north" with 120 samples, "south" with 80) and one round: the admin creates the
federation, the sites register their three public keys, each checks the other's fingerprint
(here: against the keys it was handed out of band), the dealer uploads the public CKKS context
and seals and signs the secret key for the other site, which verifies the signature before it
opens it, the admin opens the round, each site masks its update pairwise with the other,
encrypts it and streams it up, the aggregator adds the ciphertexts (each of which decrypts to
noise alone), and each site downloads and decrypts the sum, in which the masks cancel. The only
fedsparsify imports are the crypto core's (what a site runs locally); everything that crosses the
network is a printed HTTP call. Run it against any aggregator::

    export FEDSPARSIFY_ADMIN_TOKEN=...      # the token the aggregator was started with
    fedsparsify serve --port 8000 &
    python examples/rest_walkthrough.py --server http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from fedsparsify.crypto import (
    PairwiseMasker,
    PublicIdentity,
    RoundBinding,
    SecretContext,
    SiteIdentity,
    create_secret_context,
    decrypt_sum,
    encrypt_update,
    open_envelope,
    seal_envelope,
)

N_VALUES = 1000
MASK_DIGEST = "0" * 64  # dense model: every site packs all coordinates in the same order


@dataclass
class Site:
    """A hospital: its identity (three key pairs), credentials and the CKKS key set."""

    name: str
    num_samples: int
    identity: SiteIdentity
    client_id: str = ""
    token: str = ""
    key_set: SecretContext | None = None

    @property
    def fingerprint(self) -> str:
        """What the other sites confirm out of band."""
        return self.identity.public().fingerprint


def b64(raw: bytes) -> str:
    """Base64 text of raw key bytes."""
    return base64.b64encode(raw).decode()


def relayed_identity(member: dict[str, Any]) -> PublicIdentity:
    """A member's keys as the aggregator relays them (a site recomputes the fingerprint)."""
    keys = [base64.b64decode(member[k]) for k in ("signing_key", "public_key", "mask_key")]
    return PublicIdentity(signing_key=keys[0], envelope_key=keys[1], mask_key=keys[2])


def call(client: httpx.Client, method: str, path: str, status: int, **kwargs: Any) -> Any:
    """One REST call, printed; exit with the server's JSON error unless it answers ``status``."""
    response = client.request(method, path, **kwargs)
    print(f"{method:4} {path} -> {response.status_code}")
    if response.status_code != status:
        raise SystemExit(f"expected {status}, got {response.status_code}: {response.text}")
    return response.json() if "json" in response.headers.get("content-type", "") else response


def run(server: str, admin_token: str) -> float:
    """Run the walkthrough; return the largest difference from the plaintext weighted average."""
    admin = httpx.Client(
        base_url=server, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
    )
    # 1. The admin creates a federation: one round of FedAvg under the lean CKKS preset.
    spec = {
        "name": "walkthrough",
        "rounds": 1,
        "min_clients": 2,
        "quorum": 2,
        "crypto_preset": "lean",
        "method": "fedavg",
        "schedule": {"kind": "none"},
        "model": {"kind": "mlp", "input_shape": [8]},
    }
    fed = call(admin, "POST", "/v1/federations", 201, json=spec)
    fid, enrollment = fed["id"], fed["enrollment_token"]

    # 2. Each site registers with the join code's token and its three public keys: Ed25519 for
    #    signing, X25519 for its key envelope and X25519 for pairwise masks.
    sites = [Site(n, s, SiteIdentity.generate()) for n, s in (("north", 120), ("south", 80))]
    confirmed = {s.fingerprint for s in sites}  # what the hospitals compared by phone
    anonymous = httpx.Client(base_url=server, timeout=30)
    for site in sites:
        reg = call(
            anonymous,
            "POST",
            f"/v1/federations/{fid}/clients",
            201,
            headers={"X-Enrollment-Token": enrollment},
            json={
                "name": site.name,
                "public_key": b64(site.identity.public().envelope_key),
                "signing_key": b64(site.identity.public().signing_key),
                "mask_key": b64(site.identity.public().mask_key),
                "num_samples": site.num_samples,
            },
        )
        site.client_id, site.token = reg["client_id"], reg["token"]
    http = {
        s.name: httpx.Client(
            base_url=server, headers={"Authorization": f"Bearer {s.token}"}, timeout=30
        )
        for s in sites
    }

    # 3. The first site is the dealer: it creates the key set, uploads the public context (no
    #    secret key in it) and seals the secret key for every other member it confirmed, signing
    #    each envelope together with the key set's digest.
    dealer = sites[0]
    dealer.key_set = create_secret_context("lean")
    call(
        http[dealer.name],
        "PUT",
        f"/v1/federations/{fid}/keys/context",
        201,
        content=dealer.key_set.public_bytes(),
    )
    members = call(http[dealer.name], "GET", f"/v1/federations/{fid}/clients", 200)
    for member in members:
        keys = relayed_identity(member)
        if member["id"] == dealer.client_id or keys.fingerprint not in confirmed:
            continue
        envelope = seal_envelope(
            dealer.key_set.secret_bytes(),
            recipient_public_key=keys.envelope_key,
            federation_id=fid,
            recipient_id=member["id"],
            dealer_id=dealer.client_id,
            key_set_digest=dealer.key_set.digest,
            signer=dealer.identity,
        )
        path = f"/v1/federations/{fid}/keys/envelopes/{member['id']}"
        call(http[dealer.name], "PUT", path, 201, content=envelope)

    # 4. The other sites fetch their own envelope, verify the confirmed dealer's signature, open
    #    it, and check the key set and the public context the aggregator serves against the
    #    signed digest.
    dealer_keys = relayed_identity(next(m for m in members if m["id"] == dealer.client_id))
    assert dealer_keys.fingerprint in confirmed, "the dealer is not a confirmed site"
    for site in sites[1:]:
        sealed = call(http[site.name], "GET", f"/v1/federations/{fid}/keys/envelope", 200)
        secret, digest = open_envelope(
            sealed.content,
            recipient_private_key=site.identity.envelope_private,
            federation_id=fid,
            recipient_id=site.client_id,
            dealer_signing_key=dealer_keys.signing_key,
        )
        site.key_set = SecretContext.from_secret_bytes(secret)
        served = call(http[site.name], "GET", f"/v1/federations/{fid}/keys/context", 200)
        assert site.key_set.digest == digest == hashlib.sha256(served.content).hexdigest()

    # 5. The admin opens round 0.
    call(admin, "POST", f"/v1/federations/{fid}/rounds", 201)

    # 6. Each site masks its update pairwise with every other participant (seeds from X25519 of
    #    the mask keys, bound to federation, round, attempt and participant set), weights it as
    #    the round says (capped shares: no site above the spec's max_weight_share), encrypts it
    #    and streams it up. The header names the round, so it cannot be replayed elsewhere.
    rng = np.random.default_rng(0)
    updates = {s.name: rng.normal(0.0, 0.05, N_VALUES).astype(np.float32) for s in sites}
    mask_keys = {m["id"]: relayed_identity(m).mask_key for m in members}
    status = call(admin, "GET", f"/v1/federations/{fid}/rounds/0", 200)
    binding = RoundBinding(fid, 0, status["attempt"], status["participants_digest"])
    for site in sites:
        assert site.key_set is not None
        masker = PairwiseMasker(
            own_id=site.client_id,
            own_mask_private=site.identity.mask_private,
            mask_keys=mask_keys,
            binding=binding,
            channel="values",
        )
        stream = encrypt_update(
            site.key_set,
            updates[site.name],
            weight=status["weights"][site.client_id],
            mask_digest=MASK_DIGEST,
            contributor=site.client_id,
            binding=binding,
            masker=masker,
        )
        call(
            http[site.name],
            "PUT",
            f"/v1/federations/{fid}/rounds/0/updates/values",
            201,
            content=stream,
            headers={"Content-Type": "application/octet-stream"},
        )

    # 7. The round closes once everyone uploaded; each site downloads and decrypts the sum.
    deadline = time.monotonic() + 60
    while call(admin, "GET", f"/v1/federations/{fid}/rounds/0", 200)["state"] != "closed":
        if time.monotonic() > deadline:
            raise SystemExit("round 0 did not close within 60 s")
        time.sleep(0.2)
    expected = np.average(
        np.stack([updates[s.name] for s in sites]),
        axis=0,
        weights=[status["weights"][s.client_id] for s in sites],
    )
    worst = 0.0
    for site in sites:
        assert site.key_set is not None
        aggregate = call(
            http[site.name], "GET", f"/v1/federations/{fid}/rounds/0/aggregate/values", 200
        )
        header, total = decrypt_sum(site.key_set, [aggregate.content])
        average = total / header.weight
        worst = max(worst, float(np.max(np.abs(average - expected))))
    print(f"decrypted average matches the plaintext weighted average within {worst:.1e}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("FEDSPARSIFY_ADMIN_TOKEN", ""),
        help="default: $FEDSPARSIFY_ADMIN_TOKEN",
    )
    args = parser.parse_args()
    if not args.admin_token:
        raise SystemExit("give --admin-token or set FEDSPARSIFY_ADMIN_TOKEN")
    run(args.server, args.admin_token)


if __name__ == "__main__":
    main()
