"""The TenSEAL / SEAL boundary: byte I/O for SEAL objects and exception translation.

``tenseal.sealapi`` objects only save to and load from a *path*; there is no bytes or stream
variant. So each thread of each process owns one anonymous scratch file (``O_TMPFILE``: no name,
mode 0600, on tmpfs when ``/dev/shm`` is writable) and hands SEAL its ``/proc/self/fd/N`` path;
nothing is ever left on the file system, even when the process is killed. Where ``/proc`` is
missing, a private (0700) directory removed at exit takes its place. Measured for one N=4096
seeded ciphertext (24.7 kB): save + read back 90-130 µs (mostly zstd), write + load 170-210 µs
(mostly seed expansion), against 310 µs to encrypt it; the same through a file on disk costs
about 4x more.

Everything TenSEAL raises (``ValueError``, ``RuntimeError``, ``TypeError``...) is caught by the
callers of this module through :data:`SEAL_ERRORS` and re-raised as one of our errors.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import struct
import tempfile
import threading
import zlib
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi
import zstandard

__all__ = [
    "PRNG_RECORD_BYTES",
    "SEAL_ERRORS",
    "SEAL_HEADER",
    "SEAL_MAGIC",
    "CiphertextParts",
    "ciphertext_bytes",
    "ciphertext_parts",
    "load_ciphertext",
    "load_secret_key",
    "plaintext_data",
    "save_secret_key",
    "save_to_bytes",
    "seal_header_ok",
    "sealapi",
    "ts",
]

logger = logging.getLogger(__name__)

#: Exceptions TenSEAL / SEAL / pybind11 raise for bad input; always translated by callers.
SEAL_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    RuntimeError,
    TypeError,
    OverflowError,
    IndexError,
)
#: SEAL's serialization header: magic, header size, version major/minor, compression mode,
#: reserved, total size (little endian).
SEAL_HEADER = struct.Struct("<HBBBBHQ")
SEAL_MAGIC = 0xA15E
#: SEAL's compression modes.
_COMPR_NONE, _COMPR_ZLIB, _COMPR_ZSTD = 0, 1, 2
#: A Plaintext's members before its DynArray: parms_id (4 x u64), coeff_count (u64), scale (f64).
_PLAINTEXT_MEMBERS = struct.Struct("<4QQd")
#: A Ciphertext's members before its DynArray: parms_id (4 x u64), is_ntt_form (u8), size,
#: poly_modulus_degree, coeff_modulus_size (u64 each), scale (f64), correction_factor (u64).
_CIPHERTEXT_MEMBERS = struct.Struct("<4QBQQQdQ")
#: What travels of a seeded ciphertext's second polynomial: PRNG type (u8) and 64-byte seed.
PRNG_RECORD_BYTES = 65
#: The same record as SEAL saves it, behind its own serialization header.
PRNG_INFO_BYTES = 16 + PRNG_RECORD_BYTES
_U64 = struct.Struct("<Q")

_BASE_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
_USE_PROC_FD = os.path.isdir("/proc/self/fd")
_local = threading.local()
_lock = threading.Lock()
_fallback_dir: dict[int, str] = {}


class _Scratch:
    """This thread's scratch file and the path SEAL should open to reach it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        if _USE_PROC_FD:
            # lives as long as the thread: closed when the thread-local is collected
            self.file: IO[bytes] | None = tempfile.TemporaryFile(dir=_BASE_DIR)  # noqa: SIM115
            self.path = f"/proc/self/fd/{self.file.fileno()}"
        else:  # pragma: no cover - systems without /proc
            self.file = None
            self.path = os.path.join(_private_dir(), f"scratch-{threading.get_ident()}")

    def read(self) -> bytes:
        if self.file is None:  # pragma: no cover
            with open(self.path, "rb") as fh:
                return fh.read()
        fd = self.file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0)

    def write(self, data: bytes) -> None:
        if self.file is None:  # pragma: no cover
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return
        fd = self.file.fileno()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def wipe(self) -> None:
        """Drop the content (used after secret keys went through)."""
        if self.file is None:  # pragma: no cover
            if os.path.exists(self.path):
                os.unlink(self.path)
            return
        os.ftruncate(self.file.fileno(), 0)


