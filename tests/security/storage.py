"""Everything the aggregator stores, read back for a scan: files, database cells, the log."""

from __future__ import annotations

import base64
import binascii
import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KEY_BYTES = 32


@dataclass(frozen=True)
class Cell:
    """One value of one column of one row."""

    table: str
    column: str
    value: object

    def as_bytes(self) -> bytes:
        """The value's bytes (text as UTF-8, numbers as their text)."""
        if isinstance(self.value, bytes):
            return self.value
        return str(self.value).encode()


@dataclass(frozen=True)
class Storage:
    """The aggregator's data directory (every file), its database cells, and its log."""

    files: dict[Path, bytes]
    cells: list[Cell]
    tables: dict[str, list[str]]
    log: bytes

    def places(self) -> Iterator[tuple[str, bytes]]:
        """Every place a secret could hide: ``(where, bytes)``."""
        for path, data in self.files.items():
            yield str(path), data
        for cell in self.cells:
            yield f"{cell.table}.{cell.column}", cell.as_bytes()
        yield "server log", self.log

    def find(self, needle: bytes) -> list[str]:
        """Where ``needle`` occurs (empty when nowhere)."""
        return [where for where, data in self.places() if needle in data]


def read_storage(data_dir: Path, log_path: Path) -> Storage:
    """Read every file under ``data_dir`` and every cell of every table of its SQLite file."""
    files = {p: p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}
    db = sqlite3.connect(f"file:{data_dir / 'fedsparsify.db'}?mode=ro", uri=True)
    try:
        names = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        tables: dict[str, list[str]] = {}
        cells: list[Cell] = []
        for table in names:
            columns = [r[1] for r in db.execute(f"pragma table_info('{table}')")]
            tables[table] = columns
            for row in db.execute(f"select * from '{table}'"):
                cells += [
                    Cell(table, c, v) for c, v in zip(columns, row, strict=True) if v is not None
                ]
    finally:
        db.close()
    return Storage(files=files, cells=cells, tables=tables, log=log_path.read_bytes())


def text_forms(secret: bytes) -> list[bytes]:
    """The ways a byte string could be written down: raw, hex, base64, URL-safe base64."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def decodings(data: bytes) -> list[bytes]:
    """``data`` and whatever it decodes to as hex or base64 (a key could be stored encoded)."""
    out = [data]
    text = data.strip()
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        out.append(bytes.fromhex(text.decode("ascii")))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            out.append(decode(text))
        except (ValueError, binascii.Error):
            continue
    return out


def windows(data: bytes, stride: int = 1) -> set[bytes]:
    """Every ``KEY_BYTES``-long slice of ``data`` starting at a multiple of ``stride``."""
    return {data[i : i + KEY_BYTES] for i in range(0, len(data) - KEY_BYTES + 1, stride)}


def key_candidates(storage: Storage, *, blob_stride: int = 1) -> set[bytes]:
    """Every 32-byte string the aggregator holds that could serve as an X25519 private key.

    Database cells (and their hex / base64 decodings), the database files and the log are cut
    at every offset; blobs (contexts, envelopes, ciphertext streams) every ``blob_stride`` bytes.
    """
    found: set[bytes] = set()
    for cell in storage.cells:
        for decoded in decodings(cell.as_bytes()):
            found |= windows(decoded)
    for path, data in storage.files.items():
        found |= windows(data, 1 if "blobs" not in path.parts else blob_stride)
    found |= windows(storage.log)
    return found
