"""Key sets: the dealer's :class:`SecretContext` and the aggregator's :class:`PublicContext`.

Both wrap TenSEAL objects that never leave this package. The serialised forms are ours, so that
the preset (packing, seeding) travels with the keys and is covered by the digest::

    public bytes  b"FSPC" | version u8 | u32 len | preset JSON | u32 len | body
                  body: TenSEAL context with the public key only (no secret key, no Galois keys,
                  no relinearisation keys: the aggregator only adds), or for the ``plaintext``
                  preset 16 random bytes that name the key set.
    secret bytes  b"FSSC" | version u8 | u32 len | public bytes | u32 len | SEAL secret key

The digest of a key set is the SHA-256 (hex) of its public bytes; every client and the aggregator
compute it from the same bytes. Lengths are big-endian.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import struct
import time
from typing import Any, NoReturn

import numpy as np

from fedsparsify.crypto._seal import (
    SEAL_ERRORS,
    SEAL_HEADER,
    ciphertext_bytes,
    ciphertext_parts,
    load_ciphertext,
    load_secret_key,
    plaintext_data,
    save_secret_key,
    save_to_bytes,
    seal_header_ok,
    sealapi,
    ts,
)
from fedsparsify.crypto.frames import RingCodec, RingFrame
from fedsparsify.crypto.presets import PRESETS, CkksPreset, check_security, get_preset
from fedsparsify.errors import (
    CryptoError,
    MalformedStreamError,
    ParameterMismatchError,
    SecretKeyRequiredError,
    ValueRangeError,
)

__all__ = [
    "FrameForm",
    "PublicContext",
    "SecretContext",
    "Timings",
    "add_time",
    "create_secret_context",
    "resolve_preset",
]

logger = logging.getLogger(__name__)

MAGIC_PUBLIC = b"FSPC"
MAGIC_SECRET = b"FSSC"
CONTEXT_VERSION = 1
_U32 = struct.Struct(">I")
_PLAINTEXT_ID_BYTES = 16
#: A decrypted encryption of zero must come back this close to zero, or the key pair is mixed up.
_KEY_CHECK_TOLERANCE = 1e-3

#: Seconds per phase, accumulated by the optional ``timings`` of encryption and decryption.
Timings = dict[str, float]


def add_time(timings: Timings | None, phase: str, started: float) -> float:
    """Add the seconds since ``started`` to ``timings[phase]`` (when given); return now."""
    now = time.perf_counter()
    if timings is not None:
        timings[phase] = timings.get(phase, 0.0) + (now - started)
    return now


#: A decoded frame: a :class:`~fedsparsify.crypto.frames.RingFrame` or, for the plaintext
#: preset, a float64 vector.
Frame = Any


@dataclasses.dataclass(frozen=True)
class FrameForm:
    """How a stream's frame payloads are encoded (from its header).

    ``encoding``: ``seal`` (SEAL's own serialisation, wire formats 1 and 2; float32 for the
    plaintext preset), ``packed`` (bit-packed residues, format 3) or ``float32``. ``seeds``:
    PRNG records per packed frame (0: full form). ``seal_check``: also load a packed frame
    through SEAL (a second, independent check of what the codec already checked).
    """

    encoding: str = "seal"
    seeds: int = 0
    seal_check: bool = False


def resolve_preset(preset: CkksPreset | str) -> CkksPreset:
    """A preset object from a preset or its name (:class:`ConfigError` for unknown names)."""
    return preset if isinstance(preset, CkksPreset) else get_preset(preset)


def _pack(magic: bytes, *sections: bytes) -> bytes:
    parts = [magic, bytes([CONTEXT_VERSION])]
    for section in sections:
        parts += [_U32.pack(len(section)), section]
    return b"".join(parts)


def _unpack(data: bytes, magic: bytes, count: int, what: str) -> list[bytes]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CryptoError(f"{what} must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:4] != magic:
        if magic == MAGIC_PUBLIC and data[:4] == MAGIC_SECRET:
            raise CryptoError(
                "refusing a secret context where a public one is expected: the aggregator must "
                "never receive the secret key"
            )
        raise CryptoError(f"not a fedsparsify {what} (bad magic)")
    if len(data) < 5 or data[4] != CONTEXT_VERSION:
        raise CryptoError(f"unsupported {what} version")
    pos, sections = 5, []
    for _ in range(count):
        if pos + 4 > len(data):
            raise CryptoError(f"truncated {what}")
        (length,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + length > len(data):
            raise CryptoError(f"truncated {what}")
        sections.append(data[pos : pos + length])
        pos += length
    if pos != len(data):
        raise CryptoError(f"{len(data) - pos} unexpected bytes after the {what}")
    return sections


def _tenseal_parameters(ctx: Any) -> tuple[int, tuple[int, ...], float]:
    parms = ctx.seal_context().data.key_context_data().parms()
    bits = tuple(int(m.bit_count()) for m in parms.coeff_modulus())
    return int(parms.poly_modulus_degree()), bits, float(ctx.global_scale)


def _parse_public(data: bytes) -> tuple[CkksPreset, Any]:
    """Preset and TenSEAL context (``None`` for plaintext) of public bytes, fully checked."""
    preset_json, body = _unpack(data, MAGIC_PUBLIC, 2, "public context")
    preset = CkksPreset.from_json(preset_json)
    check_security(preset)
    shipped = PRESETS.get(preset.name)
    if shipped is not None and dataclasses.replace(shipped, seeded=preset.seeded) != preset:
        raise CryptoError(
            f"the context calls itself {preset.name!r} but its parameters differ from that "
            "preset's (only the client-side 'seeded' choice may differ)"
        )
    if not preset.encrypted:
        if len(body) != _PLAINTEXT_ID_BYTES:
            raise CryptoError("plaintext key-set descriptor has the wrong length")
        return preset, None
    try:
        ctx = ts.context_from(body)
    except SEAL_ERRORS as exc:
        raise CryptoError(f"unreadable TenSEAL context: {exc}") from exc
    if ctx.has_secret_key():
        raise CryptoError("refusing a context that holds a secret key")
    if ctx.has_galois_keys():
        raise CryptoError("refusing a public context that holds Galois keys")
    if not ctx.is_public() or not ctx.has_public_key():
        raise CryptoError("the context holds no public key")
    n, bits, scale = _tenseal_parameters(ctx)
    if (n, bits, scale) != (preset.poly_modulus_degree, preset.coeff_mod_bit_sizes, preset.scale):
        raise CryptoError(
            f"context parameters N={n} primes={list(bits)} scale={scale:g} do not match "
            f"preset {preset.name!r}"
        )
    return preset, ctx


class PublicContext:
    """What the aggregator holds: the preset and public key of a key set, never a secret key.

    It can load, check and add ciphertext frames, and nothing else: :meth:`decrypt` raises
    :class:`SecretKeyRequiredError`. Build it with :meth:`from_bytes` or
    :meth:`SecretContext.public`.
    """

    def __init__(self, preset: CkksPreset, public_bytes: bytes, tenseal_context: Any) -> None:
        self.preset: CkksPreset = preset
        self._public_bytes = public_bytes
        self.digest: str = hashlib.sha256(public_bytes).hexdigest()
        self._tenseal = tenseal_context
        if preset.encrypted:
            self._seal = tenseal_context.seal_context().data
            self._evaluator = sealapi.Evaluator(self._seal)
            self._parms_id = list(self._seal.first_parms_id())
            first = self._seal.first_context_data().parms()
            self.moduli: tuple[int, ...] = tuple(int(m.value()) for m in first.coeff_modulus())
            self.ring: RingCodec | None = RingCodec(
                self.moduli,
                preset.poly_modulus_degree,
                parms_id=self._parms_id,
                scale=preset.scale,
                version=self._seal_version(),
            )
        else:
            self.moduli = ()
            self.ring = None

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicContext:
        """Load public bytes; :class:`CryptoError` for garbage, a secret key or weak parameters
        (:class:`InsecureParametersError`)."""
        preset, ctx = _parse_public(data)
        return cls(preset, bytes(data), ctx)

    def public_bytes(self) -> bytes:
        """The exact bytes the digest is computed from."""
        return self._public_bytes

    def decrypt(self, *args: object, **kwargs: object) -> NoReturn:
        """Always refused: a public context holds no secret key."""
        raise SecretKeyRequiredError(
            "a public context cannot decrypt: it holds no secret key (only clients do)"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(preset={self.preset.name!r}, digest={self.digest[:16]}…)"

    # Frame operations used by the wire reader, the sum and decryption (package-internal).

    def _seal_version(self) -> tuple[int, int]:
        """SEAL's serialization version, read off an encryption of zero under the public key."""
        try:
            ct = sealapi.Ciphertext()
            sealapi.Encryptor(self._seal, self._tenseal.public_key().data).encrypt_zero(ct)
            fields = SEAL_HEADER.unpack_from(save_to_bytes(ct))
        except SEAL_ERRORS as exc:
            raise CryptoError(f"cannot encrypt under the public key: {exc}") from exc
        return int(fields[2]), int(fields[3])

    def _codec(self) -> RingCodec:
        if self.ring is None:
            raise CryptoError("the plaintext preset has no ciphertext frames")
        return self.ring

    def _load_frame(self, payload: bytes, n_values: int, form: FrameForm | None = None) -> Frame:
        """Load and check one frame holding ``n_values`` values; typed wire errors otherwise."""
        form = form or FrameForm()
        if not self.preset.encrypted:
            if len(payload) != 4 * n_values:
                raise ParameterMismatchError(
                    f"plaintext frame of {len(payload)} bytes, expected {4 * n_values}"
                )
            values = np.frombuffer(payload, dtype="<f4").astype(np.float64)
            if not np.isfinite(values).all():
                raise MalformedStreamError("plaintext frame holds NaN or infinite values")
            return values
        ring = self._codec()
        if form.encoding == "packed":
            tail = n_values if n_values < self.preset.values_per_ciphertext else 0
            frame = ring.unpack(payload, form.seeds, tail)
            if form.seal_check and not tail:
                self._load_ciphertext(self._first_ciphertext(frame))
            return frame
        if not seal_header_ok(payload):
            raise MalformedStreamError("frame is not a SEAL ciphertext (bad SEAL header)")
        self._load_ciphertext(payload)
        return ring.from_seal(payload)

    def _first_ciphertext(self, frame: RingFrame) -> bytes:
        """SEAL bytes of (c0, c1) or of (c0, the first seed's expansion)."""
        ring = self._codec()
        if frame.c1 is not None:
            return ring.to_seal(frame.c0, c1=frame.c1)
        return ring.to_seal(frame.c0, seed=frame.seeds[0])

    def _load_ciphertext(self, data: bytes) -> Any:
        """A ``sealapi.Ciphertext`` loaded and checked by SEAL, then by us (level, size, scale,
        NTT form, not transparent)."""
        try:
            ct = load_ciphertext(self._seal, data)
        except SEAL_ERRORS as exc:
            if "I/O error" in str(exc) or "stream" in str(exc):
                raise MalformedStreamError(f"unreadable ciphertext frame: {exc}") from exc
            raise ParameterMismatchError(
                f"ciphertext does not load under preset {self.preset.name!r}: {exc}"
            ) from exc
        if ct.is_transparent():
            raise MalformedStreamError("refusing a transparent ciphertext (its c1 is zero)")
        if (
            ct.size() != 2
            or list(ct.parms_id()) != self._parms_id
            or ct.scale != self.preset.scale
            or not ct.is_ntt_form()
        ):
            raise ParameterMismatchError(
                f"ciphertext level, size or scale differs from preset {self.preset.name!r}"
            )
        return ct

    def _add_frames(self, acc: Frame, other: Frame) -> Frame:
        """``acc + other``."""
        if not self.preset.encrypted:
            acc += other
            return acc
        result: Frame = self._codec().add(acc, other)
        return result

    def _expand(self, frame: RingFrame) -> RingFrame:
        """``frame`` in full form: every seed record expanded (by SEAL) and added into c1 (in
        coefficient form for a tail frame)."""
        ring = self._codec()
        c1 = frame.c1
        for seed in frame.seeds:
            ct = self._load_ciphertext(ring.to_seal(ring.zero, seed=seed))
            a = self._polys(ct, ntt_form=not frame.tail)[1]
            c1 = a if c1 is None else ring.add_poly(c1, a)
        return RingFrame(frame.c0, c1, (), frame.tail)

    def _polys(self, ct: Any, *, ntt_form: bool = True) -> np.ndarray:
        """(2, k, N) residues of a loaded ciphertext, transformed to coefficient form first
        unless ``ntt_form`` (it is changed in place)."""
        ring = self._codec()
        try:
            if not ntt_form:
                self._evaluator.transform_from_ntt_inplace(ct)
            parts = ciphertext_parts(save_to_bytes(ct), 256 + 32 * ring.poly_bytes)
        except SEAL_ERRORS as exc:
            raise CryptoError(f"cannot read a ciphertext back: {exc}") from exc
        return parts.data.reshape(-1, *ring.shape).astype(np.uint64)

    def _ntt(self, poly: np.ndarray, *, forward: bool) -> np.ndarray:
        """SEAL's NTT (``forward``) or inverse NTT of one (k, N) polynomial, done by SEAL's
        evaluator on a ciphertext (poly, 1): it refuses to transform a transparent one."""
        ring = self._codec()
        try:
            data = ring.to_seal(poly, c1=np.ones(ring.shape, np.uint64), ntt_form=not forward)
            ct = load_ciphertext(self._seal, data)
            if forward:
                self._evaluator.transform_to_ntt_inplace(ct)
            else:
                self._evaluator.transform_from_ntt_inplace(ct)
        except SEAL_ERRORS as exc:
            raise CryptoError(f"cannot transform a polynomial: {exc}") from exc
        result: np.ndarray = self._polys(ct)[0]
        return result

    def _dump_frame(self, frame: Frame, seeds: int = 0, payload: str = "packed") -> bytes:
        """The payload bytes of a frame: float32, or packed with ``seeds`` records (0: full
        form, seeds expanded first), or for ``payload="seal"`` (wire format 2) SEAL bytes."""
        if not self.preset.encrypted:
            return np.asarray(frame, dtype="<f4").tobytes()
        if seeds == 0 and frame.seeds:
            frame = self._expand(frame)
        if payload == "seal":
            if frame.tail or frame.c1 is None:
                raise CryptoError("a tail frame has no wire format 2 encoding")
            return self._codec().to_seal(frame.c0, c1=frame.c1)
        elif seeds != len(frame.seeds) or (seeds and frame.c1 is not None):
            raise CryptoError(f"a frame with {len(frame.seeds)} seeds cannot be written as {seeds}")
        return self._codec().pack(frame)


