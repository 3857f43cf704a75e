"""One simulated site's round, as a Ray task (or a plain call under the local engine).

A simulated site keeps no process and no state between rounds: what it is, is its index in the
:class:`~fedsparsify.sim.sources.SiteSource` and the run's identity secret. Each round it is
rebuilt from the round's :class:`RoundJob` (shared by every site of the round), exactly as a
site that catches up in a real federation:

1. restore the previous round's global state (:meth:`Site.load_state_dict`), decrypt the
   previous round's aggregate with the CKKS secret key (:meth:`UpdateCodec.decode`, rounded to
   the result grid), and :meth:`Site.begin_round` with it: write it back, prune, plan;
2. evaluate the round's global model on its validation data, :meth:`Site.train` under the mask;
3. encrypt the kept coordinates with its capped weight and this round's pairwise masks
   (:meth:`UpdateCodec.encode`, bound to the round and participant set) and return the bytes.

Caches that live as long as the worker process: deserialised CKKS contexts (by digest) and a
few sites' data.
"""

from __future__ import annotations

import hashlib
import os
import resource
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsparsify.clients.codec import UpdateCodec
from fedsparsify.crypto import PairwiseMasker, RoundBinding, SecretContext, SiteIdentity
from fedsparsify.errors import ConfigError
from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.round_rules import VALUES, VOTES, vote_weight
from fedsparsify.platform.rounds import GlobalUpdate, Site
from fedsparsify.platform.spec import FederationSpec
from fedsparsify.sim.sources import SiteSource

__all__ = ["RoundJob", "SiteResult", "mask_public_keys", "run_site_round", "site_identity"]

_IDENTITY_DOMAIN = b"fedsparsify/sim-identity/v1"
_CONTEXTS: OrderedDict[str, SecretContext] = OrderedDict()
_SITES: OrderedDict[tuple[int, int], SiteData] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_MAX_CONTEXTS = 2
_MAX_SITES = 32


def site_identity(secret: bytes, name: str) -> SiteIdentity:
    """Site ``name``'s identity keys, derived from the run's ``secret`` (HKDF-SHA256), so a
    simulated site needs no key files: the driver knows every public key up front."""
    if len(secret) < 16:
        raise ConfigError("the simulation's identity secret must be at least 16 bytes")
    raw = HKDF(
        algorithm=hashes.SHA256(), length=96, salt=None, info=_IDENTITY_DOMAIN + name.encode()
    ).derive(secret)
    return SiteIdentity(
        signing_private=raw[:32], envelope_private=raw[32:64], mask_private=raw[64:]
    )


def mask_public_keys(secret: bytes, names: list[str]) -> dict[str, bytes]:
    """Every named site's mask public key."""
    return {name: site_identity(secret, name).public().mask_key for name in names}


@dataclass(frozen=True)
class RoundJob:
    """What every site of one round shares (put once into the object store).

    ``state``: the global site state after the previous round began (``None`` in round 0);
    ``aggregate``: the previous round's encrypted aggregate per channel (``None`` in round 0);
    ``mask_keys``: every participant's mask public key (its keys name the participants);
    ``weights``: each participant's capped share of the values channel.
    """

    spec: FederationSpec
    round_index: int
    binding: RoundBinding
    weights: Mapping[str, float]
    mask_keys: Mapping[str, bytes]
    context: bytes
    source: SiteSource
    identity_secret: bytes
    state: dict[str, Any] | None = None
    aggregate: Mapping[str, bytes] | None = None
    threads: int = 1


@dataclass
class SiteResult:
    """One site's round: its encrypted uploads per channel and what it measured
    (``upload_bytes``: their total size, kept when the driver drops the bytes)."""

    index: int
    name: str
    uploads: dict[str, bytes]
    mask_digest: str
    n_values: int
    sparsity: float
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    encrypt_s: float = 0.0
    decrypt_s: float = 0.0
    download_bytes: int = 0
    upload_bytes: int = 0
    pid: int = 0
    peak_rss: int = 0


