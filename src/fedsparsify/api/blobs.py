"""An atomic blob store in the data directory.

Every blob is written to a temporary file under ``tmp/`` (same file system), flushed and
fsynced, then renamed into place and its directory fsynced: a reader sees either the old blob
or the whole new one, and a blob that was renamed survives a crash. Blobs that can be rebuilt
from others (running sums) may skip both syncs (``durable=False``): a killed process still
leaves them whole, and their owner must detect a power cut's damage itself. Temporary files
left by a killed server are discarded at startup (:meth:`BlobStore.discard_temporaries`).

Keys are relative POSIX paths made by the services from ids the server generated; anything
that could escape the root is refused.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["BlobStore", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable (no-op where directories cannot sync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class BlobStore:
    """Files under one root directory, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of ``key`` (which need not exist)."""
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or "\\" in p for p in parts):
            raise ValueError(f"bad blob key {key!r}")
        return self.root.joinpath(*parts)

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a blob."""
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        """Size in bytes of the blob ``key``."""
        return self.path(key).stat().st_size

    def temp_path(self, hint: str = "blob") -> Path:
        """A fresh temporary file name (not created) on the store's file system."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in hint)[:40]
        return self.tmp_dir / f"{safe}.{secrets.token_hex(8)}.tmp"

    @contextmanager
    def writer(self, hint: str = "blob") -> Iterator[tuple[Path, BinaryIO]]:
        """A temporary file open for writing; fsynced on exit, deleted if the block raises.

        Commit it with :meth:`commit` after the block.
        """
        tmp = self.temp_path(hint)
        try:
            with tmp.open("wb") as fh:
                yield tmp, fh
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def commit(self, tmp: Path, key: str, *, durable: bool = True) -> Path:
        """Atomically move the (already fsynced, when ``durable``) temporary file ``tmp`` to
        ``key``; ``durable`` also syncs the directory, so that the rename survives a power cut."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        if durable:
            fsync_dir(target.parent)
        return target

    @staticmethod
    def sync(path: Path) -> None:
        """Flush a file written with ``durable=False`` to the disk."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put_bytes(self, key: str, data: bytes) -> Path:
        """Write ``data`` as the blob ``key``, atomically."""
        with self.writer(key.rsplit("/", 1)[-1]) as (tmp, fh):
            fh.write(data)
        return self.commit(tmp, key)

    def get_bytes(self, key: str) -> bytes:
        """The whole blob (for small blobs: contexts, envelopes)."""
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        """Remove a blob if present."""
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, key: str) -> None:
        """Remove a folder of blobs if present."""
        shutil.rmtree(self.path(key), ignore_errors=True)

    def list(self, key: str) -> list[str]:
        """Keys of the files directly inside folder ``key``."""
        folder = self.path(key)
        if not folder.is_dir():
            return []
        return sorted(f"{key}/{p.name}" for p in folder.iterdir() if p.is_file())

    def discard_temporaries(self) -> int:
        """Delete every temporary file (left by a killed server); how many there were."""
        count = 0
        for entry in self.tmp_dir.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
                count += 1
        return count
