"""The encrypted-update wire format and its sans-IO reader.

An update (or an aggregate: a sum of updates) is a stream::

    b"FSUP" | format version u8 | u32 header length | header (UTF-8 JSON object)
    then n_ciphertexts frames, each: u32 payload length | payload

All integers are big-endian. The header's JSON object has exactly the keys ``kind``, ``preset``,
``context_digest``, ``mask_digest``, ``weight``, ``n_values``, ``values_per_ciphertext``,
``n_ciphertexts`` and ``contributors``; since version 2 also ``federation_id``, ``round``,
``attempt``, ``participants_digest`` and ``channel``: what the update was made for
(:class:`~fedsparsify.crypto.pairwise.RoundBinding`), so that the aggregator can refuse a replay
into another round, attempt or channel; since version 3 also ``payload`` and ``seeds``: how the
frames are encoded. Frame i holds values ``[i*vpc, min((i+1)*vpc, n))``.

Payloads by version:

- 3, ``payload: "packed"``: the ciphertext's residues bit-packed at their exact width, c0 then
  either c1 (``seeds: 0``) or ``seeds`` PRNG records of 65 bytes (a fresh seeded upload has 1;
  an aggregate served in seeded form one per contributor). Exact length; every residue checked
  below its prime. A partly filled last frame is a *tail*: coefficient-encoded, its c0 cut to
  the values it holds (:mod:`fedsparsify.crypto.frames`), so it cannot be added to a version 1
  or 2 stream's last frame.
- 3, ``payload: "float32"``: the ``plaintext`` preset's values, little-endian float32.
- 1 and 2: one SEAL ciphertext as SEAL saves it (zstd compressed), or float32 for ``plaintext``.
  Still read (version 1, release 0.1, names no round: a reader that expects a binding refuses
  it); only version 3 is written.

:class:`UpdateParser` validates as bytes arrive, holds at most one frame plus what one ``feed``
brought, and raises the typed :class:`~fedsparsify.errors.WireFormatError` subclass at the first
byte that proves the stream wrong. Check order: structure (malformed) → kind → parameters →
context digest → mask digest → counts → frames.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from fedsparsify.crypto._seal import seal_header_ok
from fedsparsify.crypto.context import Frame, FrameForm, PublicContext
from fedsparsify.crypto.frames import PRNG_RECORD_BYTES, packed_bytes
from fedsparsify.crypto.pairwise import RoundBinding
from fedsparsify.crypto.presets import PRESETS, CkksPreset
from fedsparsify.errors import (
    ConfigError,
    ContextMismatchError,
    CountMismatchError,
    MalformedStreamError,
    MaskMismatchError,
    ParameterMismatchError,
    RoundMismatchError,
    TrailingBytesError,
    TruncatedStreamError,
    WireFormatError,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "READABLE_VERSIONS",
    "READ_CHUNK_BYTES",
    "WEIGHT_TOLERANCE",
    "UpdateHeader",
    "UpdateParser",
    "frame_bound",
    "frame_bytes",
    "iter_source",
    "packed_frame_bytes",
    "read_update",
]

logger = logging.getLogger(__name__)

MAGIC = b"FSUP"
FORMAT_VERSION = 3
#: Versions this reader understands (1: release 0.1, without the round binding; 2: SEAL's own
#: serialisation in the frames).
READABLE_VERSIONS = (1, 2, 3)
#: Frame payload encodings of version 3.
PAYLOADS = ("packed", "float32")
#: Most seed records one packed frame may carry (an aggregate's contributors).
MAX_SEEDS = 1 << 16
#: A header larger than this is refused (a few thousand contributor ids fit).
MAX_HEADER_BYTES = 1 << 20
#: Frame bound used when neither the caller, the context nor a known preset gives one.
DEFAULT_MAX_FRAME_BYTES = 64 << 20
#: How much a pull-style reader asks a file object for at a time.
READ_CHUNK_BYTES = 64 << 10
#: Rounding slack allowed on a sum of weights that should be at most 1.
WEIGHT_TOLERANCE = 1e-6
KINDS = ("update", "aggregate")

_PREFIX = struct.Struct(">4sBI")
_U32 = struct.Struct(">I")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_ID_CHARS = 256
_HEADER_KEYS_V1 = frozenset(
    {
        "kind",
        "preset",
        "context_digest",
        "mask_digest",
        "weight",
        "n_values",
        "values_per_ciphertext",
        "n_ciphertexts",
        "contributors",
    }
)
_BINDING_KEYS = frozenset({"federation_id", "round", "attempt", "participants_digest", "channel"})
_PAYLOAD_KEYS = frozenset({"payload", "seeds"})
_HEADER_KEYS = {
    1: _HEADER_KEYS_V1,
    2: _HEADER_KEYS_V1 | _BINDING_KEYS,
    3: _HEADER_KEYS_V1 | _BINDING_KEYS | _PAYLOAD_KEYS,
}


@dataclass(frozen=True)
class UpdateHeader:
    """The plaintext header of an update or aggregate stream.

    ``weight``: the client's weight w_k (update) or the sum of weights (aggregate); the values
    in the frames are already multiplied by it. ``contributors``: who is in the sum. The binding
    fields (version 2) say which federation, round, attempt, participant set and channel the
    stream was made for; empty for unbound streams (benchmarks) and version 1. ``payload`` and
    ``seeds`` (version 3) say how frames are encoded (``seal`` for versions 1 and 2).
    """

    version: int
    kind: str
    preset: str
    context_digest: str
    mask_digest: str
    weight: float
    n_values: int
    values_per_ciphertext: int
    n_ciphertexts: int
    contributors: tuple[str, ...] = field(default=())
    federation_id: str = ""
    round: int = 0
    attempt: int = 0
    participants_digest: str = ""
    channel: str = "values"
    payload: str = "seal"
    seeds: int = 0

    @property
    def binding(self) -> RoundBinding:
        """What the stream was made for."""
        return RoundBinding(self.federation_id, self.round, self.attempt, self.participants_digest)

    def to_bytes(self) -> bytes:
        """The stream prefix: magic, version, length and the JSON header."""
        fields: dict[str, Any] = {
            "kind": self.kind,
            "preset": self.preset,
            "context_digest": self.context_digest,
            "mask_digest": self.mask_digest,
            "weight": self.weight,
            "n_values": self.n_values,
            "values_per_ciphertext": self.values_per_ciphertext,
            "n_ciphertexts": self.n_ciphertexts,
            "contributors": list(self.contributors),
        }
        if self.version >= 2:
            fields.update(
                federation_id=self.federation_id,
                round=self.round,
                attempt=self.attempt,
                participants_digest=self.participants_digest,
                channel=self.channel,
            )
        if self.version >= 3:
            fields.update(payload=self.payload, seeds=self.seeds)
        body = json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()
        return _PREFIX.pack(MAGIC, self.version, len(body)) + body

    def frame_values(self, index: int) -> int:
        """How many values frame ``index`` carries."""
        return min(self.values_per_ciphertext, self.n_values - index * self.values_per_ciphertext)

    def form(self, *, seal_check: bool = False) -> FrameForm:
        """How this stream's frames are encoded."""
        return FrameForm(self.payload, self.seeds, seal_check)