def _context(secret: bytes) -> SecretContext:
    digest = hashlib.sha256(secret).hexdigest()
    with _CACHE_LOCK:
        ctx = _CONTEXTS.get(digest)
        if ctx is None:
            ctx = SecretContext.from_secret_bytes(secret)
            _CONTEXTS[digest] = ctx
            while len(_CONTEXTS) > _MAX_CONTEXTS:
                _CONTEXTS.popitem(last=False)
        return ctx


def _site_data(source: SiteSource, index: int) -> SiteData:
    key = (hash(source), index)
    with _CACHE_LOCK:
        data = _SITES.get(key)
        if data is not None:
            _SITES.move_to_end(key)
            return data
    data = source.site(index)
    with _CACHE_LOCK:
        _SITES[key] = data
        while len(_SITES) > _MAX_SITES:
            _SITES.popitem(last=False)
    return data


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _decode(codec: UpdateCodec, files: Mapping[str, bytes], scratch: Path) -> GlobalUpdate:
    paths = {}
    for channel, blob in files.items():
        path = scratch / f"aggregate-{channel}.bin"
        path.write_bytes(blob)
        paths[channel] = path
    update, _stats = codec.decode(paths)
    return update


def run_site_round(job: RoundJob, index: int) -> SiteResult:
    """Site ``index``'s part in ``job``'s round (see the module docstring)."""
    started = time.perf_counter()
    if torch.get_num_threads() != job.threads:
        torch.set_num_threads(job.threads)
    data = _site_data(job.source, index)
    name = data.name
    if name not in job.weights:
        raise ConfigError(f"site {name!r} is not a participant of round {job.round_index}")
    site = Site(job.spec, data, name=name)
    codec = UpdateCodec(_context(job.context), contributor=name)
    result = SiteResult(index=index, name=name, uploads={}, mask_digest="", n_values=0, sparsity=0)
    with tempfile.TemporaryDirectory(prefix="fedsparsify-site-") as tmp:
        scratch = Path(tmp)
        previous: GlobalUpdate | None = None
        if job.state is not None:
            site.load_state_dict(job.state)
        if job.aggregate is not None:
            t0 = time.perf_counter()
            previous = _decode(codec, job.aggregate, scratch)
            result.decrypt_s = time.perf_counter() - t0
            result.download_bytes = sum(len(b) for b in job.aggregate.values())
        plan = site.begin_round(job.round_index, previous)
        metrics = {f"val_{k}": v for k, v in site.evaluate().items()}
        t0 = time.perf_counter()
        update = site.train()
        metrics["train_s"] = time.perf_counter() - t0
        metrics.update({f"train_{k}": v for k, v in update.metrics.items()})
        weights = {VALUES: float(job.weights[name])}
        if update.votes is not None:
            weights[VOTES] = vote_weight(len(job.weights))
        maskers = None
        if job.spec.pairwise_masks:
            identity = site_identity(job.identity_secret, name)
            maskers = {
                channel: PairwiseMasker(
                    own_id=name,
                    own_mask_private=identity.mask_private,
                    mask_keys=job.mask_keys,
                    binding=job.binding,
                    channel=channel,
                )
                for channel in weights
            }
        files, stats = codec.encode(
            update, weights=weights, binding=job.binding, maskers=maskers, scratch=scratch
        )
        result.uploads = {channel: path.read_bytes() for channel, path in files.items()}
    result.upload_bytes = sum(len(blob) for blob in result.uploads.values())
    result.encrypt_s = stats.seconds
    result.mask_digest = plan.mask_digest
    result.n_values = plan.n_values
    result.sparsity = plan.sparsity
    result.metrics = metrics
    result.pid = os.getpid()
    result.peak_rss = _peak_rss()
    result.seconds = time.perf_counter() - started
    return result
