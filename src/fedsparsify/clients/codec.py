"""Secure aggregation as middleware around the platform's round.

Training produces a :class:`~fedsparsify.platform.rounds.LocalUpdate` and consumes a
:class:`~fedsparsify.platform.rounds.GlobalUpdate`; this module turns the first into encrypted
update files (one per channel) and decrypted aggregate files back into the second. Training
never sees a ciphertext, and nothing here knows about HTTP.

Weights: the values channel is encrypted with weight ``num_samples / total_samples`` of the
round's participants, so weights sum to at most 1 (the crypto layer's overflow guarantee);
FedSparsify-Local's votes are encrypted with weight ``1 / len(participants)``, so the decrypted
sum divided by its weight is the fraction of contributors that kept each coordinate: only these
counts are ever decrypted, never a single site's vote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedsparsify.crypto import SecretContext, decrypt_sum, encrypt_update
from fedsparsify.errors import ConfigError
from fedsparsify.platform.rounds import GlobalUpdate, LocalUpdate

__all__ = ["CodecStats", "UpdateCodec"]

VALUES = "values"
VOTES = "votes"


@dataclass
class CodecStats:
    """Time and bytes spent in one direction of one round.

    ``phases``: seconds by crypto phase (``pack``, ``encrypt``, ``serialise`` when encoding;
    ``deserialise``, ``decrypt`` when decoding), a part of ``seconds``.
    """

    seconds: float = 0.0
    bytes: int = 0
    per_channel_bytes: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)


class UpdateCodec:
    """Encrypts a site's update and decrypts a round's aggregate with one CKKS secret context."""

    def __init__(self, context: SecretContext, *, contributor: str) -> None:
        self.context = context
        self.contributor = contributor

    def encode(
        self,
        update: LocalUpdate,
        *,
        total_samples: int,
        n_participants: int,
        scratch: Path,
    ) -> tuple[dict[str, Path], CodecStats]:
        """Write one encrypted-update file per channel under ``scratch``."""
        if total_samples < update.num_samples or n_participants < 1:
            raise ConfigError(
                f"round totals ({total_samples} samples, {n_participants} participants) "
                f"cannot include this site's {update.num_samples} samples"
            )
        channels: dict[str, tuple[np.ndarray, float]] = {
            VALUES: (update.values, update.num_samples / total_samples)
        }
        if update.votes is not None:
            channels[VOTES] = (update.votes, 1.0 / n_participants)
        stats = CodecStats()
        files: dict[str, Path] = {}
        start = time.perf_counter()
        for channel, (vector, weight) in channels.items():
            path = scratch / f"upload-{channel}.bin"
            written = 0
            with path.open("wb") as out:
                for chunk in encrypt_update(
                    self.context,
                    vector,
                    weight=weight,
                    mask_digest=update.mask_digest,
                    contributor=self.contributor,
                    timings=stats.phases,
                ):
                    out.write(chunk)
                    written += len(chunk)
            files[channel] = path
            stats.per_channel_bytes[channel] = written
            stats.bytes += written
        stats.seconds = time.perf_counter() - start
        return files, stats

    def decode(self, files: dict[str, Path]) -> tuple[GlobalUpdate, CodecStats]:
        """Decrypt a round's aggregate files into the platform's :class:`GlobalUpdate`."""
        if VALUES not in files:
            raise ConfigError("an aggregate needs its 'values' channel")
        stats = CodecStats()
        start = time.perf_counter()
        vectors: dict[str, np.ndarray] = {}
        digest = ""
        for channel, path in files.items():
            with path.open("rb") as fh:
                header, total = decrypt_sum(self.context, fh, timings=stats.phases)
            vectors[channel] = (total / header.weight).astype(np.float32)
            if channel == VALUES:
                digest = header.mask_digest
            size = path.stat().st_size
            stats.per_channel_bytes[channel] = size
            stats.bytes += size
        stats.seconds = time.perf_counter() - start
        update = GlobalUpdate(
            mean=vectors[VALUES], vote_fraction=vectors.get(VOTES), mask_digest=digest
        )
        return update, stats