def frame_bytes(payload: bytes) -> bytes:
    """One frame as it goes on the wire: length prefix plus payload."""
    return _U32.pack(len(payload)) + payload


def frame_bound(preset: CkksPreset) -> int:
    """Upper bound on a SEAL-serialised frame payload (versions 1 and 2) under ``preset``: a
    full-size (unseeded, uncompressed) two-polynomial ciphertext plus slack, or a plaintext
    chunk."""
    if not preset.encrypted:
        return 4 * preset.values_per_ciphertext
    raw = 2 * preset.poly_modulus_degree * (len(preset.coeff_mod_bit_sizes) - 1) * 8
    return raw + raw // 64 + 4096


def packed_frame_bytes(preset: CkksPreset, seeds: int, tail: int = 0) -> int:
    """Exact length of a version 3 packed payload under ``preset`` with ``seeds`` records
    (``tail``: the values of a tail frame): the ciphertext primes are the chain but its last
    (special) prime, of their declared widths."""
    widths = preset.coeff_mod_bit_sizes[:-1]
    poly = sum(packed_bytes(preset.poly_modulus_degree, w) for w in widths)
    c0 = sum(packed_bytes(tail, w) for w in widths) if tail else poly
    return c0 + (poly if seeds == 0 else PRNG_RECORD_BYTES * seeds)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_header(version: int, body: bytes) -> UpdateHeader:
    """Parse and type-check the JSON header; :class:`MalformedStreamError` for anything off."""
    try:
        raw: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedStreamError(f"header is not JSON: {exc}") from exc
    keys = _HEADER_KEYS[version]
    if not isinstance(raw, dict) or set(raw) != keys:
        raise MalformedStreamError(f"header must hold exactly the keys {sorted(keys)}")
    kind, preset = raw["kind"], raw["preset"]
    if kind not in KINDS:
        raise MalformedStreamError(f"header kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(preset, str) or not 0 < len(preset) <= 64:
        raise MalformedStreamError("header preset must be a short string")
    digest = raw["context_digest"]
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise MalformedStreamError("header context_digest must be 64 lowercase hex digits")
    mask = raw["mask_digest"]
    if not isinstance(mask, str) or len(mask) > _MAX_ID_CHARS:
        raise MalformedStreamError("header mask_digest must be a string of <= 256 characters")
    weight = raw["weight"]
    if not isinstance(weight, int | float) or isinstance(weight, bool):
        raise MalformedStreamError("header weight must be a number")
    if not (math.isfinite(weight) and 0.0 < weight <= 1.0 + WEIGHT_TOLERANCE):
        raise MalformedStreamError(f"header weight {weight!r} is outside (0, 1]")
    for key in ("n_values", "values_per_ciphertext", "n_ciphertexts"):
        if not _is_int(raw[key]) or raw[key] < 0:
            raise MalformedStreamError(f"header {key} must be a non-negative integer")
    if raw["values_per_ciphertext"] == 0:
        raise MalformedStreamError("header values_per_ciphertext must be positive")
    contributors = raw["contributors"]
    if not isinstance(contributors, list) or not all(
        isinstance(c, str) and 0 < len(c) <= _MAX_ID_CHARS for c in contributors
    ):
        raise MalformedStreamError("header contributors must be a list of non-empty ids")
    if kind == "update" and len(contributors) > 1:
        raise MalformedStreamError("an update has at most one contributor")
    binding: dict[str, Any] = {}
    if version >= 2:
        binding = {k: raw[k] for k in _BINDING_KEYS}
        for key in ("federation_id", "participants_digest", "channel"):
            if not isinstance(binding[key], str) or len(binding[key]) > _MAX_ID_CHARS:
                raise MalformedStreamError(f"header {key} must be a string of <= 256 characters")
        for key in ("round", "attempt"):
            if not _is_int(binding[key]) or not 0 <= binding[key] < 2**31:
                raise MalformedStreamError(f"header {key} must be an integer in [0, 2^31)")
    if version >= 3:
        binding.update(_decode_payload(kind, raw["payload"], raw["seeds"]))
    return UpdateHeader(
        version=version,
        kind=kind,
        preset=preset,
        context_digest=digest,
        mask_digest=mask,
        weight=float(weight),
        n_values=raw["n_values"],
        values_per_ciphertext=raw["values_per_ciphertext"],
        n_ciphertexts=raw["n_ciphertexts"],
        contributors=tuple(contributors),
        **binding,
    )


def _decode_payload(kind: str, payload: object, seeds: object) -> dict[str, Any]:
    if payload not in PAYLOADS:
        raise MalformedStreamError(f"header payload must be one of {PAYLOADS}, got {payload!r}")
    if not _is_int(seeds) or not 0 <= seeds <= MAX_SEEDS:  # type: ignore[operator]
        raise MalformedStreamError(f"header seeds must be an integer in [0, {MAX_SEEDS}]")
    if kind == "update" and seeds > 1:  # type: ignore[operator]
        raise MalformedStreamError("an update's frames carry at most one seed record")
    if payload == "float32" and seeds:
        raise MalformedStreamError("float32 frames carry no seed records")
    return {"payload": payload, "seeds": seeds}


class UpdateParser:
    """Sans-IO push parser of an update or aggregate stream.

    Feed it bytes as they arrive (any split, down to one byte at a time); :meth:`feed` returns
    the ciphertext payloads that completed and passed validation, and raises the typed wire
    error as soon as something is wrong. With ``public_ctx``, every frame is loaded under its
    parameters (so a ciphertext made under other parameters is refused) and the context digest
    defaults to the context's. With ``expect_binding`` (and ``expect_channel``) the header must
    name exactly that federation, round, attempt, participant set (and channel):
    :class:`RoundMismatchError` otherwise, and a version 1 stream (which names none) is refused.
    ``seal_check`` also loads every packed update frame through SEAL: a second check of what the
    frame codec already checks in full (lengths, every residue below its prime, PRNG types,
    transparency), off by default because it costs several times the codec's check; SEAL loads
    every frame anyway when it is decrypted. :meth:`finish` says whether the stream was
    complete.
    """

    def __init__(
        self,
        public_ctx: PublicContext | None = None,
        *,
        expect_kind: str | None = "update",
        expect_context_digest: str | None = None,
        expect_mask_digest: str | None = None,
        expect_values: int | None = None,
        max_frame_bytes: int | None = None,
        expect_binding: RoundBinding | None = None,
        expect_channel: str | None = None,
        seal_check: bool = False,
    ) -> None:
        if expect_kind is not None and expect_kind not in KINDS:
            raise ConfigError(f"expect_kind must be one of {KINDS} or None")
        self._ctx = public_ctx
        self._expect_kind = expect_kind
        self._expect_digest = expect_context_digest
        self._expect_mask = expect_mask_digest
        self._expect_values = expect_values
        self._expect_binding = expect_binding
        self._expect_channel = expect_channel
        self._seal_check = seal_check
        self._form = FrameForm()
        self._max_frame_arg = max_frame_bytes
        self._max_frame = max_frame_bytes or DEFAULT_MAX_FRAME_BYTES
        self._preset: CkksPreset | None = public_ctx.preset if public_ctx else None
        self._buf = bytearray()
        self._pos = 0
        self._header: UpdateHeader | None = None
        self._frames_done = 0
        self._error: WireFormatError | None = None

    @property
    def header(self) -> UpdateHeader | None:
        """The parsed header, once its last byte has arrived."""
        return self._header

    @property
    def frames_done(self) -> int:
        """Frames completed so far."""
        return self._frames_done

    def feed(self, data: bytes) -> list[bytes]:
        """Push bytes; return the payloads of the frames they completed (validated)."""
        return [payload for payload, _ in self._feed(data)]

    def finish(self) -> UpdateHeader:
        """Declare the end of the stream; :class:`TruncatedStreamError` if it ended early."""
        if self._error is not None:
            raise self._error
        if self._header is None:
            where = "an empty stream" if not self._buf else "the header"
            raise self._fail(TruncatedStreamError(f"stream ended inside {where}"))
        if self._frames_done < self._header.n_ciphertexts:
            partial = " (and part of the next)" if len(self._buf) > self._pos else ""
            raise self._fail(
                TruncatedStreamError(
                    f"stream ended after {self._frames_done}{partial} of "
                    f"{self._header.n_ciphertexts} frames"
                )
            )
        return self._header

    # internals

    def _fail(self, exc: WireFormatError) -> WireFormatError:
        self._error = exc
        return exc

    def _feed(self, data: bytes) -> list[tuple[bytes, Frame | None]]:
        """Like :meth:`feed`, also returning each frame as loaded under the context (or None)."""
        if self._error is not None:
            raise self._error
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ConfigError(f"feed() takes bytes, got {type(data).__name__}")
        self._buf += data
        out: list[tuple[bytes, Frame | None]] = []
        try:
            while self._step(out):
                pass
        except WireFormatError as exc:
            self._error = exc
            raise
        finally:
            del self._buf[: self._pos]
            self._pos = 0
        return out

    def _step(self, out: list[tuple[bytes, Frame | None]]) -> bool:
        """Consume one unit (header or frame) if complete; False when more bytes are needed."""
        avail = len(self._buf) - self._pos
        if self._header is None:
            return self._step_header(avail)
        if self._frames_done >= self._header.n_ciphertexts:
            if avail:
                raise TrailingBytesError(
                    f"{avail} byte(s) after the last of {self._header.n_ciphertexts} frames"
                )
            return False
        if avail < 4:
            return False
        (length,) = _U32.unpack_from(self._buf, self._pos)
        if length == 0 or length > self._max_frame:
            raise MalformedStreamError(
                f"frame {self._frames_done} announces {length} bytes (bound {self._max_frame})"
            )
        if avail < 4 + length:
            return False
        start = self._pos + 4
        payload = bytes(self._buf[start : start + length])
        self._pos = start + length
        out.append((payload, self._check_frame(payload)))
        self._frames_done += 1
        return True

    def _step_header(self, avail: int) -> bool:
        head = bytes(self._buf[self._pos : self._pos + _PREFIX.size])
        if head[:4] != MAGIC[: len(head)]:
            raise MalformedStreamError("not an encrypted-update stream (bad magic)")
        if len(head) > 4 and head[4] not in READABLE_VERSIONS:
            raise MalformedStreamError(
                f"unsupported format version {head[4]} (this reader knows {READABLE_VERSIONS})"
            )
        if len(head) > 4 and head[4] < 2 and self._expect_binding is not None:
            raise MalformedStreamError(
                f"format version {head[4]} (release 0.1) names no round: uploads must be version "
                f"{FORMAT_VERSION}; upgrade the site"
            )
        if len(head) < _PREFIX.size:
            return False
        _, version, length = _PREFIX.unpack(head)
        if length > MAX_HEADER_BYTES:
            raise MalformedStreamError(f"header of {length} bytes exceeds {MAX_HEADER_BYTES}")
        if avail < _PREFIX.size + length:
            return False
        start = self._pos + _PREFIX.size
        header = _decode_header(version, bytes(self._buf[start : start + length]))
        self._pos = start + length
        self._check_header(header)
        self._header = header
        return True

    def _check_header(self, h: UpdateHeader) -> None:
        if self._expect_kind is not None and h.kind != self._expect_kind:
            raise MalformedStreamError(f"expected an {self._expect_kind} stream, got {h.kind!r}")
        ctx = self._ctx
        if ctx is not None and h.preset != ctx.preset.name:
            raise ParameterMismatchError(
                f"stream made under preset {h.preset!r}, the key set uses {ctx.preset.name!r}"
            )
        if self._preset is None:
            self._preset = PRESETS.get(h.preset)
        if self._preset is not None and h.values_per_ciphertext != (
            vpc := self._preset.values_per_ciphertext
        ):
            raise ParameterMismatchError(
                f"stream packs {h.values_per_ciphertext} values per ciphertext, preset "
                f"{self._preset.name!r} packs {vpc}"
            )
        for expected in (self._expect_digest, ctx.digest if ctx else None):
            if expected is not None and h.context_digest != expected:
                raise ContextMismatchError(
                    f"stream made under key set {h.context_digest[:16]}…, expected {expected[:16]}…"
                )
        if self._expect_mask is not None and h.mask_digest != self._expect_mask:
            raise MaskMismatchError(
                f"stream made under mask {h.mask_digest[:16]}…, the round's mask is "
                f"{self._expect_mask[:16]}…"
            )
        self._check_binding(h)
        if self._expect_values is not None and h.n_values != self._expect_values:
            raise CountMismatchError(
                f"stream carries {h.n_values} values, the round expects {self._expect_values}"
            )
        expected_ct = -(-h.n_values // h.values_per_ciphertext)
        if h.n_ciphertexts != expected_ct:
            raise CountMismatchError(
                f"{h.n_values} values in {h.values_per_ciphertext}-value ciphertexts make "
                f"{expected_ct} ciphertexts, the header announces {h.n_ciphertexts}"
            )
        self._check_payload(h)
        self._form = h.form(seal_check=self._seal_check and h.kind == "update")

    def _check_payload(self, h: UpdateHeader) -> None:
        """The payload encoding fits the preset; the frame bound (exact for version 3)."""
        preset = self._preset
        if preset is None:
            return
        if h.version >= 3:
            want = "packed" if preset.encrypted else "float32"
            if h.payload != want:
                raise ParameterMismatchError(
                    f"stream frames are {h.payload!r}, preset {preset.name!r} frames are {want!r}"
                )
        if self._max_frame_arg is not None:
            return
        if h.payload == "packed":
            self._max_frame = packed_frame_bytes(preset, h.seeds)
        else:
            self._max_frame = frame_bound(preset)

    def _check_binding(self, h: UpdateHeader) -> None:
        want = self._expect_binding
        if want is not None and h.binding != want:
            got = h.binding
            raise RoundMismatchError(
                f"stream made for federation {got.federation_id[:12]!r} round {got.round} attempt "
                f"{got.attempt} participants {got.participants_digest[:12]!r}; the round is "
                f"federation {want.federation_id[:12]!r} round {want.round} attempt {want.attempt} "
                f"participants {want.participants_digest[:12]!r}"
            )
        if self._expect_channel is not None and h.channel != self._expect_channel:
            raise RoundMismatchError(
                f"stream made for channel {h.channel!r}, uploaded as {self._expect_channel!r}"
            )

    def _check_frame(self, payload: bytes) -> Frame | None:
        assert self._header is not None
        count = self._header.frame_values(self._frames_done)
        if self._ctx is not None:
            try:
                return self._ctx._load_frame(payload, count, self._form)
            except WireFormatError as exc:
                raise type(exc)(f"frame {self._frames_done}: {exc}") from exc
        preset = self._preset
        if preset is None:
            return None
        if not preset.encrypted:
            expected = 4 * count
        elif self._form.encoding == "packed":
            tail = count if count < self._header.values_per_ciphertext else 0
            expected = packed_frame_bytes(preset, self._form.seeds, tail)
        else:
            if not seal_header_ok(payload):
                raise MalformedStreamError(f"frame {self._frames_done}: not a SEAL ciphertext")
            return None
        if len(payload) != expected:
            raise ParameterMismatchError(
                f"frame {self._frames_done}: {len(payload)} bytes, expected {expected}"
            )
        return None


def iter_source(source: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    """Chunks of a file object (read in :data:`READ_CHUNK_BYTES` pieces) or of an iterable."""
    read = getattr(source, "read", None)
    if read is not None:
        while chunk := read(READ_CHUNK_BYTES):
            yield chunk
        return
    if isinstance(source, bytes | bytearray | memoryview | str):
        raise ConfigError("pass a file object or an iterable of byte chunks, not a bare string")
    yield from source


def read_update(
    source: BinaryIO | Iterable[bytes],
    public_ctx: PublicContext | None = None,
    *,
    expect_kind: str | None = "update",
    expect_context_digest: str | None = None,
    expect_mask_digest: str | None = None,
    expect_values: int | None = None,
    max_frame_bytes: int | None = None,
    expect_binding: RoundBinding | None = None,
) -> tuple[UpdateHeader, Iterator[bytes]]:
    """Pull-style reader: the header at once, then an iterator of validated frame payloads.

    The iterator raises the typed wire error where the stream goes wrong, including
    :class:`TruncatedStreamError` and :class:`TrailingBytesError` at its end.
    """
    parser = UpdateParser(
        public_ctx,
        expect_kind=expect_kind,
        expect_context_digest=expect_context_digest,
        expect_mask_digest=expect_mask_digest,
        expect_values=expect_values,
        max_frame_bytes=max_frame_bytes,
        expect_binding=expect_binding,
    )
    chunks = iter_source(source)
    pending: deque[bytes] = deque()
    for chunk in chunks:
        pending.extend(parser.feed(chunk))
        if parser.header is not None:
            break
    header = parser.header
    if header is None:
        parser.finish()
        raise AssertionError("unreachable: finish() raises without a header")

    def frames() -> Iterator[bytes]:
        while pending:
            yield pending.popleft()
        for more in chunks:
            yield from parser.feed(more)
        parser.finish()

    return header, frames()
