"""Helpers shared by the crypto tests: test vectors, streams and a second parameter set."""

from __future__ import annotations

import numpy as np

from fedsparsify.crypto import CkksPreset, SecretContext, encrypt_update

#: Precision budget documented for ``lean``: max |error| <= 3e-7 * sqrt(clients).
LEAN_BUDGET_PER_SQRT_CLIENT = 3e-7
#: Values in the malformed-stream tests: three frames of 4096 (the last one partly filled).
N_STREAM = 10_000

#: N=2048 [40, 14] 2^32: the other lean candidate, used as "ciphertexts under other parameters".
SMALL = CkksPreset(
    name="small",
    encrypted=True,
    poly_modulus_degree=2048,
    coeff_mod_bit_sizes=(40, 14),
    scale_bits=32,
    seeded=True,
    complex_packing=True,
)


def values(n: int, seed: int = 0, scale: float = 0.05) -> np.ndarray:
    """Kept coordinates of a trained model: N(0, scale), float32."""
    return np.random.default_rng(seed).normal(0.0, scale, n).astype(np.float32)


def stream(
    ctx: SecretContext,
    x: np.ndarray,
    *,
    weight: float = 0.5,
    mask: str = "mask-a",
    contributor: str = "",
) -> bytes:
    """A whole update stream as bytes."""
    return b"".join(
        encrypt_update(ctx, x, weight=weight, mask_digest=mask, contributor=contributor)
    )
