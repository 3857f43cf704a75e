"""Where simulated sites run: in this process (``local``) or as Ray tasks (``ray``).

An engine runs one function over the site indices of a round and yields results as they
complete, with at most ``window`` sites in flight, so the driver never holds more than a few
updates. The round's shared job goes into Ray's object store once (``ray.put``) and every task
reads it from there; a worker that dies is retried by Ray, an exception in a site's round ends
the run with that site named.

Ray is imported only by :class:`RayEngine` (the ``fedsparsify[sim]`` extra): the aggregator's
install and the local engine do without it. ``address`` joins an existing cluster (``ray start
--head`` on one machine, ``ray start --address`` on the others, fedsparsify installed on all);
without it a private local cluster is started on loopback with ``num_cpus`` CPUs and stopped at
the end. A process that already holds a Ray session (a test's cluster) keeps it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from fedsparsify.errors import ConfigError, FedsparsifyError, SimulationError

__all__ = ["Engine", "LocalEngine", "RayEngine", "make_engine"]

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")

#: Object store of a local cluster started here (MiB): a round's job plus a few updates.
DEFAULT_OBJECT_STORE_MB = 256
_MIN_OBJECT_STORE_MB = 80


class Engine(Protocol):
    """Runs site rounds; see the module docstring."""

    name: str

    def slots(self) -> int:
        """Sites that can run at the same time."""
        ...

    def map_unordered(
        self, fn: Callable[[J, int], R], job: J, indices: Sequence[int], *, window: int
    ) -> Iterator[R]:
        """``fn(job, i)`` for every ``i``, yielded as each completes."""
        ...

    def close(self) -> None:
        """Release what the engine started."""
        ...


class LocalEngine:
    """Every site in this process, one after the other: the reference for the Ray engine."""

    name = "local"

    def slots(self) -> int:
        return 1

    def map_unordered(
        self, fn: Callable[[J, int], R], job: J, indices: Sequence[int], *, window: int
    ) -> Iterator[R]:
        import torch

        threads = torch.get_num_threads()
        try:
            for index in indices:
                yield fn(job, index)
        finally:
            torch.set_num_threads(threads)

    def close(self) -> None:
        return None


def _import_ray(*, local: bool) -> Any:
    """Ray, configured before its first import: no usage reporting, and for a private local
    cluster every Ray process on loopback (Ray otherwise binds the machine's network address;
    its single-machine switch keeps a local cluster on 127.0.0.1)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "the ray engine needs Ray: pip install 'fedsparsify[sim]' (or use --engine local)"
        ) from exc
    return ray


class RayEngine:
    """Sites as Ray tasks of ``cpus_per_client`` CPUs each."""

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_client: float = 1.0,
        object_store_mb: int = DEFAULT_OBJECT_STORE_MB,
    ) -> None:
        if not cpus_per_client > 0:
            raise ConfigError(f"cpus_per_client must be positive, got {cpus_per_client}")
        if num_cpus is not None and num_cpus < 1:
            raise ConfigError(f"num_cpus must be at least 1, got {num_cpus}")
        if address is not None and num_cpus is not None:
            raise ConfigError("num_cpus sizes a local cluster; a joined cluster has its own")
        if object_store_mb < _MIN_OBJECT_STORE_MB:
            raise ConfigError(f"object_store_mb must be at least {_MIN_OBJECT_STORE_MB}")
        self._ray = ray = _import_ray(local=address is None)
        self.cpus_per_client = cpus_per_client
        self._owned = False
        if ray.is_initialized():
            log.info("using the Ray session this process already holds")
        else:
            try:
                if address is None:
                    ray.init(
                        num_cpus=num_cpus or os.cpu_count() or 1,
                        object_store_memory=object_store_mb * 1024 * 1024,
                        include_dashboard=False,
                        log_to_driver=False,
                        configure_logging=False,
                    )
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                raise SimulationError(f"cannot start or join {where}: {exc}") from exc
            self._owned = True
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if cpus < cpus_per_client:
            raise ConfigError(
                f"the Ray cluster has {cpus:g} CPUs; a site asks for {cpus_per_client:g}"
            )
        self._slots = max(1, int(cpus // cpus_per_client))
        self._remotes: dict[Callable[..., Any], Any] = {}
        log.info("Ray: %g CPUs, %d sites at a time", cpus, self._slots)

    def slots(self) -> int:
        return self._slots

    def _remote(self, fn: Callable[..., Any]) -> Any:
        remote = self._remotes.get(fn)
        if remote is None:
            remote = self._ray.remote(num_cpus=self.cpus_per_client, max_retries=2)(fn)
            self._remotes[fn] = remote
        return remote

    def map_unordered(
        self, fn: Callable[[J, int], R], job: J, indices: Sequence[int], *, window: int
    ) -> Iterator[R]:
        ray = self._ray
        remote = self._remote(fn)
        job_ref = ray.put(job)
        pending: dict[Any, int] = {}
        todo = iter(indices)

        def fill() -> None:
            while len(pending) < max(1, window):
                index = next(todo, None)
                if index is None:
                    return
                pending[remote.remote(job_ref, index)] = index

        try:
            fill()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                index = pending.pop(ref)
                result = self._get(ref, index)
                del ref, done
                fill()
                yield result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            pending.clear()

    def _get(self, ref: Any, index: int) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FedsparsifyError):
                raise type(cause)(f"site {index}: {cause}") from exc
            raise SimulationError(f"site {index} failed: {cause or exc}") from exc
        except ray.exceptions.RayError as exc:
            raise SimulationError(f"site {index} could not run: {exc}") from exc

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False


def make_engine(
    name: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_client: float = 1.0,
    object_store_mb: int = DEFAULT_OBJECT_STORE_MB,
) -> Engine:
    """``local`` or ``ray`` (``address`` and ``num_cpus`` only for Ray)."""
    if name == "local":
        if address is not None:
            raise ConfigError("--address joins a Ray cluster: use it with --engine ray")
        return LocalEngine()
    if name == "ray":
        return RayEngine(
            address=address,
            num_cpus=num_cpus,
            cpus_per_client=cpus_per_client,
            object_store_mb=object_store_mb,
        )
    raise ConfigError(f"unknown engine {name!r}; expected 'local' or 'ray'")
