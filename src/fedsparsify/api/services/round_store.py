"""Where a round's ciphertexts live, and the sums made from them.

Files of round ``r`` (blob keys under ``federations/{fid}/rounds/{r}/``)::

    uploads/{channel}/{client_id}.bin   every accepted upload, byte for byte as received
    sum-{channel}.bin                   running sum of the accepted uploads of that channel
    sum-{channel}.sha256                its SHA-256 (hex)
    aggregate-{channel}.bin             the round's result, written when it closes

Uploads and aggregates are written durably (fsynced). A running sum can always be rebuilt from
the uploads, so it is written without any sync (a killed process still leaves it whole) and
trusted after a restart only when its digest file matches (:meth:`RoundFiles.sum_matches`): a
power cut's damage is caught there and the sum rebuilt. :meth:`RoundFiles.fold` adds at most
:data:`FAN_IN` streams at a time, so memory stays at a few ciphertexts per stream.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fedsparsify.api.blobs import BlobStore
from fedsparsify.crypto import PublicContext, UpdateHeader, add_updates, read_update
from fedsparsify.errors import WireFormatError

__all__ = [
    "FAN_IN",
    "PendingSum",
    "RoundFiles",
    "SumFile",
    "aggregate_key",
    "read_header",
    "round_dir",
    "sum_digest_key",
    "sum_key",
    "upload_key",
]

log = logging.getLogger(__name__)

#: Streams summed at once when an aggregate is recomputed from stored uploads.
FAN_IN = 8
_HASH_CHUNK = 1 << 20


def round_dir(fid: str, index: int) -> str:
    """Blob folder of one round."""
    return f"federations/{fid}/rounds/{index}"


def upload_key(fid: str, index: int, channel: str, client_id: str) -> str:
    """Blob key of one accepted upload."""
    return f"{round_dir(fid, index)}/uploads/{channel}/{client_id}.bin"


def sum_key(fid: str, index: int, channel: str) -> str:
    """Blob key of a channel's running sum."""
    return f"{round_dir(fid, index)}/sum-{channel}.bin"


def sum_digest_key(fid: str, index: int, channel: str) -> str:
    """Blob key of the SHA-256 of a channel's running sum."""
    return f"{round_dir(fid, index)}/sum-{channel}.sha256"


def aggregate_key(fid: str, index: int, channel: str) -> str:
    """Blob key of a closed round's aggregate."""
    return f"{round_dir(fid, index)}/aggregate-{channel}.bin"


def read_header(path: Path) -> UpdateHeader | None:
    """The header of a stored stream, or None if it is missing or unreadable."""
    try:
        with path.open("rb") as fh:
            header, _frames = read_update(fh, expect_kind=None)
            return header
    except (OSError, WireFormatError):
        return None


@dataclass(frozen=True)
class SumFile:
    """A sum written to a temporary file (not synced) and its SHA-256."""

    tmp: Path
    sha256: str


class PendingSum:
    """A sum being written to a temporary file of the blob store, hashed as it goes."""

    def __init__(self, blobs: BlobStore) -> None:
        self.tmp = blobs.temp_path("sum")
        self._fh: BinaryIO = self.tmp.open("wb")
        self._sha = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        """Append ``data``."""
        self._sha.update(data)
        return self._fh.write(data)

    def close(self) -> SumFile:
        """Finish the file (no sync: see the module docstring)."""
        self._fh.close()
        return SumFile(self.tmp, self._sha.hexdigest())

    def discard(self) -> None:
        """Drop the file."""
        self._fh.close()
        self.tmp.unlink(missing_ok=True)


