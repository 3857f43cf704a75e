"""Flower's SecAgg+ (flwr 1.42) run stage by stage with Flower's own code, for comparison.

Every site runs the SecAgg+ client stages of ``flwr.client.mod.secure_aggregation.
secaggplus_mod`` (setup, share keys, collect masked vectors, unmask) on its own state; the
server side does what ``flwr.server.workflow.secure_aggregation.secaggplus_workflow`` does
between those stages (relay keys and encrypted shares, add the masked vectors, rebuild the
private masks from Shamir shares, dequantize), with the same Flower primitives; only the Grid
message transport is left out, so bytes are the payloads the stages exchange (no gRPC framing).
Parameters are Flower's defaults: clipping range 8, quantization range 2^22, modulus 2^32,
max weight 1000; the neighbour graph is complete and the reconstruction threshold is
``K // 2 + 1``.

``flwr`` is an optional extra (``pip install -e .[bench]``); :func:`available` says whether it
can be imported, and why not.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["available", "run_secaggplus"]

CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 2**22
MODULUS_RANGE = 2**32
MAX_WEIGHT = 1000.0
_ID_BYTES = 8  # a node id on the wire (uint64)


def available() -> str | None:
    """``None`` when Flower's SecAgg+ modules import, else the reason they do not."""
    try:
        import flwr.client.mod.secure_aggregation.secaggplus_mod
        import flwr.common.secure_aggregation.crypto.shamir  # noqa: F401
    except ImportError as exc:
        return f"flwr is not installed ({exc}); install the bench extra: pip install -e .[bench]"
    return None


def run_secaggplus(vectors: Sequence[np.ndarray], samples: Sequence[int]) -> dict[str, Any]:
    """One SecAgg+ round over ``vectors`` (one float vector per site, weighted by ``samples``).

    Returns per-site seconds (median), upload and download bytes per site (the model download
    as float32), server seconds, and the max |error| against numpy's weighted average.
    """
    # the package exports a function of the module's name: take the module itself
    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    from flwr.common import bytes_to_ndarray, ndarray_to_bytes, ndarrays_to_parameters
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    k = len(vectors)
    nids = list(range(1, k + 1))
    threshold = k // 2 + 1
    states = {nid: mod.SecAggPlusState() for nid in nids}
    site_s = dict.fromkeys(nids, 0.0)
    up = dict.fromkeys(nids, 0)
    down = dict.fromkeys(nids, 0)
    server_s = 0.0

    def timed(nid: int, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        site_s[nid] += time.perf_counter() - start
        return out

    setup = {
        Key.SAMPLE_NUMBER: k,
        Key.SHARE_NUMBER: k,
        Key.THRESHOLD: threshold,
        Key.CLIPPING_RANGE: CLIPPING_RANGE,
        Key.TARGET_RANGE: QUANTIZATION_RANGE,
        Key.MOD_RANGE: MODULUS_RANGE,
        Key.MAX_WEIGHT: MAX_WEIGHT,
    }
    keys: dict[int, list[bytes]] = {}
    for nid in nids:  # stage 0: public keys up
        states[nid].nid = nid
        res = timed(nid, mod._setup, states[nid], setup)
        keys[nid] = [res[Key.PUBLIC_KEY_1], res[Key.PUBLIC_KEY_2]]
        up[nid] += sum(map(len, keys[nid]))
    forwarded: dict[int, tuple[list[bytes], list[int]]] = {nid: ([], []) for nid in nids}
    for nid in nids:  # stage 1: everyone's keys down, encrypted shares up
        relay = {str(other): keys[other] for other in nids}
        down[nid] += sum(len(a) + len(b) for a, b in relay.values())
        res = timed(nid, mod._share_keys, states[nid], relay)
        for dst, ct in zip(res[Key.DESTINATION_LIST], res[Key.CIPHERTEXT_LIST], strict=True):
            up[nid] += _ID_BYTES + len(ct)
            forwarded[dst][0].append(ct)
            forwarded[dst][1].append(nid)
    masked_sum: list[np.ndarray] | None = None
    for nid, vector, n in zip(nids, vectors, samples, strict=True):  # stage 2
        cts, srcs = forwarded[nid]
        down[nid] += sum(len(c) + _ID_BYTES for c in cts)
        params = ndarrays_to_parameters([np.asarray(vector, dtype=np.float32)])
        cfg = {Key.CIPHERTEXT_LIST: cts, Key.SOURCE_LIST: srcs}
        res = timed(nid, mod._collect_masked_vectors, states[nid], cfg, int(n), params)
        blobs = res[Key.MASKED_PARAMETERS]
        up[nid] += sum(map(len, blobs))
        start = time.perf_counter()
        arrays = [bytes_to_ndarray(b) for b in blobs]
        masked_sum = arrays if masked_sum is None else parameters_addition(masked_sum, arrays)
        server_s += time.perf_counter() - start
    assert masked_sum is not None
    shares: dict[int, list[bytes]] = {nid: [] for nid in nids}
    for nid in nids:  # stage 3: seed shares of every active neighbour up
        cfg = {Key.ACTIVE_NODE_ID_LIST: nids, Key.DEAD_NODE_ID_LIST: []}
        down[nid] += _ID_BYTES * k
        res = timed(nid, mod._unmask, states[nid], cfg)
        for owner, share in zip(res[Key.NODE_ID_LIST], res[Key.SHARE_LIST], strict=True):
            shares[owner].append(share)
            up[nid] += _ID_BYTES + len(share)
    start = time.perf_counter()
    vec = parameters_mod(masked_sum, MODULUS_RANGE)
    shape = get_parameters_shape(vec)
    for nid in nids:
        seed = combine_shares(shares[nid])
        vec = parameters_subtraction(vec, pseudo_rand_gen(seed, MODULUS_RANGE, shape))
    vec = parameters_mod(vec, MODULUS_RANGE)
    q_total, vec = factor_extract(vec)
    result = dequantize(vec, CLIPPING_RANGE, QUANTIZATION_RANGE)[0]
    result = (result - (k - 1) * CLIPPING_RANGE) * (QUANTIZATION_RANGE / q_total)
    server_s += time.perf_counter() - start
    model_bytes = len(ndarray_to_bytes(result.astype(np.float32)))
    expected = np.average(np.stack(vectors).astype(np.float64), axis=0, weights=samples)
    return {
        "site_s": statistics.median(site_s.values()),
        "upload_bytes": statistics.median(up.values()),
        "download_bytes": statistics.median(down.values()) + model_bytes,
        "server_s": server_s,
        "max_abs_error": float(np.max(np.abs(result - expected))),
    }
