"""Aggregator side: the homomorphic sum of update (or aggregate) streams, with no secret key.

:func:`add_updates` reads frame i of every source, adds them, writes frame i of the sum, and
moves on, so memory stays at a few ciphertexts per source whatever the number of values. Its
sources may be updates or earlier aggregates, so a server can keep a running sum::

    add_updates(ctx, [old_sum_file, new_upload_file], out)

Contributors: the output lists the sources' contributors in order; one contributor appearing in
two sources (its update would count twice) is refused with :class:`CountMismatchError`.
Anonymous updates (no contributor) cannot be checked that way. On any error, ``out`` holds a
partial stream: write to a temporary file and rename it only on success.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from fedsparsify.crypto.context import Frame, PublicContext, SecretContext
from fedsparsify.crypto.wire import (
    FORMAT_VERSION,
    READ_CHUNK_BYTES,
    WEIGHT_TOLERANCE,
    UpdateHeader,
    UpdateParser,
    frame_bytes,
)
from fedsparsify.errors import (
    ConfigError,
    CountMismatchError,
    MaskMismatchError,
    RoundMismatchError,
    ValueRangeError,
    WireFormatError,
)

__all__ = ["add_updates"]

logger = logging.getLogger(__name__)


@contextmanager
def _labelled(index: int) -> Iterator[None]:
    """Prefix wire errors with the index of the source they come from."""
    try:
        yield
    except WireFormatError as exc:
        raise type(exc)(f"source {index}: {exc}") from exc


class _Source:
    """One input stream: its parser and the frames it has loaded but not yet handed out."""

    def __init__(self, ctx: PublicContext, stream: BinaryIO, index: int) -> None:
        self._stream = stream
        self._index = index
        self._parser = UpdateParser(ctx, expect_kind=None)
        self._pending: deque[Frame] = deque()
        while self._parser.header is None:
            if not self._pull():
                with _labelled(index):
                    self._parser.finish()
        self.header: UpdateHeader = self._parser.header

    def _pull(self) -> bool:
        """Read one chunk into the parser; False at the end of the stream."""
        chunk = self._stream.read(READ_CHUNK_BYTES)
        if not chunk:
            return False
        with _labelled(self._index):
            self._pending.extend(frame for _, frame in self._parser._feed(chunk))
        return True

    def next_frame(self) -> Frame:
        """The next loaded frame; :class:`TruncatedStreamError` if the stream ended."""
        while not self._pending:
            if not self._pull():
                with _labelled(self._index):
                    self._parser.finish()
        return self._pending.popleft()

    def finish(self) -> None:
        """Read to the end: trailing bytes or a missing frame raise here."""
        while self._pull():
            pass
        with _labelled(self._index):
            self._parser.finish()


def add_updates(
    public_ctx: PublicContext, sources: Sequence[BinaryIO], out: BinaryIO
) -> UpdateHeader:
    """Write the homomorphic sum of ``sources`` to ``out``; return the aggregate's header.

    All sources must be made under ``public_ctx``'s key set (:class:`ContextMismatchError`,
    :class:`ParameterMismatchError`), agree on the mask digest (:class:`MaskMismatchError`) and
    the value count (:class:`CountMismatchError`), and be made for the same round binding and
    channel (:class:`RoundMismatchError`). A total weight above 1 (+1e-6 rounding) could
    overflow CKKS and is refused with :class:`ValueRangeError`. Needs no secret key.
    """
    if isinstance(public_ctx, SecretContext):
        public_ctx = public_ctx.public()
    if not isinstance(public_ctx, PublicContext):
        raise ConfigError("add_updates needs a PublicContext")
    if not sources:
        raise ConfigError("add_updates needs at least one source")
    inputs = [_Source(public_ctx, stream, i) for i, stream in enumerate(sources)]
    headers = [s.header for s in inputs]
    first = headers[0]
    for i, h in enumerate(headers[1:], start=1):
        if h.mask_digest != first.mask_digest:
            raise MaskMismatchError(
                f"source {i} was made under mask {h.mask_digest[:16]}…, source 0 under "
                f"{first.mask_digest[:16]}…"
            )
        if (h.binding, h.channel) != (first.binding, first.channel):
            raise RoundMismatchError(
                f"source {i} was made for another federation, round, attempt, participant set "
                "or channel than source 0"
            )
        if h.n_values != first.n_values:
            raise CountMismatchError(
                f"source {i} carries {h.n_values} values, source 0 carries {first.n_values}"
            )
    weight = math.fsum(h.weight for h in headers)
    if weight > 1.0 + WEIGHT_TOLERANCE:
        raise ValueRangeError(
            f"the weights sum to {weight:.9g} > 1: the encrypted sum could overflow CKKS's range"
        )
    contributors: list[str] = []
    seen: set[str] = set()
    for h in headers:
        for who in h.contributors:
            if who in seen:
                raise CountMismatchError(f"contributor {who!r} would be counted twice")
            seen.add(who)
            contributors.append(who)
    header = UpdateHeader(
        version=FORMAT_VERSION,
        kind="aggregate",
        preset=first.preset,
        context_digest=first.context_digest,
        mask_digest=first.mask_digest,
        weight=weight,
        n_values=first.n_values,
        values_per_ciphertext=first.values_per_ciphertext,
        n_ciphertexts=first.n_ciphertexts,
        contributors=tuple(contributors),
        federation_id=first.federation_id,
        round=first.round,
        attempt=first.attempt,
        participants_digest=first.participants_digest,
        channel=first.channel,
    )
    out.write(header.to_bytes())
    for _ in range(header.n_ciphertexts):
        acc = inputs[0].next_frame()
        for source in inputs[1:]:
            acc = public_ctx._add_frames(acc, source.next_frame())
        out.write(frame_bytes(public_ctx._dump_frame(acc)))
    for source in inputs:
        source.finish()
    logger.debug(
        "summed %d streams (%d ciphertexts, weight %.6g)",
        len(inputs),
        header.n_ciphertexts,
        header.weight,
    )
    return header