class SecretContext:
    """A key set with its secret key: what the dealer creates and every client holds.

    Encrypts chunks (seeded secret-key encryption or public-key encryption, as the preset says)
    and decrypts frames. Never hand its :meth:`secret_bytes` to the aggregator: wrap them in an
    envelope (:func:`fedsparsify.crypto.seal_envelope`) for each client.
    """

    def __init__(self, public: PublicContext, secret_key: Any, secret_key_bytes: bytes) -> None:
        self._public = public
        self._secret_key = secret_key
        self._secret_key_bytes = secret_key_bytes
        preset = public.preset
        if preset.encrypted:
            seal = public._seal
            self._encoder = sealapi.CKKSEncoder(seal)
            self._decryptor = sealapi.Decryptor(seal, secret_key)
            if preset.seeded:
                self._encryptor = sealapi.Encryptor(seal, secret_key)
            else:
                self._encryptor = sealapi.Encryptor(seal, public._tenseal.public_key().data)

    @property
    def preset(self) -> CkksPreset:
        """The key set's preset."""
        return self._public.preset

    @property
    def digest(self) -> str:
        """SHA-256 hex of :meth:`public_bytes`: the key set's identity."""
        return self._public.digest

    def public_bytes(self) -> bytes:
        """What the dealer uploads to the aggregator."""
        return self._public.public_bytes()

    def secret_bytes(self) -> bytes:
        """Public bytes plus the secret key: seal it in an envelope before it travels."""
        return _pack(MAGIC_SECRET, self._public.public_bytes(), self._secret_key_bytes)

    def public(self) -> PublicContext:
        """The public part (a context with no secret key)."""
        return self._public

    @classmethod
    def from_secret_bytes(cls, data: bytes) -> SecretContext:
        """Load :meth:`secret_bytes`; :class:`CryptoError` for garbage or a key that does not
        belong to the public key, :class:`SecretKeyRequiredError` when the key is missing."""
        public_bytes, sk_bytes = _unpack(data, MAGIC_SECRET, 2, "secret context")
        public = PublicContext.from_bytes(public_bytes)
        if not public.preset.encrypted:
            if sk_bytes:
                raise CryptoError("a plaintext key set carries no secret key")
            return cls(public, None, b"")
        if not sk_bytes:
            raise SecretKeyRequiredError("the secret context holds no secret key")
        try:
            key = load_secret_key(public._seal, sk_bytes)
        except SEAL_ERRORS as exc:
            raise CryptoError(f"unreadable secret key: {exc}") from exc
        ctx = cls(public, key, sk_bytes)
        ctx._check_key_pair()
        return ctx

    def __repr__(self) -> str:
        return f"{type(self).__name__}(preset={self.preset.name!r}, digest={self.digest[:16]}…)"

    def _check_key_pair(self) -> None:
        """Decrypt a public-key encryption of zero: a foreign secret key gives noise, not 0."""
        try:
            public_key = self._public._tenseal.public_key().data
            ct = sealapi.Ciphertext()
            sealapi.Encryptor(self._public._seal, public_key).encrypt_zero(ct)
            ct.scale = self.preset.scale
            pt = sealapi.Plaintext()
            self._decryptor.decrypt(ct, pt)
            worst = float(np.max(np.abs(self._encoder.decode_double(pt))))
        except SEAL_ERRORS as exc:
            raise CryptoError(f"secret key unusable with the public key: {exc}") from exc
        if not worst < _KEY_CHECK_TOLERANCE:
            raise CryptoError("the secret key does not belong to the public key")

    # Chunk operations used by encrypt_update / decrypt_sum (package-internal).

    def _encrypt_chunk(
        self,
        chunk: np.ndarray,
        *,
        timings: Timings | None = None,
        mask: np.ndarray | None = None,
    ) -> bytes:
        """Encrypt (or, for plaintext, encode) one chunk of at most ``values_per_ciphertext``
        float64 values, already weighted and range-checked; the frame's packed payload.

        ``mask``: residues (N per ciphertext prime, RNS order) added to c0 modulo each prime
        (:mod:`fedsparsify.crypto.pairwise`; the same as adding them to the NTT-form plaintext
        before encryption). With ``timings``, seconds are added to its ``pack`` (slot layout),
        ``encrypt`` (CKKS encode and encrypt), ``mask`` and ``serialise`` (SEAL save, bit
        packing) entries.
        """
        preset = self.preset
        started = time.perf_counter()
        if not preset.encrypted:
            if mask is not None:
                raise CryptoError("the plaintext preset cannot carry pairwise masks")
            out = chunk.astype("<f4").tobytes()
            add_time(timings, "serialise", started)
            return out
        if chunk.size < preset.values_per_ciphertext:
            return self._encrypt_tail(chunk, timings=timings, mask=mask)
        if preset.complex_packing:
            if chunk.size % 2:
                chunk = np.append(chunk, 0.0)
            slots: list[Any] = (
                np.ascontiguousarray(chunk, dtype=np.float64).view(np.complex128).tolist()
            )
        else:
            slots = np.asarray(chunk, dtype=np.float64).tolist()
        started = add_time(timings, "pack", started)
        ring = self._public._codec()
        try:
            pt = sealapi.Plaintext()
            self._encoder.encode(slots, preset.scale, pt)
            if preset.seeded:
                ct = self._encryptor.encrypt_symmetric(pt)
            else:
                ct = sealapi.Ciphertext()
                self._encryptor.encrypt(pt, ct)
            started = add_time(timings, "encrypt", started)
            saved = save_to_bytes(ct)
        except SEAL_ERRORS as exc:
            if "too large" in str(exc):
                raise ValueRangeError(f"values too large for CKKS encoding: {exc}") from exc
            raise CryptoError(f"encryption failed: {exc}") from exc
        frame = ring.from_seal(saved)
        if mask is not None:
            started = add_time(timings, "serialise", started)
            if mask.shape != (frame.c0.size,) or mask.dtype != np.uint64:
                raise CryptoError(f"a mask must be {frame.c0.size} uint64 residues")
            frame = RingFrame(
                ring.add_poly(frame.c0, mask.reshape(ring.shape)), frame.c1, frame.seeds
            )
            started = add_time(timings, "mask", started)
        out = ring.pack(frame)
        add_time(timings, "serialise", started)
        return out

    def _encrypt_tail(
        self, chunk: np.ndarray, *, timings: Timings | None, mask: np.ndarray | None
    ) -> bytes:
        """A tail frame (see :mod:`.frames`): an encryption of zero in coefficient form, plus
        the values times the scale in its first coefficients, c0 truncated to them."""
        preset, public = self.preset, self._public
        ring = public._codec()
        t = int(chunk.size)
        started = time.perf_counter()
        scaled = np.rint(np.asarray(chunk, dtype=np.float64) * preset.scale)
        m = np.empty((len(ring.moduli), t), dtype=np.uint64)
        for i, q in enumerate(ring.moduli):
            if np.abs(scaled).max(initial=0.0) < 2.0**62:
                m[i] = np.mod(scaled.astype(np.int64), np.int64(q)).astype(np.uint64)
            else:
                m[i] = [int(v) % q for v in scaled]
        started = add_time(timings, "pack", started)
        try:
            if preset.seeded:
                zero = self._encryptor.encrypt_zero_symmetric()
            else:
                zero = sealapi.Ciphertext()
                self._encryptor.encrypt_zero(zero)
            started = add_time(timings, "encrypt", started)
            parts = ciphertext_parts(save_to_bytes(zero), 256 + 32 * ring.poly_bytes)
            expanded = load_ciphertext(public._seal, ciphertext_bytes(parts))
        except SEAL_ERRORS as exc:
            raise CryptoError(f"encryption failed: {exc}") from exc
        polys = public._polys(expanded, ntt_form=False)
        c0 = ring.add_poly(polys[0][:, :t], m)
        if mask is not None:
            started = add_time(timings, "serialise", started)
            if mask.shape != (polys[0].size,) or mask.dtype != np.uint64:
                raise CryptoError(f"a mask must be {polys[0].size} uint64 residues")
            c0 = ring.add_poly(c0, mask.reshape(ring.shape)[:, :t])
            started = add_time(timings, "mask", started)
        if parts.prng is not None:
            frame = RingFrame(c0, None, (parts.prng,), t)
        else:
            frame = RingFrame(c0, polys[1], (), t)
        out = ring.pack(frame)
        add_time(timings, "serialise", started)
        return out

    def _decrypt_tail(self, frame: RingFrame, timings: Timings | None) -> np.ndarray:
        """The values of a tail frame: c0 zero-padded and c1 taken to NTT form, rebuilt and
        decrypted like a whole frame, and the plaintext's first coefficients read back."""
        public = self._public
        ring = public._codec()
        t = frame.tail
        started = time.perf_counter()
        c0 = np.zeros(ring.shape, dtype=np.uint64)
        c0[:, :t] = frame.c0
        c1 = None if frame.c1 is None else public._ntt(frame.c1, forward=True)
        whole = RingFrame(public._ntt(c0, forward=True), c1, frame.seeds)
        ct = self._rebuild(whole)
        started = add_time(timings, "deserialise", started)
        try:
            pt = sealapi.Plaintext()
            self._decryptor.decrypt(ct, pt)
            data = plaintext_data(pt).reshape(ring.shape)
        except SEAL_ERRORS as exc:
            raise CryptoError(f"decryption failed: {exc}") from exc
        coeffs = public._ntt(data, forward=False)
        out = _centred(coeffs[:, :t], ring.moduli) / self.preset.scale
        add_time(timings, "decrypt", started)
        return out

    def _rebuild(self, frame: RingFrame) -> Any:
        """A whole (NTT-form) frame as one SEAL ciphertext: (c0, c1 or the first seed's
        ``a``) plus (0, each other seed's ``a``), each loaded and checked by SEAL."""
        public = self._public
        ring = public._codec()
        ct = public._load_ciphertext(public._first_ciphertext(frame))
        rest = frame.seeds if frame.c1 is not None else frame.seeds[1:]
        try:
            for seed in rest:
                a = public._load_ciphertext(ring.to_seal(ring.zero, seed=seed))
                public._evaluator.add_inplace(ct, a)
        except SEAL_ERRORS as exc:
            raise CryptoError(f"cannot rebuild a seeded sum: {exc}") from exc
        return ct

    def _decrypt_frame(
        self, frame: Frame, n_values: int, *, timings: Timings | None = None
    ) -> np.ndarray:
        """The first ``n_values`` float64 values of a loaded frame. A sum in seeded form is
        rebuilt first (:meth:`_rebuild`; ``deserialise`` in ``timings``, the rest is
        ``decrypt``); a tail frame is read from its plaintext's coefficients."""
        if not self.preset.encrypted:
            return np.asarray(frame, dtype=np.float64)[:n_values]
        if frame.tail:
            return self._decrypt_tail(frame, timings)[:n_values]
        started = time.perf_counter()
        ct = self._rebuild(frame)
        started = add_time(timings, "deserialise", started)
        try:
            pt = sealapi.Plaintext()
            self._decryptor.decrypt(ct, pt)
            if self.preset.complex_packing:
                decoded = np.asarray(self._encoder.decode_complex(pt), dtype=np.complex128)
                out = decoded.view(np.float64)[:n_values]
            else:
                out = np.asarray(self._encoder.decode_double(pt), dtype=np.float64)[:n_values]
        except SEAL_ERRORS as exc:
            raise CryptoError(f"decryption failed: {exc}") from exc
        add_time(timings, "decrypt", started)
        return out


