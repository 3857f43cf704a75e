"""A simulated hospital for end-to-end tests that drive the REST API by hand."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from fedsparsify.crypto import SecretContext


@dataclass
class Site:
    """One simulated site: its X25519 identity, credentials and (once it has it) the key set."""

    name: str
    num_samples: int
    private_key: bytes
    public_key: bytes
    client_id: str = ""
    token: str = ""
    is_dealer: bool = False
    key_set: SecretContext | None = None

    def http(self, url: str, timeout: float = 120) -> httpx.Client:
        """An httpx client holding this site's bearer token."""
        return httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout
        )