def _private_dir() -> str:  # pragma: no cover - systems without /proc
    with _lock:
        path = _fallback_dir.get(os.getpid())
        if path is None or not os.path.isdir(path):
            path = tempfile.mkdtemp(prefix="fedsparsify-seal-", dir=_BASE_DIR)
            _fallback_dir[os.getpid()] = path
            atexit.register(shutil.rmtree, path, True)
        return path


def _scratch() -> _Scratch:
    """This thread's scratch file (a fresh one after a fork: never shared with the parent)."""
    scratch: _Scratch | None = getattr(_local, "scratch", None)
    if scratch is None or scratch.pid != os.getpid():
        scratch = _Scratch()
        _local.scratch = scratch
    return scratch


def save_to_bytes(obj: Any) -> bytes:
    """Serialise a SEAL object (ciphertext, seeded ciphertext, key) through the scratch file."""
    scratch = _scratch()
    obj.save(scratch.path)
    return scratch.read()


def load_ciphertext(seal_context: Any, data: bytes) -> Any:
    """A ``sealapi.Ciphertext`` loaded (and validated by SEAL) under ``seal_context``."""
    scratch = _scratch()
    scratch.write(data)
    ct = sealapi.Ciphertext()
    ct.load(seal_context, scratch.path)
    return ct


def load_secret_key(seal_context: Any, data: bytes) -> Any:
    """A ``sealapi.SecretKey``; the scratch file is emptied right after."""
    scratch = _scratch()
    try:
        scratch.write(data)
        key = sealapi.SecretKey()
        key.load(seal_context, scratch.path)
        return key
    finally:
        scratch.wipe()


def save_secret_key(key: Any) -> bytes:
    """The bytes of a ``sealapi.SecretKey``; the scratch file is emptied right after."""
    scratch = _scratch()
    try:
        key.save(scratch.path)
        return scratch.read()
    finally:
        scratch.wipe()


def seal_header_ok(data: bytes) -> bool:
    """Whether ``data`` starts with a SEAL serialization header whose size field matches."""
    if len(data) < SEAL_HEADER.size:
        return False
    magic, header_size, major, _minor, compr, _reserved, size = SEAL_HEADER.unpack_from(data)
    return (
        magic == SEAL_MAGIC
        and header_size == SEAL_HEADER.size
        and major >= 3
        and compr in (0, 1, 2)
        and size == len(data)
    )


def _body(data: bytes, max_raw: int) -> tuple[tuple[int, ...], bytes]:
    """SEAL header fields and the decompressed members of a saved object (at most ``max_raw``
    bytes once inflated: a compression bomb is refused, not inflated)."""
    if not seal_header_ok(data):
        raise ValueError("not a SEAL object")
    fields = SEAL_HEADER.unpack_from(data)
    raw = bytes(data[SEAL_HEADER.size :])
    compr = fields[4]
    if compr == _COMPR_ZSTD:
        raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=max_raw)
    elif compr == _COMPR_ZLIB:
        inflate = zlib.decompressobj()
        raw = inflate.decompress(raw, max_raw)
        if inflate.unconsumed_tail or not inflate.eof:
            raise ValueError("compressed SEAL object inflates past its bound or is cut")
    if len(raw) > max_raw:
        raise ValueError("SEAL object larger than its bound")
    return fields, raw


@dataclass(frozen=True)
class CiphertextParts:
    """A ciphertext's serialisation cut open (SEAL 4.x ``Ciphertext::save_members``).

    ``data``: the residues as SEAL stores them (RNS order, N per prime, polynomial by
    polynomial): all ``size`` polynomials, or for a seeded ciphertext only the first one, its
    second then being ``prng``: the 65-byte PRNG record (type byte, 64-byte seed) it expands
    from. sealapi has no write access to polynomial data, so a ciphertext is built by writing
    such parts back as SEAL bytes (:func:`ciphertext_bytes`) and loading them, which SEAL checks.
    """

    version: tuple[int, int]
    parms_id: tuple[int, int, int, int]
    ntt_form: bool
    size: int
    poly_modulus_degree: int
    coeff_modulus_size: int
    scale: float
    correction_factor: int
    data: np.ndarray
    prng: bytes | None


