"""Aggregator side: the homomorphic sum of update (or aggregate) streams, with no secret key.

:func:`add_updates` reads frame i of every source, adds them, writes frame i of the sum, and
moves on, so memory stays at a few ciphertexts per source whatever the number of values. Its
sources may be updates or earlier aggregates, so a server can keep a running sum::

    add_updates(ctx, [old_sum_file, new_upload_file], out)

:class:`RunningSum` does the same for one update whose frames arrive one at a time (an upload
being received), so the sum is ready when the body has been read.

A sum adds c0 (and c1) residue by residue modulo each prime (:mod:`fedsparsify.crypto.frames`)
and keeps the seed records of seeded sources: it is written in seeded form (c0 plus one record
per seeded source) while that is smaller than a packed c1, else in full form (the records
expanded by SEAL into c1). The header's ``seeds`` says which.

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
from typing import BinaryIO, Protocol

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
    ParameterMismatchError,
    RoundMismatchError,
    ValueRangeError,
    WireFormatError,
)

__all__ = ["RunningSum", "Writer", "add_updates", "sum_header"]

logger = logging.getLogger(__name__)


@contextmanager
def _labelled(index: int) -> Iterator[None]:
    """Prefix wire errors with the index of the source they come from."""
    try:
        yield
    except WireFormatError as exc:
        raise type(exc)(f"source {index}: {exc}") from exc


class Writer(Protocol):
    """Where a sum goes: anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> int:
        """Write ``data``."""
        ...


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


def _context(public_ctx: PublicContext) -> PublicContext:
    if isinstance(public_ctx, SecretContext):
        public_ctx = public_ctx.public()
    if not isinstance(public_ctx, PublicContext):
        raise ConfigError("a sum needs a PublicContext")
    return public_ctx


def sum_header(public_ctx: PublicContext, headers: Sequence[UpdateHeader]) -> UpdateHeader:
    """The header of the sum of streams with ``headers``, after checking that they add up.

    All must agree on the mask digest (:class:`MaskMismatchError`), the value count
    (:class:`CountMismatchError`) and the round binding and channel
    (:class:`RoundMismatchError`); a total weight above 1 (+1e-6 rounding) could overflow CKKS
    and is refused with :class:`ValueRangeError`; a contributor may appear once.
    """
    public_ctx = _context(public_ctx)
    if not headers:
        raise ConfigError("a sum needs at least one source")
    first = headers[0]
    tails = first.n_values % first.values_per_ciphertext
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
        if tails and (h.payload == "seal") != (first.payload == "seal"):
            raise ParameterMismatchError(
                f"source {i} is wire format {h.version} and source 0 format {first.version}: "
                "their last, partly filled ciphertexts are encoded differently and cannot be "
                "added; every site of a round must write wire format 3 (upgrade the site)"
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
    seeds = 0
    ring = public_ctx.ring
    if ring is not None and all(h.payload == "packed" and h.seeds for h in headers):
        total = sum(h.seeds for h in headers)
        seeds = total if ring.seeded_is_smaller(total) else 0
    # Sums of version 1 or 2 streams whose last ciphertext is partly filled stay in version 2:
    # format 3 encodes that ciphertext differently (a tail frame).
    legacy = bool(tails) and first.payload == "seal"
    current = "packed" if public_ctx.preset.encrypted else "float32"
    payload = "seal" if legacy else current
    return UpdateHeader(
        version=2 if legacy else FORMAT_VERSION,
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
        payload=payload,
        seeds=seeds,
    )


def add_updates(
    public_ctx: PublicContext,
    sources: Sequence[BinaryIO],
    out: Writer,
) -> UpdateHeader:
    """Write the homomorphic sum of ``sources`` to ``out``; return the aggregate's header.

    All sources must be made under ``public_ctx``'s key set (:class:`ContextMismatchError`,
    :class:`ParameterMismatchError`) and add up (:func:`sum_header`). Needs no secret key.
    """
    public_ctx = _context(public_ctx)
    if not sources:
        raise ConfigError("add_updates needs at least one source")
    inputs = [_Source(public_ctx, stream, i) for i, stream in enumerate(sources)]
    header = sum_header(public_ctx, [s.header for s in inputs])
    out.write(header.to_bytes())
    for _ in range(header.n_ciphertexts):
        acc = inputs[0].next_frame()
        for source in inputs[1:]:
            acc = public_ctx._add_frames(acc, source.next_frame())
        out.write(frame_bytes(public_ctx._dump_frame(acc, header.seeds, header.payload)))
    for source in inputs:
        source.finish()
    logger.debug(
        "summed %d streams (%d ciphertexts, weight %.6g, %d seed records per frame)",
        len(inputs),
        header.n_ciphertexts,
        header.weight,
        header.seeds,
    )
    return header


class RunningSum:
    """A sum being extended by one update whose frames arrive one at a time.

    ``base`` is the sum so far (an aggregate or update stream, or None for the first update),
    read frame by frame as the update's frames come in; the new sum goes to ``out``. Call
    :meth:`start` with the update's header, :meth:`add` with each of its loaded frames in
    order, then :meth:`finish`. The update itself must already be checked (its parser); errors
    here concern the combination (:func:`sum_header`) or the base.
    """

    def __init__(self, public_ctx: PublicContext, base: BinaryIO | None, out: Writer) -> None:
        self._ctx = _context(public_ctx)
        self._out = out
        self._base = _Source(self._ctx, base, 0) if base is not None else None
        self._header: UpdateHeader | None = None
        self._frames = 0

    @property
    def base_contributors(self) -> tuple[str, ...]:
        """Who is in the base sum (empty without one)."""
        return self._base.header.contributors if self._base is not None else ()

    def start(self, update: UpdateHeader) -> UpdateHeader:
        """Write the new sum's header; return it."""
        headers = [update] if self._base is None else [self._base.header, update]
        self._header = sum_header(self._ctx, headers)
        self._out.write(self._header.to_bytes())
        return self._header

    def add(self, frame: Frame) -> None:
        """Add the update's next frame to the base's next frame and write the result."""
        if self._header is None:
            raise ConfigError("RunningSum.start() first")
        if self._base is not None:
            with _labelled(0):
                frame = self._ctx._add_frames(self._base.next_frame(), frame)
        header = self._header
        self._out.write(frame_bytes(self._ctx._dump_frame(frame, header.seeds, header.payload)))
        self._frames += 1

    def finish(self) -> UpdateHeader:
        """Check that the base ended where the update did; return the sum's header."""
        if self._header is None or self._frames != self._header.n_ciphertexts:
            raise ConfigError("the update's frames did not all reach the running sum")
        if self._base is not None:
            self._base.finish()
        return self._header
