"""A client's own directory: identity, credentials, keys, and the state it resumes from.

Everything a site must keep across a restart lives here, written atomically (temporary name,
flush, fsync, rename), owner-only (files 0600, directories 0700). Nothing here is ever sent to
the aggregator except what the runtime chooses to send. Layout (state version 2)::

    state.json           {"version": 2}
    signing.key          Ed25519 private key (raw 32 bytes)
    identity.key         X25519 envelope private key (raw 32 bytes; the name of release 0.1)
    mask.key             X25519 mask private key (raw 32 bytes)
    credentials.json     registration: federation, client id, bearer token
    secret_context.bin   the CKKS key set with its secret key
    checkpoint.safetensors  the round state a restarted site resumes from: tensors plus a
                         JSON record, checkpoint version 2 (:mod:`.checkpoint`); a
                         ``checkpoint.pt`` pickle of earlier code is migrated on first load
    rounds/update-r{R}.npz             what this site trained in round R (re-encrypted on a
                                       new attempt, never retrained)
    rounds/sent-r{R}-a{A}-{channel}.bin  the exact bytes uploaded for attempt A of round R:
                                       resent as they are after a restart, so a site never
                                       uploads two contents under one attempt's masks

A directory written by release 0.1 (credentials but no ``state.json``) holds no signing or mask
key, so it cannot take part under the trust model of this release: it is refused with a message
saying so (register again with a new ``--state``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsparsify.clients.checkpoint import (
    CHECKPOINT_FILE,
    CHECKPOINT_VERSION,
    LEGACY_CHECKPOINT_FILE,
    encode_checkpoint,
    read_checkpoint,
    read_legacy_checkpoint,
)
from fedsparsify.crypto import SiteIdentity
from fedsparsify.errors import ConfigError, DataError

__all__ = ["STATE_VERSION", "Credentials", "StateDir"]

#: Version of the state directory's layout (1: release 0.1, without state.json).
STATE_VERSION = 2
_KEY_FILES = ("signing.key", "identity.key", "mask.key")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """Who this site is in one federation on one aggregator."""

    server: str
    federation_id: str
    client_id: str
    token: str
    is_dealer: bool
    name: str


def _atomic_write(path: Path, data: bytes, *, secret: bool = True) -> None:
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
        os.chmod(root, 0o700)
        self._check_version()

    def _check_version(self) -> None:
        marker = self._path("state.json")
        if not marker.exists():
            if self._path("credentials.json").exists():
                raise ConfigError(
                    f"{self.root} was written by fedsparsify 0.1: it has no signing or mask key, "
                    "so it cannot take part under this release's trust model (signed key "
                    "envelopes, pairwise masks). Register again with a new --state directory."
                )
            _atomic_write(marker, json.dumps({"version": STATE_VERSION}).encode())
            return
        try:
            version = int(json.loads(marker.read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{marker} is unreadable: {exc}") from exc
        if version != STATE_VERSION:
            raise ConfigError(
                f"{self.root} has state version {version}; this release reads {STATE_VERSION}"
            )

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

    def identity(self) -> SiteIdentity:
        """The site's three private keys, created on first use."""
        raw = [self._read(name) for name in _KEY_FILES]
        if all(r is None for r in raw):
            identity = SiteIdentity.generate()
            for name, key in zip(
                _KEY_FILES,
                (identity.signing_private, identity.envelope_private, identity.mask_private),
                strict=True,
            ):
                _atomic_write(self._path(name), key)
            return identity
        if any(r is None or len(r) != 32 for r in raw):
            raise ConfigError(f"{self.root}: the identity key files {_KEY_FILES} are incomplete")
        assert raw[0] is not None and raw[1] is not None and raw[2] is not None
        return SiteIdentity(signing_private=raw[0], envelope_private=raw[1], mask_private=raw[2])

    @property
    def secret_context(self) -> bytes | None:
        """The CKKS context with its secret key, as TenSEAL serialised it."""
        return self._read("secret_context.bin")

    def save_secret_context(self, data: bytes) -> None:
        """Keep the CKKS secret context (never leaves this directory unencrypted)."""
        _atomic_write(self._path("secret_context.bin"), data, secret=True)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last saved round state, if any (a release-0.1 ``checkpoint.pt`` is migrated)."""
        path = self._path(CHECKPOINT_FILE)
        if path.exists():
            return read_checkpoint(path)
        legacy = self._path(LEGACY_CHECKPOINT_FILE)
        if not legacy.exists():
            return None
        state = read_legacy_checkpoint(legacy)
        self.save_checkpoint(state)
        legacy.unlink()
        log.info("migrated %s to %s (state version %d)", legacy, path, CHECKPOINT_VERSION)
        return state

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save round state atomically and owner-only (model, mask, last round, timings):
        tensors in safetensors, everything else as JSON in its header; no pickle."""
        _atomic_write(self._path(CHECKPOINT_FILE), encode_checkpoint(state), secret=True)

    def _rounds(self) -> Path:
        folder = self._path("rounds")
        folder.mkdir(exist_ok=True, mode=0o700)
        return folder

    def save_update(self, round_index: int, arrays: dict[str, np.ndarray]) -> None:
        """Keep what this site trained in a round (values, votes, sample count, metrics)."""
        folder = self._rounds()
        tmp = folder / f".update-r{round_index}.npz.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(folder / f"update-r{round_index}.npz")

    def load_update(self, round_index: int) -> dict[str, np.ndarray] | None:
        """The update saved for a round, if any."""
        path = self._rounds() / f"update-r{round_index}.npz"
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the saved update {path}: {exc}") from exc

    def sent_path(self, round_index: int, attempt: int, channel: str) -> Path:
        """Where the bytes uploaded for one attempt and channel are kept."""
        return self._rounds() / f"sent-r{round_index}-a{attempt}-{channel}.bin"

    def keep_sent(self, source: Path, round_index: int, attempt: int, channel: str) -> Path:
        """Move an encrypted upload into the ledger (atomically) before it is sent."""
        target = self.sent_path(round_index, attempt, channel)
        with source.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(source, target)
        return target

    def forget_rounds_before(self, round_index: int) -> None:
        """Drop saved updates and sent uploads of rounds before ``round_index``."""
        for path in self._rounds().iterdir():
            stem = path.name.split("-")
            if len(stem) > 1 and stem[1].startswith("r"):
                number = stem[1][1:].split(".")[0]
                if number.isdigit() and int(number) < round_index:
                    path.unlink(missing_ok=True)

    def scratch(self, name: str) -> Path:
        """A path for transient files (encrypted uploads, downloaded sums)."""
        folder = self._path("scratch")
        folder.mkdir(exist_ok=True, mode=0o700)
        return folder / name