def _centred(residues: np.ndarray, moduli: tuple[int, ...]) -> np.ndarray:
    """The integers in (-Q/2, Q/2] with these residues (one row per prime), as float64."""
    if len(moduli) == 1:
        q = moduli[0]
        r = residues[0].astype(np.float64)
        high = residues[0] > np.uint64(q // 2)
        r[high] -= float(q)
        return r
    total = 1
    for q in moduli:
        total *= q
    out = np.empty(residues.shape[1], dtype=np.float64)
    for j in range(residues.shape[1]):
        value = 0
        for i, q in enumerate(moduli):
            rest = total // q
            value += int(residues[i, j]) * rest * pow(rest, -1, q)
        value %= total
        out[j] = float(value - total if value > total // 2 else value)
    return out


def create_secret_context(preset: CkksPreset | str = "lean") -> SecretContext:
    """Create a fresh key set (the key dealer calls this).

    Refuses weak parameters with :class:`InsecureParametersError`. For ``plaintext`` the key set
    is a tiny descriptor with a random identity, so the aggregator keeps one code path.
    """
    chosen = resolve_preset(preset)
    check_security(chosen)
    preset_json = chosen.to_json()
    if not chosen.encrypted:
        public_bytes = _pack(MAGIC_PUBLIC, preset_json, os.urandom(_PLAINTEXT_ID_BYTES))
        return SecretContext(PublicContext.from_bytes(public_bytes), None, b"")
    try:
        full = ts.context(
            ts.SCHEME_TYPE.CKKS,
            chosen.poly_modulus_degree,
            coeff_mod_bit_sizes=list(chosen.coeff_mod_bit_sizes),
        )
        full.global_scale = chosen.scale
        body = full.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        sk_bytes = save_secret_key(full.secret_key().data)
    except SEAL_ERRORS as exc:
        raise CryptoError(f"TenSEAL refused preset {chosen.name!r}: {exc}") from exc
    public_bytes = _pack(MAGIC_PUBLIC, preset_json, body)
    ctx = SecretContext.from_secret_bytes(_pack(MAGIC_SECRET, public_bytes, sk_bytes))
    logger.info("created a %s key set %s", chosen.name, ctx.digest[:16])
    return ctx
