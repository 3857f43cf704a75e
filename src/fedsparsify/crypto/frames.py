"""Ciphertext frames as residue arrays, and their bit-packed payload (wire format 3).

A CKKS ciphertext of a key set is a pair (c0, c1) of polynomials in NTT form, each k x N
residues (k ciphertext primes q_i, ring degree N). A seeded upload's c1 is ``a``, expanded by
SEAL from a 65-byte PRNG record (type byte, 64-byte seed). A sum of seeded ciphertexts has
``c1 = sum_j a_j``, a public function of the contributors' records, so a sum travels as
``sum_j c0_j`` plus every record, and whoever decrypts rebuilds ``sum_j a_j``. Pairwise masks
live in c0 and cancel in its sum; nothing here needs the secret key.

Packed payload, of fixed length for a key set and a seed count ``s`` (the header's ``seeds``)::

    c0      for each prime q_i: N residues of bits(q_i) bits each, LSB first
    s == 0  c1, packed like c0                                  (full form)
    s >= 1  s PRNG records of 65 bytes; c1 = sum of expansions  (seeded form)

A stream's last frame, when it holds t < values-per-ciphertext values, is a *tail*: its values
sit in the first t coefficients of the plaintext polynomial (coefficient encoding, scale as
the preset's) and its polynomials are in coefficient form, so c0 travels truncated to those t
coefficients (decryption needs no other coefficient of c0) and a partly filled ciphertext costs
in proportion to what it holds. c1 (when sent) is whole; seeds expand to its NTT form.

Every residue is checked below its prime, every record's PRNG type is one SEAL knows, and a
full-form c1 of zeros (a transparent ciphertext, which carries its plaintext) is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedsparsify.crypto._seal import (
    PRNG_RECORD_BYTES,
    CiphertextParts,
    ciphertext_bytes,
    ciphertext_parts,
)
from fedsparsify.errors import MalformedStreamError, ParameterMismatchError

__all__ = [
    "PRNG_RECORD_BYTES",
    "PRNG_TYPES",
    "RingCodec",
    "RingFrame",
    "pack_bits",
    "packed_bytes",
    "unpack_bits",
]

logger = logging.getLogger(__name__)

#: SEAL's PRNG types a record may name (1: Blake2xb, 2: SHAKE-256; 0 is "unknown").
PRNG_TYPES = (1, 2)


@dataclass(frozen=True)
class RingFrame:
    """One ciphertext (or sum of ciphertexts) as residues.

    ``c0``: (k, N) uint64 (a tail: (k, tail), coefficient form). ``c1``: (k, N) uint64, or
    None when the second polynomial is given only by ``seeds`` (PRNG records). In general
    ``c1_true = (c1 or 0) + sum(expand(seeds))``. ``tail``: 0, or the t values of a tail frame.
    """

    c0: np.ndarray
    c1: np.ndarray | None
    seeds: tuple[bytes, ...] = ()
    tail: int = 0


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """``values`` (uint64, each below 2^width) as a little-endian bit string of ``width`` bits
    per value; whole bytes when ``len(values) * width`` is a multiple of 8."""
    words = np.ascontiguousarray(values, dtype="<u8").view(np.uint8).reshape(-1, 8)
    if width % 8 == 0:
        return words[:, : width // 8].tobytes()
    bits = np.unpackbits(words, axis=1, bitorder="little")[:, :width]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def packed_bytes(count: int, width: int) -> int:
    """Bytes of ``count`` values of ``width`` bits (the last byte zero-padded)."""
    return -(-count * width // 8)


def unpack_bits(data: bytes | memoryview, width: int, count: int) -> np.ndarray:
    """The inverse of :func:`pack_bits`: ``count`` uint64 values of ``width`` bits (ValueError
    when the padding bits of the last byte are not zero)."""
    raw = np.frombuffer(data, dtype=np.uint8, count=-(-count * width // 8))
    if width % 8 == 0:
        wide = np.zeros((count, 8), dtype=np.uint8)
        wide[:, : width // 8] = raw.reshape(count, width // 8)
    else:
        every = np.unpackbits(raw, bitorder="little")
        if every[count * width :].any():
            raise ValueError("padding bits are not zero")
        bits = every[: count * width].reshape(count, width)
        wide = np.packbits(
            np.pad(bits, ((0, 0), (0, 64 - width))), axis=1, bitorder="little"
        ).reshape(count, 8)
    return wide.view("<u8").reshape(count).astype(np.uint64, copy=False)


class RingCodec:
    """Frame codecs of one key set: packed payloads, SEAL bytes, sums.

    Built by :class:`~fedsparsify.crypto.context.PublicContext` from its first data level
    (``moduli``: the ciphertext primes, ``parms_id``, ``scale``) and the SEAL version it saves.
    """

    def __init__(
        self,
        moduli: Sequence[int],
        ring: int,
        *,
        parms_id: Sequence[int],
        scale: float,
        version: tuple[int, int],
    ) -> None:
        self.moduli = tuple(int(q) for q in moduli)
        self.ring = int(ring)
        self.widths = tuple(q.bit_length() for q in self.moduli)
        if any(self.ring * w % 8 for w in self.widths):
            raise ValueError("ring degree times residue width must fill whole bytes")
        self.parms_id = (int(parms_id[0]), int(parms_id[1]), int(parms_id[2]), int(parms_id[3]))
        self.scale = float(scale)
        self.version = version
        self.poly_bytes = self.poly_bytes_for(self.ring)
        self._q = np.asarray(self.moduli, dtype=np.uint64)[:, None]
        self._zero = np.zeros((len(self.moduli), self.ring), dtype=np.uint64)

    @property
    def shape(self) -> tuple[int, int]:
        """(k, N) of one polynomial."""
        return len(self.moduli), self.ring

    def poly_bytes_for(self, coefficients: int) -> int:
        """Bytes of one packed polynomial of ``coefficients`` coefficients per prime."""
        return sum(packed_bytes(coefficients, w) for w in self.widths)

    def payload_bytes(self, seeds: int, tail: int = 0) -> int:
        """Exact length of a packed payload with ``seeds`` records (0: full form); ``tail``:
        the values of a tail frame (0: a whole one)."""
        c0 = self.poly_bytes_for(tail) if tail else self.poly_bytes
        return c0 + (self.poly_bytes if seeds == 0 else seeds * PRNG_RECORD_BYTES)

    def seeded_is_smaller(self, seeds: int) -> bool:
        """Whether ``seeds`` records cost fewer bytes than a packed c1."""
        return seeds > 0 and seeds * PRNG_RECORD_BYTES < self.poly_bytes

    # -- packed payloads ------------------------------------------------------------------

    def pack(self, frame: RingFrame) -> bytes:
        """The packed payload of ``frame``: full form when it has a c1 (and no seeds), else
        seeded form."""
        parts = [self._pack_poly(frame.c0, frame.tail or self.ring)]
        if frame.c1 is not None:
            if frame.seeds:
                raise ValueError("expand the seeds into c1 before packing the full form")
            parts.append(self._pack_poly(frame.c1, self.ring))
        elif not frame.seeds:
            raise ValueError("a frame needs a c1 or at least one seed")
        parts.extend(frame.seeds)
        return b"".join(parts)

    def unpack(self, payload: bytes, seeds: int, tail: int = 0) -> RingFrame:
        """Decode and check a packed payload with ``seeds`` records (0: full form); ``tail``:
        the values of a tail frame (0: a whole one)."""
        want = self.payload_bytes(seeds, tail)
        if len(payload) != want:
            raise ParameterMismatchError(
                f"packed frame of {len(payload)} bytes, expected {want} "
                f"({self._describe(seeds, tail)})"
            )
        view = memoryview(payload)
        at = self.poly_bytes_for(tail) if tail else self.poly_bytes
        c0 = self._unpack_poly(view[:at], "c0", tail or self.ring)
        if seeds == 0:
            c1 = self._unpack_poly(view[at:], "c1", self.ring)
            if not c1.any():
                raise MalformedStreamError("refusing a transparent ciphertext (its c1 is zero)")
            return RingFrame(c0, c1, (), tail)
        records = tuple(
            bytes(view[at + i * PRNG_RECORD_BYTES : at + (i + 1) * PRNG_RECORD_BYTES])
            for i in range(seeds)
        )
        for record in records:
            if record[0] not in PRNG_TYPES:
                raise MalformedStreamError(f"unknown PRNG type {record[0]} in a seed record")
        return RingFrame(c0, None, records, tail)

    def _describe(self, seeds: int, tail: int) -> str:
        bits = "/".join(str(w) for w in self.widths)
        c0 = f"c0 truncated to {tail} coefficients" if tail else "c0"
        form = f"{c0} and c1" if seeds == 0 else f"{c0} and {seeds} seed record(s)"
        return f"{form} at {bits}-bit residues, N={self.ring}"

    def _pack_poly(self, poly: np.ndarray, count: int) -> bytes:
        if poly.shape != (len(self.moduli), count):
            raise ValueError(f"a polynomial of shape {poly.shape}, expected {count} coefficients")
        return b"".join(pack_bits(row, w) for row, w in zip(poly, self.widths, strict=True))

    def _unpack_poly(self, data: memoryview, name: str, count: int) -> np.ndarray:
        out = np.empty((len(self.moduli), count), dtype=np.uint64)
        at = 0
        for i, w in enumerate(self.widths):
            size = packed_bytes(count, w)
            try:
                out[i] = unpack_bits(data[at : at + size], w, count)
            except ValueError as exc:
                raise MalformedStreamError(f"{name}: {exc}") from exc
            at += size
        high = out >= self._q
        if high.any():
            prime, index = (int(v[0]) for v in np.nonzero(high))
            raise MalformedStreamError(
                f"{name} residue {index} of prime {prime} is {int(out[prime, index])}, not "
                f"below the prime {self.moduli[prime]}"
            )
        return out

    # -- SEAL bytes -----------------------------------------------------------------------

    def from_seal(self, payload: bytes) -> RingFrame:
        """A SEAL-serialised ciphertext (wire formats 1 and 2) as a frame, checked against the
        key set's first data level."""
        try:
            parts = ciphertext_parts(payload, 256 + 16 * self.poly_bytes)
        except ValueError as exc:
            raise MalformedStreamError(f"unreadable SEAL ciphertext: {exc}") from exc
        if (
            parts.parms_id != self.parms_id
            or not parts.ntt_form
            or parts.size != 2
            or (parts.coeff_modulus_size, parts.poly_modulus_degree) != self.shape
            or parts.scale != self.scale
            or parts.correction_factor != 1
        ):
            raise ParameterMismatchError("ciphertext level, size or scale differs from the key set")
        polys = parts.data.reshape(-1, *self.shape).astype(np.uint64)
        if (polys >= self._q).any():
            raise MalformedStreamError("a ciphertext residue is not below its prime")
        if parts.prng is not None:
            if parts.prng[0] not in PRNG_TYPES:
                raise MalformedStreamError(f"unknown PRNG type {parts.prng[0]}")
            return RingFrame(polys[0], None, (parts.prng,))
        return RingFrame(polys[0], polys[1])

    def to_seal(
        self,
        c0: np.ndarray,
        *,
        c1: np.ndarray | None = None,
        seed: bytes | None = None,
        ntt_form: bool = True,
    ) -> bytes:
        """SEAL bytes of the ciphertext (c0, c1), or (c0, expand(seed)); ``ntt_form=False``
        for polynomials in coefficient form (SEAL transforms them with its evaluator)."""
        if (c1 is None) == (seed is None):
            raise ValueError("give exactly one of c1 and seed")
        data = c0.reshape(-1) if c1 is None else np.concatenate([c0.reshape(-1), c1.reshape(-1)])
        parts = CiphertextParts(
            version=self.version,
            parms_id=self.parms_id,
            ntt_form=ntt_form,
            size=2,
            poly_modulus_degree=self.ring,
            coeff_modulus_size=len(self.moduli),
            scale=self.scale,
            correction_factor=1,
            data=data,
            prng=seed,
        )
        return ciphertext_bytes(parts)

    @property
    def zero(self) -> np.ndarray:
        """The zero polynomial (read-only)."""
        return self._zero

    # -- arithmetic -----------------------------------------------------------------------

    def add(self, a: RingFrame, b: RingFrame) -> RingFrame:
        """``a + b``: c0 and c1 added modulo each prime, seed records concatenated."""
        if a.tail != b.tail:
            raise ParameterMismatchError("a tail frame can only be added to a tail frame")
        c0 = self._add(a.c0, b.c0)
        if a.c1 is None:
            c1 = b.c1
        elif b.c1 is None:
            c1 = a.c1
        else:
            c1 = self._add(a.c1, b.c1)
        return RingFrame(c0, c1, a.seeds + b.seeds, a.tail)

    def add_poly(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Coefficient-wise ``a + b`` modulo each prime."""
        return self._add(a, b)

    def _add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = a + b
        np.subtract(out, self._q, out=out, where=out >= self._q)
        return out
