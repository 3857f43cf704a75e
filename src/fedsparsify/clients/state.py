"""A client's own directory: credentials, keys, and the model state it resumes from.

Everything a site must keep across a restart lives here, written atomically (temporary name,
flush, fsync, rename) with owner-only permissions for secrets. Nothing here is ever sent to the
aggregator except what the runtime chooses to send.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Credentials", "StateDir"]


@dataclass(frozen=True)
class Credentials:
    """Who this site is in one federation on one aggregator."""

    server: str
    federation_id: str
    client_id: str
    token: str
    is_dealer: bool
    name: str


def _atomic_write(path: Path, data: bytes, *, secret: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


class StateDir:
    """Typed access to the files of one client's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, name: str) -> Path:
        return self.root / name

    def _read(self, name: str) -> bytes | None:
        path = self._path(name)
        return path.read_bytes() if path.exists() else None

    @property
    def credentials(self) -> Credentials | None:
        """Saved registration, if this site has joined before."""
        raw = self._read("credentials.json")
        return Credentials(**json.loads(raw)) if raw is not None else None

    def save_credentials(self, creds: Credentials) -> None:
        """Keep the registration (the bearer token is a secret)."""
        _atomic_write(
            self._path("credentials.json"), json.dumps(asdict(creds)).encode(), secret=True
        )

    @property
    def identity_private_key(self) -> bytes | None:
        """The site's X25519 private key (raw 32 bytes)."""
        return self._read("identity.key")

    def save_identity_private_key(self, key: bytes) -> None:
        """Keep the X25519 private key that opens this site's envelope."""
        _atomic_write(self._path("identity.key"), key, secret=True)

    @property
    def secret_context(self) -> bytes | None:
        """The CKKS context with its secret key, as TenSEAL serialised it."""
        return self._read("secret_context.bin")

    def save_secret_context(self, data: bytes) -> None:
        """Keep the CKKS secret context (never leaves this directory unencrypted)."""
        _atomic_write(self._path("secret_context.bin"), data, secret=True)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last saved round state, if any."""
        path = self._path("checkpoint.pt")
        if not path.exists():
            return None
        loaded: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        return loaded

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save round state atomically (model, mask, last round, timings)."""
        tmp = self._path(".checkpoint.pt.tmp")
        with tmp.open("wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self._path("checkpoint.pt"))

    def scratch(self, name: str) -> Path:
        """A path for transient files (encrypted uploads, downloaded sums)."""
        folder = self._path("scratch")
        folder.mkdir(exist_ok=True)
        return folder / name
