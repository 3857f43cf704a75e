"""A complete federation driven by hand over the REST API, step by step, with plain httpx.

Two sites ("north" with 120 samples, "south" with 80) and one round: the admin creates the
federation, the sites register, the dealer uploads the public CKKS context and seals the secret
key for the other site, the admin opens the round, each site encrypts its update and streams it
up, the aggregator adds the ciphertexts, and each site downloads and decrypts the sum. The only
fedsparsify imports are the crypto core's (what a site runs locally); everything that crosses the
network is a printed HTTP call. Run it against any aggregator::

    export FEDSPARSIFY_ADMIN_TOKEN=...      # the token the aggregator was started with
    fedsparsify serve --port 8000 &
    python examples/rest_walkthrough.py --server http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import base64
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from fedsparsify.crypto import (
    SecretContext,
    create_secret_context,
    decrypt_sum,
    encrypt_update,
    generate_identity_keypair,
    open_envelope,
    seal_envelope,
)

N_VALUES = 1000
MASK_DIGEST = "0" * 64  # dense model: every site packs all coordinates in the same order


@dataclass
class Site:
    """A hospital: its X25519 identity, credentials and (once it has it) the CKKS key set."""

    name: str
    num_samples: int
    private_key: bytes
    public_key: bytes
    client_id: str = ""
    token: str = ""
    key_set: SecretContext | None = None


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

    # 2. Each site registers with the enrolment token and its X25519 public key.
    sites = [Site(n, s, *generate_identity_keypair()) for n, s in (("north", 120), ("south", 80))]
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
                "public_key": base64.b64encode(site.public_key).decode(),
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
    #    secret key in it) and seals the secret key for every other member.
    dealer = sites[0]
    dealer.key_set = create_secret_context("lean")
    call(
        http[dealer.name],
        "PUT",
        f"/v1/federations/{fid}/keys/context",
        201,
        content=dealer.key_set.public_bytes(),
    )
    for member in call(http[dealer.name], "GET", f"/v1/federations/{fid}/clients", 200):
        if member["id"] == dealer.client_id:
            continue
        envelope = seal_envelope(
            dealer.key_set.secret_bytes(),
            recipient_public_key=base64.b64decode(member["public_key"]),
            federation_id=fid,
            recipient_id=member["id"],
        )
        path = f"/v1/federations/{fid}/keys/envelopes/{member['id']}"
        call(http[dealer.name], "PUT", path, 201, content=envelope)

    # 4. The other sites fetch and open their own envelope.
    for site in sites[1:]:
        sealed = call(http[site.name], "GET", f"/v1/federations/{fid}/keys/envelope", 200)
        secret = open_envelope(
            sealed.content,
            recipient_private_key=site.private_key,
            federation_id=fid,
            recipient_id=site.client_id,
        )
        site.key_set = SecretContext.from_secret_bytes(secret)

    # 5. The admin opens round 0.
    call(admin, "POST", f"/v1/federations/{fid}/rounds", 201)

    # 6. Each site encrypts its weighted update and streams it up.
    rng = np.random.default_rng(0)
    updates = {s.name: rng.normal(0.0, 0.05, N_VALUES).astype(np.float32) for s in sites}
    for site in sites:
        assert site.key_set is not None
        status = call(http[site.name], "GET", f"/v1/federations/{fid}/rounds/0", 200)
        stream = encrypt_update(
            site.key_set,
            updates[site.name],
            weight=site.num_samples / status["total_samples"],
            mask_digest=MASK_DIGEST,
            contributor=site.client_id,
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
        np.stack([updates[s.name] for s in sites]), axis=0, weights=[s.num_samples for s in sites]
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