def _sha256_of(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            h = hashlib.sha256()
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
            return h.hexdigest()
    except OSError:
        return None


class RoundFiles:
    """A round's uploads, running sums and aggregates in the blob store."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def upload_paths(
        self, fid: str, index: int, channel: str, clients: Sequence[str]
    ) -> list[Path]:
        """The stored uploads of ``clients`` for one channel."""
        return [self.blobs.path(upload_key(fid, index, channel, c)) for c in clients]

    def open_sum(self, fid: str, index: int, channel: str) -> BinaryIO | None:
        """The channel's running sum open for reading (None if there is none): a later commit
        renames a new sum into place and leaves this one readable to its end."""
        try:
            return self.blobs.path(sum_key(fid, index, channel)).open("rb")
        except FileNotFoundError:
            return None

    def fold(self, ctx: PublicContext, paths: Sequence[Path]) -> SumFile:
        """Sum streams into a temporary file, :data:`FAN_IN` at a time (bounded memory). The
        inputs are stored streams, checked when they were accepted."""
        acc: SumFile | None = None
        rest = list(paths)
        while rest or acc is None:
            take = FAN_IN - (acc is not None)
            batch = ([acc.tmp] if acc is not None else []) + rest[:take]
            rest = rest[take:]
            pending = PendingSum(self.blobs)
            try:
                with ExitStack() as stack:
                    sources = [stack.enter_context(p.open("rb")) for p in batch]
                    add_updates(ctx, sources, pending)
            except BaseException:
                pending.discard()
                raise
            finally:
                if acc is not None:
                    acc.tmp.unlink(missing_ok=True)
            acc = pending.close()
        return acc

    def add_to_sum(
        self,
        ctx: PublicContext,
        fid: str,
        index: int,
        channel: str,
        already: Sequence[str],
        upload: Path,
    ) -> SumFile:
        """A temporary file holding the channel's sum with ``upload`` added (not committed);
        the running sum is rebuilt from the uploads of ``already`` when it is stale."""
        current = self.blobs.path(sum_key(fid, index, channel))
        if already:
            header = read_header(current)
            if header is None or sorted(header.contributors) != sorted(already):
                log.warning("round %d %s sum is stale; rebuilding it", index, channel)
                return self.fold(ctx, [*self.upload_paths(fid, index, channel, already), upload])
            return self.fold(ctx, [current, upload])
        return self.fold(ctx, [upload])

    def commit_sum(self, made: SumFile, fid: str, index: int, channel: str) -> None:
        """Make ``made`` the channel's running sum, then record its digest (neither synced)."""
        self.blobs.commit(made.tmp, sum_key(fid, index, channel), durable=False)
        side = self.blobs.temp_path("sum-digest")
        side.write_text(made.sha256 + "\n")
        self.blobs.commit(side, sum_digest_key(fid, index, channel), durable=False)

    def sum_matches(self, fid: str, index: int, channel: str, contributors: Sequence[str]) -> bool:
        """Whether the channel's running sum holds exactly ``contributors`` and is whole (its
        digest file matches: after a power cut an unsynced sum may not be)."""
        path = self.blobs.path(sum_key(fid, index, channel))
        header = read_header(path)
        if header is None or sorted(header.contributors) != sorted(contributors):
            return False
        try:
            want = self.blobs.path(sum_digest_key(fid, index, channel)).read_text().strip()
        except OSError:
            return False
        return _sha256_of(path) == want

    def write_aggregate(
        self, ctx: PublicContext, fid: str, index: int, channel: str, complete: Sequence[str]
    ) -> int:
        """Make the channel's aggregate hold exactly ``complete`` (durably); its size in bytes.

        A rename when the running sum already holds them, else a sum of their stored uploads.
        """
        target = aggregate_key(fid, index, channel)
        final = read_header(self.blobs.path(target))
        if final is not None and sorted(final.contributors) == sorted(complete):
            pass  # already written before a restart
        elif self.sum_matches(fid, index, channel, complete):
            running = self.blobs.path(sum_key(fid, index, channel))
            self.blobs.sync(running)
            self.blobs.commit(running, target)
        else:
            made = self.fold(ctx, self.upload_paths(fid, index, channel, complete))
            self.blobs.sync(made.tmp)
            self.blobs.commit(made.tmp, target)
        return self.blobs.size(target)

    def discard_uploads(self, fid: str, index: int) -> None:
        """Drop a round's uploads and running sums (an attempt that will not close)."""
        folder = round_dir(fid, index)
        for key in self.blobs.list(folder):
            if key.rsplit("/", 1)[-1].startswith("sum-"):
                self.blobs.delete(key)
        self.blobs.delete_tree(f"{folder}/uploads")

    def discard(self, fid: str, index: int, *, keep_uploads: bool) -> None:
        """After a round finished: its running sums go, and its uploads unless kept."""
        folder = round_dir(fid, index)
        for key in self.blobs.list(folder):
            if key.rsplit("/", 1)[-1].startswith("sum-"):
                self.blobs.delete(key)
        if not keep_uploads:
            self.blobs.delete_tree(f"{folder}/uploads")
