"""The driver's running sum of one channel's encrypted updates, as an aggregator keeps it.

Updates are added as they arrive with :func:`~fedsparsify.crypto.add_updates` into a sum file
(``[sum so far, update, ...] -> new sum``, written to a temporary name and renamed), a few at a
time, so the driver holds at most ``batch`` updates whatever the number of sites. After every
addition the sum's header must say what the round expects: its binding (federation, round,
attempt, participant set), channel, mask digest, the contributors so far and the sum of their
weights; anything else is refused with a :class:`~fedsparsify.errors.RoundMismatchError` (or the
wire error ``add_updates`` raised), naming the sites in the batch.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

from fedsparsify.crypto import PublicContext, RoundBinding, UpdateHeader, add_updates
from fedsparsify.errors import CountMismatchError, RoundMismatchError, WireFormatError
from fedsparsify.platform.round_rules import WEIGHT_TOLERANCE

__all__ = ["RunningSum"]

#: Updates added per call: fewer rewrites of the sum, still only a few updates held.
DEFAULT_BATCH = 4


class RunningSum:
    """One channel's sum for one round (see the module docstring)."""

    def __init__(
        self,
        public: PublicContext,
        directory: Path,
        *,
        channel: str,
        binding: RoundBinding,
        mask_digest: str,
        weights: Mapping[str, float],
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.public = public
        self.path = directory / f"sum-{binding.round}-{channel}.bin"
        self.channel = channel
        self.binding = binding
        self.mask_digest = mask_digest
        self.weights = dict(weights)
        self.batch = max(1, batch)
        self.seconds = 0.0
        self.header: UpdateHeader | None = None
        self._pending: list[tuple[str, bytes]] = []
        self._added: list[str] = []
        self.path.unlink(missing_ok=True)

    def add(self, contributor: str, blob: bytes) -> None:
        """Queue ``contributor``'s update; the sum grows once ``batch`` are queued."""
        if contributor not in self.weights:
            raise RoundMismatchError(f"{contributor!r} is not a participant of this round")
        self._pending.append((contributor, blob))
        if len(self._pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Add the queued updates into the sum file now. A refused batch is dropped whole and
        the sum stays as it was."""
        if not self._pending:
            return
        started = time.perf_counter()
        batch, self._pending = self._pending, []
        names = [name for name, _ in batch]
        sources = [io.BytesIO(blob) for _, blob in batch]
        tmp = self.path.with_name(self.path.name + ".tmp")
        old = self.path.open("rb") if self.path.exists() else None
        try:
            with tmp.open("wb") as out:
                header = add_updates(self.public, [old, *sources] if old else sources, out)
        except WireFormatError as exc:
            tmp.unlink(missing_ok=True)
            raise type(exc)(f"update of {', '.join(names)}: {exc}") from exc
        finally:
            if old is not None:
                old.close()
        try:
            self._check(header, names)
        except WireFormatError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)
        self._added.extend(names)
        self.header = header
        self.seconds += time.perf_counter() - started

    def _check(self, header: UpdateHeader, names: list[str]) -> None:
        expected = [*self._added, *names]
        who = ", ".join(names)
        if header.binding != self.binding or header.channel != self.channel:
            raise RoundMismatchError(f"update of {who} was made for another round or channel")
        if header.mask_digest != self.mask_digest:
            raise RoundMismatchError(f"update of {who} was made under another mask")
        if list(header.contributors) != expected:
            raise CountMismatchError(f"update of {who} names contributors {header.contributors}")
        weight = math.fsum(self.weights[c] for c in expected)
        if abs(header.weight - weight) > WEIGHT_TOLERANCE:
            raise RoundMismatchError(
                f"update of {who}: the sum's weight is {header.weight:.12g}, the round's "
                f"weights give {weight:.12g}"
            )

    def finish(self) -> Path:
        """The complete sum: every participant added exactly once."""
        self.flush()
        missing = sorted(set(self.weights) - set(self._added))
        if missing:
            raise CountMismatchError(f"{len(missing)} participants never uploaded: {missing[:5]}")
        return self.path

    @property
    def held(self) -> int:
        """Updates queued in memory right now."""
        return len(self._pending)