def ciphertext_parts(data: bytes, max_raw: int) -> CiphertextParts:
    """Cut a saved ciphertext open (see :class:`CiphertextParts`); ``ValueError`` for any
    layout other than SEAL 4.x's, for counts that do not match the members, or for bytes
    that inflate past ``max_raw``."""
    fields, body = _body(data, max_raw)
    if len(body) < _CIPHERTEXT_MEMBERS.size + SEAL_HEADER.size + _U64.size:
        raise ValueError("SEAL ciphertext too short")
    parms = _CIPHERTEXT_MEMBERS.unpack_from(body)
    size, n, k = parms[5], parms[6], parms[7]
    at = _CIPHERTEXT_MEMBERS.size
    inner = SEAL_HEADER.unpack_from(body, at)
    (count,) = _U64.unpack_from(body, at + SEAL_HEADER.size)
    start = at + SEAL_HEADER.size + _U64.size
    full = size * n * k
    if inner[0] != SEAL_MAGIC or parms[4] not in (0, 1) or count not in (full, n * k):
        raise ValueError("unexpected SEAL ciphertext layout")
    end = start + 8 * count
    prng: bytes | None = None
    if count == full and len(body) == end:
        pass
    elif count == n * k and size == 2 and len(body) == end + PRNG_INFO_BYTES:
        info = SEAL_HEADER.unpack_from(body, end)
        if info[0] != SEAL_MAGIC or info[6] != PRNG_INFO_BYTES or info[4] != _COMPR_NONE:
            raise ValueError("unexpected SEAL PRNG record")
        prng = bytes(body[end + SEAL_HEADER.size :])
    else:
        raise ValueError("SEAL ciphertext length does not match its members")
    return CiphertextParts(
        version=(fields[2], fields[3]),
        parms_id=(parms[0], parms[1], parms[2], parms[3]),
        ntt_form=bool(parms[4]),
        size=size,
        poly_modulus_degree=n,
        coeff_modulus_size=k,
        scale=parms[8],
        correction_factor=parms[9],
        data=np.frombuffer(body, dtype="<u8", count=count, offset=start),
        prng=prng,
    )


def ciphertext_bytes(parts: CiphertextParts) -> bytes:
    """SEAL bytes (uncompressed) of :class:`CiphertextParts`, for :func:`load_ciphertext`."""
    major, minor = parts.version
    data = np.ascontiguousarray(parts.data, dtype="<u8")
    array = SEAL_HEADER.pack(
        SEAL_MAGIC,
        SEAL_HEADER.size,
        major,
        minor,
        _COMPR_NONE,
        0,
        SEAL_HEADER.size + _U64.size + data.nbytes,
    )
    pieces = [
        _CIPHERTEXT_MEMBERS.pack(
            *parts.parms_id,
            int(parts.ntt_form),
            parts.size,
            parts.poly_modulus_degree,
            parts.coeff_modulus_size,
            parts.scale,
            parts.correction_factor,
        ),
        array,
        _U64.pack(data.size),
        data.tobytes(),
    ]
    if parts.prng is not None:
        if len(parts.prng) != PRNG_RECORD_BYTES:
            raise ValueError(f"a PRNG record is {PRNG_RECORD_BYTES} bytes")
        info = SEAL_HEADER.pack(
            SEAL_MAGIC, SEAL_HEADER.size, major, minor, _COMPR_NONE, 0, PRNG_INFO_BYTES
        )
        pieces += [info, parts.prng]
    body = b"".join(pieces)
    header = SEAL_HEADER.pack(
        SEAL_MAGIC, SEAL_HEADER.size, major, minor, _COMPR_NONE, 0, SEAL_HEADER.size + len(body)
    )
    return header + body


def plaintext_data(pt: Any) -> np.ndarray:
    """The coefficients of a ``sealapi.Plaintext`` (RNS order: N per prime), read off its
    serialisation (sealapi offers no array access)."""
    data = save_to_bytes(pt)
    fields, body = _body(data, 64 + 16 * len(data) + (1 << 20))
    del fields
    at = _PLAINTEXT_MEMBERS.size
    coeff_count = _PLAINTEXT_MEMBERS.unpack_from(body)[4]
    inner_magic = SEAL_HEADER.unpack_from(body, at)[0]
    (count,) = _U64.unpack_from(body, at + SEAL_HEADER.size)
    start = at + SEAL_HEADER.size + _U64.size
    if inner_magic != SEAL_MAGIC or count != coeff_count or len(body) != start + 8 * count:
        raise ValueError("unexpected SEAL plaintext layout")
    return np.frombuffer(body, dtype="<u8", offset=start).astype(np.uint64)
