"""Client side: encrypt kept coordinates into an update stream, decrypt an aggregate.

Guarantee: if every client encrypts values with |x| <= ``preset.max_abs_value`` (checked here,
before anything is encrypted) and the weights of the updates in a sum add up to at most 1 (the
aggregator enforces it in :func:`~fedsparsify.crypto.add_updates`), the encrypted sum never
leaves CKKS's range, so it decrypts to sum_k w_k x_k within the preset's precision budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from fedsparsify.crypto.context import Frame, SecretContext, Timings, add_time
from fedsparsify.crypto.packing import check_values, check_weight, iter_chunks
from fedsparsify.crypto.pairwise import PairwiseMasker, RoundBinding
from fedsparsify.crypto.wire import (
    FORMAT_VERSION,
    UpdateHeader,
    UpdateParser,
    frame_bytes,
    iter_source,
)
from fedsparsify.errors import ConfigError, SecretKeyRequiredError

if TYPE_CHECKING:
    from fedsparsify.crypto.parallel import FramePool

__all__ = ["decrypt_sum", "encrypt_update"]

logger = logging.getLogger(__name__)


def encrypt_update(
    ctx: SecretContext,
    values: np.ndarray,
    *,
    weight: float,
    mask_digest: str,
    contributor: str = "",
    binding: RoundBinding | None = None,
    channel: str = "values",
    masker: PairwiseMasker | None = None,
    timings: Timings | None = None,
    pool: FramePool | None = None,
) -> Iterator[bytes]:
    """Encrypt a client's kept coordinates; yield the header, then one frame at a time.

    ``binding`` and ``channel`` go into the header (what the update is made for; an aggregator
    refuses an unbound upload). ``masker`` adds this participant's pairwise masks to every frame
    (it must have been made for the same binding and channel).

    ``values`` is the 1-D float32 vector of kept coordinates in canonical order; it is
    multiplied by ``weight`` (in (0, 1]) and encrypted chunk by chunk, each chunk serialised
    before the next is encrypted, so memory stays at a few ciphertexts. Arguments are checked at
    call time, before the first byte: :class:`ValueRangeError` for a weight outside (0, 1] or any
    |x| > ``ctx.preset.max_abs_value``, NaN or infinity. With ``timings`` (for benchmarks),
    seconds are added to its ``pack``, ``encrypt`` and ``serialise`` entries as frames are made.
    ``pool`` (a :class:`~fedsparsify.crypto.parallel.FramePool` of this key set) encrypts the
    frames in worker processes; ``timings`` then count its wall time as ``encrypt``.
    """
    if not isinstance(ctx, SecretContext):
        raise SecretKeyRequiredError("encrypt_update needs a SecretContext")
    w = check_weight(weight)
    check_values(ctx.preset, values)
    if not isinstance(mask_digest, str) or len(mask_digest) > 256:
        raise ConfigError("mask_digest must be a string of at most 256 characters")
    if not isinstance(contributor, str) or len(contributor) > 256:
        raise ConfigError("contributor must be a string of at most 256 characters")
    if not isinstance(channel, str) or not 0 < len(channel) <= 16:
        raise ConfigError("channel must be a string of 1 to 16 characters")
    if masker is not None and (masker.binding != binding or masker.channel != channel):
        raise ConfigError("the pairwise masker was made for another round, attempt or channel")
    if masker is not None and not ctx.preset.encrypted:
        raise ConfigError("the plaintext preset cannot carry pairwise masks")
    bound = binding or RoundBinding("", 0, 0, "")
    vpc = ctx.preset.values_per_ciphertext
    header = UpdateHeader(
        version=FORMAT_VERSION,
        kind="update",
        preset=ctx.preset.name,
        context_digest=ctx.digest,
        mask_digest=mask_digest,
        weight=w,
        n_values=int(values.size),
        values_per_ciphertext=vpc,
        n_ciphertexts=-(-int(values.size) // vpc),
        contributors=(contributor,) if contributor else (),
        federation_id=bound.federation_id,
        round=bound.round,
        attempt=bound.attempt,
        participants_digest=bound.participants_digest,
        channel=channel,
        payload="packed" if ctx.preset.encrypted else "float32",
        seeds=int(ctx.preset.encrypted and ctx.preset.seeded),
    )
    logger.debug(
        "encrypting %d values in %d ciphertexts (%s)",
        header.n_values,
        header.n_ciphertexts,
        ctx.preset.name,
    )
    if pool is not None and pool.context.digest != ctx.digest:
        raise ConfigError("the frame pool holds another key set")
    if pool is not None:
        return _pooled(pool, header, values, w, masker, timings)
    return _stream(ctx, header, values, w, masker, timings)


def _pooled(
    pool: FramePool,
    header: UpdateHeader,
    values: np.ndarray,
    weight: float,
    masker: PairwiseMasker | None,
    timings: Timings | None,
) -> Iterator[bytes]:
    yield header.to_bytes()
    started = time.perf_counter()
    for payload in pool.encrypt(iter_chunks(values, weight, header.values_per_ciphertext), masker):
        started = add_time(timings, "encrypt", started)
        yield frame_bytes(payload)
        started = time.perf_counter()


def _stream(
    ctx: SecretContext,
    header: UpdateHeader,
    values: np.ndarray,
    weight: float,
    masker: PairwiseMasker | None,
    timings: Timings | None,
) -> Iterator[bytes]:
    yield header.to_bytes()
    chunks = iter_chunks(values, weight, header.values_per_ciphertext)
    moduli = ctx.public().moduli
    ring = ctx.preset.poly_modulus_degree
    for frame in range(header.n_ciphertexts + 1):
        started = time.perf_counter()
        chunk = next(chunks, None)
        add_time(timings, "pack", started)
        if chunk is None:
            return
        mask = None
        if masker is not None:
            started = time.perf_counter()
            mask = masker.frame_mask(frame, moduli, ring)
            add_time(timings, "mask", started)
        payload = ctx._encrypt_chunk(chunk, timings=timings, mask=mask)
        started = time.perf_counter()
        framed = frame_bytes(payload)
        add_time(timings, "serialise", started)
        yield framed


def decrypt_sum(
    ctx: SecretContext,
    source: BinaryIO | Iterable[bytes],
    *,
    timings: Timings | None = None,
    pool: FramePool | None = None,
) -> tuple[UpdateHeader, np.ndarray]:
    """Decrypt an aggregate (or a single update) stream.

    Returns the header and the float64 vector sum_k w_k x_k of length ``header.n_values``;
    divide by ``header.weight`` for the weighted average. The stream is validated against the
    key set (typed wire errors). A :class:`PublicContext` cannot decrypt:
    :class:`SecretKeyRequiredError`. The result carries CKKS noise: round it (or add noise)
    before publishing it, or the ciphertext and the exact result together can expose the key.
    With ``timings`` (for benchmarks), seconds are added to its ``deserialise`` (reading,
    checking and loading frames, rebuilding seeded sums) and ``decrypt`` (decrypting and
    decoding) entries. ``pool`` rebuilds and decrypts the frames in worker processes (its wall
    time counts as ``decrypt``).
    """
    if not isinstance(ctx, SecretContext):
        raise SecretKeyRequiredError(
            "decrypt_sum needs the secret context; a public context holds no secret key"
        )
    parser = UpdateParser(ctx.public(), expect_kind=None)
    if pool is not None:
        return _decrypt_pooled(ctx, pool, parser, source, timings)
    out: np.ndarray | None = None
    index = 0
    started = time.perf_counter()
    for chunk in iter_source(source):
        loaded = parser._feed(chunk)
        add_time(timings, "deserialise", started)
        for _payload, frame in loaded:
            header = parser.header
            assert header is not None
            if out is None:
                out = np.empty(header.n_values, dtype=np.float64)
            start = index * header.values_per_ciphertext
            count = header.frame_values(index)
            out[start : start + count] = ctx._decrypt_frame(frame, count, timings=timings)
            index += 1
        started = time.perf_counter()
    header = parser.finish()
    if out is None:
        out = np.empty(header.n_values, dtype=np.float64)
    return header, out


def _decrypt_pooled(
    ctx: SecretContext,
    pool: FramePool,
    parser: UpdateParser,
    source: BinaryIO | Iterable[bytes],
    timings: Timings | None,
) -> tuple[UpdateHeader, np.ndarray]:
    if pool.context.digest != ctx.digest:
        raise ConfigError("the frame pool holds another key set")
    counts: list[int] = []

    def frames() -> Iterator[tuple[Frame, int]]:
        for chunk in iter_source(source):
            for _payload, frame in parser._feed(chunk):
                header = parser.header
                assert header is not None
                count = header.frame_values(len(counts))
                counts.append(count)
                yield frame, count

    started = time.perf_counter()
    parts = list(pool.decrypt(frames()))
    add_time(timings, "decrypt", started)
    header = parser.finish()
    out = np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
    if out.size != header.n_values:
        raise ConfigError("the frame pool returned the wrong number of values")
    return header, out
