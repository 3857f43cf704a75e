"""Secure aggregation as middleware around the platform's round.

Training produces a :class:`~fedsparsify.platform.rounds.LocalUpdate` and consumes a
:class:`~fedsparsify.platform.rounds.GlobalUpdate`; this module turns the first into encrypted,
pairwise-masked update files (one per channel) and decrypted aggregate files back into the
second. Training never sees a ciphertext, and nothing here knows about HTTP.

Weights come from the round (:mod:`fedsparsify.platform.round_rules`, checked by the site
against the roster): the values channel carries the site's capped share, FedSparsify-Local's
votes ``1 / len(participants)``, so the decrypted votes are the fraction of contributors keeping
each coordinate: only these counts are ever decrypted, never a single site's vote.

Decrypted averages are rounded to :data:`~fedsparsify.platform.round_rules.RESULT_GRID` before
they enter the model, metrics or any file (why and how coarse:
:mod:`fedsparsify.platform.round_rules`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedsparsify.crypto import (
    PairwiseMasker,
    RoundBinding,
    SecretContext,
    decrypt_sum,
    encrypt_update,
    read_update,
)
from fedsparsify.crypto.parallel import FramePool
from fedsparsify.errors import ConfigError
from fedsparsify.platform.round_rules import VALUES, VOTES, round_to_grid
from fedsparsify.platform.rounds import GlobalUpdate, LocalUpdate

__all__ = ["CodecStats", "UpdateCodec"]


@dataclass
class CodecStats:
    """Time and bytes spent in one direction of one round.

    ``phases``: seconds by crypto phase (``pack``, ``mask``, ``encrypt``, ``serialise`` when
    encoding; ``deserialise``, ``decrypt`` when decoding), a part of ``seconds``. ``values``:
    the values of the ``values`` channel.
    """

    seconds: float = 0.0
    bytes: int = 0
    values: int = 0
    per_channel_bytes: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)


class UpdateCodec:
    """Encrypts a site's update and decrypts a round's aggregate with one CKKS secret context.

    ``pool``: worker processes for updates of at least ``pool_min_values`` values (smaller ones
    stay in this process: see ``fedsparsify bench pool`` for where the pool starts to pay).
    """

    def __init__(
        self,
        context: SecretContext,
        *,
        contributor: str,
        pool: FramePool | None = None,
        pool_min_values: int = 0,
    ) -> None:
        self.context = context
        self.contributor = contributor
        self.pool = pool
        self.pool_min_values = pool_min_values

    def _pool_for(self, n_values: int) -> FramePool | None:
        return self.pool if self.pool is not None and n_values >= self.pool_min_values else None

    def encode(
        self,
        update: LocalUpdate,
        *,
        weights: Mapping[str, float],
        binding: RoundBinding | None,
        maskers: Mapping[str, PairwiseMasker] | None,
        scratch: Path,
    ) -> tuple[dict[str, Path], CodecStats]:
        """Write one encrypted-update file per channel under ``scratch``.

        ``weights``: the weight of each channel; ``maskers``: each channel's pairwise masker
        (None: unmasked, as the spec says).
        """
        channels: dict[str, np.ndarray] = {VALUES: update.values}
        if update.votes is not None:
            channels[VOTES] = update.votes
        if set(weights) != set(channels):
            raise ConfigError(f"weights for {sorted(weights)}, the update has {sorted(channels)}")
        stats = CodecStats()
        files: dict[str, Path] = {}
        start = time.perf_counter()
        for channel, vector in channels.items():
            path = scratch / f"upload-{channel}.bin"
            written = 0
            with path.open("wb") as out:
                for chunk in encrypt_update(
                    self.context,
                    vector,
                    weight=weights[channel],
                    mask_digest=update.mask_digest,
                    contributor=self.contributor,
                    binding=binding,
                    channel=channel,
                    masker=maskers[channel] if maskers is not None else None,
                    timings=stats.phases,
                    pool=self._pool_for(int(vector.size)),
                ):
                    out.write(chunk)
                    written += len(chunk)
            files[channel] = path
            stats.per_channel_bytes[channel] = written
            stats.bytes += written
        stats.values = int(update.values.size)
        stats.seconds = time.perf_counter() - start
        return files, stats

    def decode(self, files: dict[str, Path]) -> tuple[GlobalUpdate, CodecStats]:
        """Decrypt a round's aggregate files into the platform's :class:`GlobalUpdate`,
        rounded to the result grid."""
        if VALUES not in files:
            raise ConfigError("an aggregate needs its 'values' channel")
        stats = CodecStats()
        start = time.perf_counter()
        vectors: dict[str, np.ndarray] = {}
        digest = ""
        voters = 0
        for channel, path in files.items():
            with path.open("rb") as fh:
                pool = self._pool_for(self._values_in(path))
                header, total = decrypt_sum(self.context, fh, timings=stats.phases, pool=pool)
            vectors[channel] = round_to_grid(total / header.weight)
            if channel == VALUES:
                digest = header.mask_digest
                stats.values = header.n_values
            if channel == VOTES:
                voters = len(header.contributors)
            size = path.stat().st_size
            stats.per_channel_bytes[channel] = size
            stats.bytes += size
        stats.seconds = time.perf_counter() - start
        update = GlobalUpdate(
            mean=vectors[VALUES],
            vote_fraction=vectors.get(VOTES),
            mask_digest=digest,
            contributors=voters,
        )
        return update, stats

    def _values_in(self, path: Path) -> int:
        """The value count an aggregate file announces (0 when no pool could be used)."""
        if self.pool is None:
            return 0
        with path.open("rb") as fh:
            return read_update(fh, expect_kind=None)[0].n_values
