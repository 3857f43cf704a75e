"""CKKS parameter presets and their 128-bit security check.

A preset fixes everything both sides of the wire must agree on: the ring degree N, the chain of
coefficient-modulus primes, the encoding scale, and how a client packs and encrypts (seeded
secret-key encryption, two reals per complex slot). Three presets ship:

``lean`` (the default), N=4096, primes [40, 20], scale 2^32, seeded, complex packing
    Chosen by measurement against N=2048 [40, 14] 2^32 (``benchmarks/crypto_costs.py`` and the
    module docstring of :mod:`fedsparsify.crypto`): both cost the same bytes (5.02 per kept value
    bit-packed, seeded + complex; the ciphertext modulus, one 40-bit prime, sets the size, not N)
    and the same
    time within noise, but [40, 20] uses 60 of the 109 bits allowed at N=4096 while [40, 14] uses
    all 54 bits allowed at N=2048, so N=4096 buys a wide security margin for free.
    Value range: ``max_abs_value`` = 32. Precision budget: max absolute error <= 3e-7·sqrt(K)
    on a sum of K updates, so <= 1e-6 for 10 clients (measured 5.6e-7 over 1M values); the
    error is independent of the values' size.
``peer-default``, N=8192, primes [60, 40, 40], scale 2^40, public-key encryption, real packing
    What NVIDIA FLARE configures in TenSEAL; the dense baseline (57.6 bytes per value).
``plaintext``, not encrypted
    Frames are raw little-endian float32 chunks summed in the clear: the dense floor, kept as a
    preset so that the aggregator and the client have one code path.

Why ``max_abs_value`` is safe: a CKKS plaintext polynomial's coefficients are bounded by the
largest slot magnitude times the scale (inverse canonical embedding, triangle inequality), and a
complex slot (a + bi) has magnitude at most sqrt(2)·max(|a|, |b|). Decryption is correct while
every coefficient stays below q/2, with q the ciphertext modulus (every prime but the last, the
special prime). We keep one more bit of margin and round down to a power of two:
``max_abs_value = 2^floor(log2(2^(q_bits - scale_bits - 2) / packing))``. Because a weighted sum
with weights summing to at most 1 has coefficients bounded by the largest input coefficient, a
sum of any number of such updates stays in range: this is the guarantee the aggregator relies on
when it refuses a total weight above 1.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from fedsparsify.errors import ConfigError, CryptoError, InsecureParametersError

__all__ = [
    "DEFAULT_PRESET",
    "MAX_COEFF_BITS_128",
    "PLAINTEXT_VALUES_PER_FRAME",
    "PRESETS",
    "CkksPreset",
    "check_security",
    "get_preset",
]

logger = logging.getLogger(__name__)

#: Largest total coefficient-modulus bit count that keeps 128-bit security for each ring degree
#: (HomomorphicEncryption.org standard, ternary secret; SEAL's ``CoeffModulus::MaxBitCount``).
MAX_COEFF_BITS_128: Mapping[int, int] = MappingProxyType(
    {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
)
#: Values per frame of the ``plaintext`` preset (64 KiB of float32).
PLAINTEXT_VALUES_PER_FRAME = 16384
#: Below this scale, CKKS rounding alone costs more than 1e-6 per value: refused as unusable.
MIN_SCALE_BITS = 24
#: SEAL's bound on one prime's size.
MAX_PRIME_BITS = 60
DEFAULT_PRESET = "lean"


@dataclass(frozen=True)
class CkksPreset:
    """One CKKS parameter set plus how clients pack and encrypt under it.

    ``seeded``: clients encrypt with the secret key and send only the PRNG seed of the second
    polynomial (half the bytes). ``complex_packing``: two reals per complex slot (half again).
    """

    name: str
    encrypted: bool
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    seeded: bool
    complex_packing: bool

    @property
    def slot_count(self) -> int:
        """Complex slots per ciphertext (N/2); 0 for the plaintext preset."""
        return self.poly_modulus_degree // 2 if self.encrypted else 0

    @property
    def values_per_ciphertext(self) -> int:
        """Real values carried by one ciphertext (or one plaintext frame)."""
        if not self.encrypted:
            return PLAINTEXT_VALUES_PER_FRAME
        return self.slot_count * (2 if self.complex_packing else 1)

    @property
    def ciphertext_modulus_bits(self) -> int:
        """Bits of the modulus ciphertexts live under: every prime but the special (last) one."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def scale(self) -> float:
        """The encoding scale, 2^scale_bits."""
        return float(2**self.scale_bits)

    @property
    def max_abs_value(self) -> float:
        """Largest |x| a client may encrypt so that any sum with total weight <= 1 stays in range.

        See the module docstring for the derivation. For ``plaintext``: the float32 maximum.
        """
        if not self.encrypted:
            return 3.4028234663852886e38
        headroom = self.ciphertext_modulus_bits - self.scale_bits - 2
        bound = 2.0**headroom / (math.sqrt(2.0) if self.complex_packing else 1.0)
        if bound < 1.0:
            return 0.0
        return float(2.0 ** math.floor(math.log2(bound)))

    def to_json(self) -> bytes:
        """Canonical JSON, used inside context descriptors (so it is covered by the digest)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CkksPreset:
        """Inverse of :meth:`to_json`; :class:`CryptoError` for anything else."""
        try:
            raw: Any = json.loads(data.decode("utf-8"))
            if not isinstance(raw, dict) or set(raw) != set(cls.__dataclass_fields__):
                raise ValueError("wrong fields")
            bits = raw["coeff_mod_bit_sizes"]
            if not isinstance(bits, list) or not all(_is_int(b) for b in bits):
                raise ValueError("coeff_mod_bit_sizes must be a list of integers")
            for key in ("name",):
                if not isinstance(raw[key], str):
                    raise ValueError(f"{key} must be a string")
            for key in ("encrypted", "seeded", "complex_packing"):
                if not isinstance(raw[key], bool):
                    raise ValueError(f"{key} must be a boolean")
            for key in ("poly_modulus_degree", "scale_bits"):
                if not _is_int(raw[key]):
                    raise ValueError(f"{key} must be an integer")
        except (UnicodeDecodeError, ValueError) as exc:
            raise CryptoError(f"unreadable CKKS preset descriptor: {exc}") from exc
        return cls(
            name=raw["name"],
            encrypted=raw["encrypted"],
            poly_modulus_degree=raw["poly_modulus_degree"],
            coeff_mod_bit_sizes=tuple(bits),
            scale_bits=raw["scale_bits"],
            seeded=raw["seeded"],
            complex_packing=raw["complex_packing"],
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


PRESETS: Mapping[str, CkksPreset] = MappingProxyType(
    {
        "lean": CkksPreset(
            name="lean",
            encrypted=True,
            poly_modulus_degree=4096,
            coeff_mod_bit_sizes=(40, 20),
            scale_bits=32,
            seeded=True,
            complex_packing=True,
        ),
        "peer-default": CkksPreset(
            name="peer-default",
            encrypted=True,
            poly_modulus_degree=8192,
            coeff_mod_bit_sizes=(60, 40, 40),
            scale_bits=40,
            seeded=False,
            complex_packing=False,
        ),
        "plaintext": CkksPreset(
            name="plaintext",
            encrypted=False,
            poly_modulus_degree=0,
            coeff_mod_bit_sizes=(),
            scale_bits=0,
            seeded=False,
            complex_packing=False,
        ),
    }
)


def get_preset(name: str) -> CkksPreset:
    """The preset called ``name``; :class:`ConfigError` naming the valid choices otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        choices = ", ".join(sorted(PRESETS))
        raise ConfigError(f"unknown crypto preset {name!r}; choose one of: {choices}") from None


