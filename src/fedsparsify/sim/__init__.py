"""Simulated federations of many sites on one machine or a Ray cluster (``fedsparsify simulate``).

The same round code and crypto as a real federation: each site's round is the platform's
:class:`~fedsparsify.platform.rounds.Site` (begin the round, train under the mask), encoded with
:class:`~fedsparsify.clients.codec.UpdateCodec` (capped weight, CKKS, pairwise masks bound to the
round and participant set), run as a Ray task (:class:`RayEngine`) or in this process
(:class:`LocalEngine`); the driver adds the encrypted updates as they arrive with
:func:`~fedsparsify.crypto.add_updates`, and every site decrypts the same aggregate.

- :mod:`.sources`: per-site data made on demand (synthetic, digits, brain age);
- :mod:`.sampling`: per-round client sampling and the sampled participants' weights;
- :mod:`.site_round`: one site's round (the Ray task);
- :mod:`.running_sum`: the driver's running encrypted sum;
- :mod:`.engines`: local and Ray;
- :mod:`.driver`: the rounds; :mod:`.report`: the demo's report format.

Nothing here imports ``fedsparsify.api``; Ray is imported only by the Ray engine.
"""

from fedsparsify.sim.driver import SimProgress, SimResult, SimRow, Simulation
from fedsparsify.sim.engines import Engine, LocalEngine, RayEngine, make_engine
from fedsparsify.sim.sampling import ClientSampler, parse_sample
from fedsparsify.sim.sources import SiteSource, make_source

__all__ = [
    "ClientSampler",
    "Engine",
    "LocalEngine",
    "RayEngine",
    "SimProgress",
    "SimResult",
    "SimRow",
    "Simulation",
    "SiteSource",
    "make_engine",
    "make_source",
    "parse_sample",
]
