"""An atomic blob store in the data directory.

Every blob is written to a temporary file under ``tmp/{owner}/`` (same file system), flushed
and fsynced, then renamed into place and its directory fsynced: a reader sees either the old
blob or the whole new one, and a blob that was renamed survives a crash. Blobs that can be
rebuilt from others (running sums) may skip both syncs (``durable=False``): a killed process
still leaves them whole, and their owner must detect a power cut's damage itself.

Several aggregator processes may share one blob directory (PostgreSQL mode: a POSIX file system
that every replica mounts, with atomic ``rename``). Each process writes its temporary files in
a folder of its own, named by its instance id, so that leftovers of a killed process can be
told from the work in flight of a live one: :meth:`BlobStore.sweep_temporaries` removes only
the folders whose owner the caller knows to be dead.

Keys are relative POSIX paths made by the services from ids the server generated; anything
that could escape the root is refused.
"""

from __future__ import annotations

import builtins
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

    def __init__(self, root: Path, owner: str = "local") -> None:
        if not owner or owner in (".", "..") or "/" in owner or "\\" in owner:
            raise ValueError(f"bad blob store owner {owner!r}")
        self.root = root.resolve()
        self.tmp_root = self.root / "tmp"
        self.tmp_dir = self.tmp_root / owner
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
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
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

    def temporary_owners(self) -> builtins.list[str]:
        """Owners (instance ids) of the other temporary folders, oldest first."""
        try:
            entries = list(self.tmp_root.iterdir())
        except FileNotFoundError:
            return []
        others = [e for e in entries if e.is_dir() and e != self.tmp_dir]
        return [e.name for e in sorted(others, key=_mtime)]

    def sweep_temporaries(self, owner: str) -> int:
        """Delete the temporary folder of ``owner`` (known dead); how many files it held."""
        folder = self.tmp_root / owner
        if folder == self.tmp_dir or folder.parent != self.tmp_root:
            raise ValueError(f"refusing to sweep {folder}")
        count = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def temporary_files(self) -> builtins.list[Path]:
        """Every temporary file under ``tmp/``, of any owner."""
        if not self.tmp_root.is_dir():
            return []
        return sorted(p for p in self.tmp_root.rglob("*") if p.is_file())

    def remove_own_temporaries(self) -> None:
        """At a clean shutdown: this process's temporary folder goes (anything left is partial)."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def discard_loose_temporaries(self) -> int:
        """Delete temporary files directly in ``tmp/`` (left by release 0.1); how many."""
        count = 0
        try:
            entries = list(self.tmp_root.iterdir())
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.is_file():
                entry.unlink(missing_ok=True)
                count += 1
        return count


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