def check_security(preset: CkksPreset) -> None:
    """Refuse parameters below 128-bit security or unusable for an add-only federation.

    Raises :class:`InsecureParametersError` saying why. The ``plaintext`` preset is exempt: it is
    explicitly not encrypted.
    """
    if not preset.encrypted:
        return
    n = preset.poly_modulus_degree
    bits = preset.coeff_mod_bit_sizes
    name = preset.name
    if n < 2048:
        raise InsecureParametersError(
            f"preset {name!r}: N={n} < 2048 cannot hold 128-bit security with two primes "
            "(TenSEAL needs a special prime besides the data prime)"
        )
    if n not in MAX_COEFF_BITS_128:
        raise InsecureParametersError(
            f"preset {name!r}: N={n} must be a power of two between 2048 and 32768"
        )
    if len(bits) < 2:
        raise InsecureParametersError(
            f"preset {name!r}: a one-prime chain {list(bits)} is unusable; TenSEAL needs a data "
            "prime and a special prime"
        )
    if any(b < 10 or b > MAX_PRIME_BITS for b in bits):
        raise InsecureParametersError(
            f"preset {name!r}: every prime must have 10..{MAX_PRIME_BITS} bits, got {list(bits)}"
        )
    total, allowed = sum(bits), MAX_COEFF_BITS_128[n]
    if total > allowed:
        raise InsecureParametersError(
            f"preset {name!r}: total coefficient modulus {total} bits > {allowed} allowed at "
            f"N={n} for 128-bit security"
        )
    if preset.scale_bits < MIN_SCALE_BITS:
        raise InsecureParametersError(
            f"preset {name!r}: scale 2^{preset.scale_bits} < 2^{MIN_SCALE_BITS} is too coarse "
            "(rounding error above 1e-6 per value)"
        )
    if preset.scale_bits >= bits[0]:
        raise InsecureParametersError(
            f"preset {name!r}: scale 2^{preset.scale_bits} does not fit under the {bits[0]}-bit "
            "data prime"
        )
    if preset.max_abs_value < 1.0:
        raise InsecureParametersError(
            f"preset {name!r}: the ciphertext modulus ({preset.ciphertext_modulus_bits} bits) "
            f"leaves no room above scale 2^{preset.scale_bits} for values of magnitude 1"
        )
