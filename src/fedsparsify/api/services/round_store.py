"""Where a round's ciphertexts live, and the sums made from them.

Files of round ``r`` (blob keys under ``federations/{fid}/rounds/{r}/``)::

    uploads/{channel}/{client_id}.bin   every accepted upload, byte for byte as received
    sum-{channel}.bin                   running sum of the accepted uploads of that channel
    aggregate-{channel}.bin             the round's result, written when it closes

Sums are written to temporary files and committed by the caller; :meth:`RoundFiles.fold` adds
at most :data:`FAN_IN` streams at a time, so memory stays at a few ciphertexts per stream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from fedsparsify.api.blobs import BlobStore
from fedsparsify.crypto import PublicContext, UpdateHeader, add_updates, read_update
from fedsparsify.errors import WireFormatError

__all__ = [
    "FAN_IN",
    "RoundFiles",
    "aggregate_key",
    "read_header",
    "round_dir",
    "sum_key",
    "upload_key",
]

log = logging.getLogger(__name__)

#: Streams summed at once when an aggregate is recomputed from stored uploads.
FAN_IN = 8


def round_dir(fid: str, index: int) -> str:
    """Blob folder of one round."""
    return f"federations/{fid}/rounds/{index}"


def upload_key(fid: str, index: int, channel: str, client_id: str) -> str:
    """Blob key of one accepted upload."""
    return f"{round_dir(fid, index)}/uploads/{channel}/{client_id}.bin"


def sum_key(fid: str, index: int, channel: str) -> str:
    """Blob key of a channel's running sum."""
    return f"{round_dir(fid, index)}/sum-{channel}.bin"


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


class RoundFiles:
    """A round's uploads, running sums and aggregates in the blob store."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def upload_paths(
        self, fid: str, index: int, channel: str, clients: Sequence[str]
    ) -> list[Path]:
        """The stored uploads of ``clients`` for one channel."""
        return [self.blobs.path(upload_key(fid, index, channel, c)) for c in clients]

    def fold(self, ctx: PublicContext, paths: Sequence[Path]) -> Path:
        """Sum streams into a temporary file, :data:`FAN_IN` at a time (bounded memory)."""
        acc: Path | None = None
        rest = list(paths)
        while rest or acc is None:
            take = FAN_IN - (acc is not None)
            batch = ([acc] if acc is not None else []) + rest[:take]
            rest = rest[take:]
            try:
                with ExitStack() as stack:
                    sources = [stack.enter_context(p.open("rb")) for p in batch]
                    with self.blobs.writer("sum") as (tmp, out):
                        add_updates(ctx, sources, out)
            finally:
                if acc is not None:
                    acc.unlink(missing_ok=True)
            acc = tmp
        return acc

    def add_to_sum(
        self,
        ctx: PublicContext,
        fid: str,
        index: int,
        channel: str,
        already: Sequence[str],
        upload: Path,
    ) -> Path:
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

    def sum_matches(self, fid: str, index: int, channel: str, contributors: Sequence[str]) -> bool:
        """Whether the channel's running sum holds exactly ``contributors``."""
        header = read_header(self.blobs.path(sum_key(fid, index, channel)))
        return header is not None and sorted(header.contributors) == sorted(contributors)

    def write_aggregate(
        self, ctx: PublicContext, fid: str, index: int, channel: str, complete: Sequence[str]
    ) -> int:
        """Make the channel's aggregate hold exactly ``complete``; its size in bytes.

        A rename when the running sum already holds them, else a sum of their stored uploads.
        """
        target = aggregate_key(fid, index, channel)
        final = read_header(self.blobs.path(target))
        if final is not None and sorted(final.contributors) == sorted(complete):
            pass  # already written before a restart
        elif self.sum_matches(fid, index, channel, complete):
            self.blobs.commit(self.blobs.path(sum_key(fid, index, channel)), target)
        else:
            paths = self.upload_paths(fid, index, channel, complete)
            self.blobs.commit(self.fold(ctx, paths), target)
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
