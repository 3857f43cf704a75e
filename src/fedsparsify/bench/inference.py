"""Inference efficiency of the pruned BrainAge model: stored size and CPU latency.

Pruning is global magnitude pruning of the model's conv weights (biases are never pruned), the
zeros written into the weights, as the final model of a FedSparsify run would hold. Sizes are
real ``torch.save`` byte counts of: the dense ``state_dict``; a bitmask + values format (per
pruned tensor a ``np.packbits`` bitmask and the kept float32 values, other tensors dense); the
same after zlib (level 6); PyTorch COO tensors (``to_sparse()``: int64 indices per non-zero);
and PyTorch CSR (each conv weight viewed as ``(out_channels, in*k*k*k)``, int64 indices).

Latency: the median (and minimum) of ``repeats`` forward passes (after one warm-up) at batch 1
on CPU with ``threads`` torch threads, for the dense model and the pruned models (dense kernels,
zeroed weights), interleaved. PyTorch has no sparse Conv3d kernel on CPU, so unstructured
sparsity cannot speed up the convolutions; what the zeros could save is measured on the one
sparse path PyTorch has, a CSR matrix product, for the 1x1x1 head convolution viewed as a
matrix (``head_matmul_*``).
"""

from __future__ import annotations

import io
import statistics
import time
import warnings
import zlib
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsparsify.bench.workloads import brainage_spec
from fedsparsify.platform.masks import apply_mask, full_mask
from fedsparsify.platform.models import build_model, model_input_shape
from fedsparsify.platform.pruning import global_magnitude_mask

__all__ = ["measure_inference"]


def _saved_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _bitmask_format(state: dict[str, torch.Tensor], pruned: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, tensor in state.items():
        flat = tensor.detach().reshape(-1).numpy()
        if name in pruned:
            keep = flat != 0
            out[name] = {
                "shape": tuple(tensor.shape),
                "bits": torch.from_numpy(np.packbits(keep)),
                "values": torch.from_numpy(flat[keep].astype(np.float32)),
            }
        else:
            out[name] = tensor
    return out


def _csr_format(state: dict[str, torch.Tensor], pruned: set[str]) -> dict[str, torch.Tensor]:
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    return {
        n: t.reshape(t.shape[0], -1).to_sparse_csr() if n in pruned else t for n, t in state.items()
    }


def _coo_format(state: dict[str, torch.Tensor], pruned: set[str]) -> dict[str, torch.Tensor]:
    return {n: t.to_sparse() if n in pruned else t for n, t in state.items()}


def _sizes(model: nn.Module, pruned: set[str]) -> dict[str, int]:
    state = {n: t.detach().clone() for n, t in model.state_dict().items()}
    bitmask = _saved_bytes(_bitmask_format(state, pruned))
    return {
        "dense_bytes": len(_saved_bytes(state)),
        "bitmask_values_bytes": len(bitmask),
        "bitmask_values_zlib_bytes": len(zlib.compress(bitmask, 6)),
        "torch_coo_bytes": len(_saved_bytes(_coo_format(state, pruned))),
        "torch_csr_bytes": len(_saved_bytes(_csr_format(state, pruned))),
    }


def _latencies(models: list[nn.Module], x: torch.Tensor, repeats: int) -> list[list[float]]:
    """Forward-pass seconds per model, the models interleaved in each repeat so that load
    from other processes on a shared machine hits them alike; one warm-up pass each first."""
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            model.eval()
            model(x)
        for _ in range(repeats):
            for model, out in zip(models, times, strict=True):
                started = time.perf_counter()
                model(x)
                out.append(time.perf_counter() - started)
    return times


def _head_matmul(model: nn.Module, repeats: int) -> dict[str, float]:
    """Dense vs CSR product with the head's 1x1x1 conv weight (pruned), on 1024 voxels."""
    weight = model.state_dict()["head.0.weight"]
    matrix = weight.reshape(weight.shape[0], -1)
    rhs = torch.randn(matrix.shape[1], 1024)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    csr = matrix.to_sparse_csr()
    out = {}
    for label, lhs in (("dense", matrix), ("csr", csr)):
        times = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            for _ in range(20):
                lhs @ rhs
            times.append((time.perf_counter() - started) / 20)
        out[f"head_matmul_{label}_s"] = statistics.median(times[1:])
    return out


def measure_inference(
    model_name: str = "brainage",
    *,
    sparsities: tuple[float, ...] = (0.9, 0.95),
    repeats: int = 3,
    threads: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Sizes and CPU latency of the dense and pruned models; a dict for the JSON report."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        spec = brainage_spec(model_name)
        model = build_model(spec, seed=seed)
        x = torch.randn(1, *model_input_shape(spec), generator=torch.Generator().manual_seed(seed))
        mask = full_mask(model)
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        models, rows = (
            [model],
            [
                {
                    "sparsity": 0.0,
                    "n_params": n_params,
                    "n_nonzero": n_params,
                    **_sizes(model, set()),
                }
            ],
        )
        for target in sparsities:
            pruned_model = build_model(spec, seed=seed)
            pruned_mask = global_magnitude_mask(pruned_model.state_dict(), mask, target)
            apply_mask(pruned_model.state_dict(), pruned_mask)
            nonzero = sum(int(torch.count_nonzero(p)) for p in pruned_model.parameters())
            models.append(pruned_model)
            rows.append(
                {
                    "sparsity": target,
                    "n_params": n_params,
                    "n_nonzero": nonzero,
                    **_sizes(pruned_model, set(pruned_mask)),
                    **_head_matmul(pruned_model, repeats),
                }
            )
        for row, times in zip(rows, _latencies(models, x, repeats), strict=True):
            row["latency_s"] = statistics.median(times)
            row["latency_min_s"] = min(times)
        return {
            "model": model_name,
            "input_shape": list(model_input_shape(spec)),
            "batch": 1,
            "threads": threads,
            "repeats": repeats,
            "rows": rows,
        }
    finally:
        torch.set_num_threads(previous)
