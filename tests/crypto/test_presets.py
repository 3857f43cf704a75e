"""Presets: the shipped values, the 128-bit check, the value range and the layout."""

from __future__ import annotations

import dataclasses
import math

import pytest

from fedsparsify.crypto import (
    PRESETS,
    CkksPreset,
    check_security,
    create_secret_context,
    get_preset,
    layout_for,
)
from fedsparsify.errors import ConfigError, InsecureParametersError

LEAN = PRESETS["lean"]


def test_shipped_presets() -> None:
    assert set(PRESETS) == {"lean", "peer-default", "plaintext"}
    assert (LEAN.poly_modulus_degree, LEAN.coeff_mod_bit_sizes, LEAN.scale_bits) == (
        4096,
        (40, 20),
        32,
    )
    assert LEAN.encrypted and LEAN.seeded and LEAN.complex_packing
    assert LEAN.values_per_ciphertext == 4096  # 2048 complex slots, two reals each
    peer = PRESETS["peer-default"]
    assert (peer.poly_modulus_degree, peer.coeff_mod_bit_sizes, peer.scale_bits) == (
        8192,
        (60, 40, 40),
        40,
    )
    assert peer.encrypted and not peer.seeded and not peer.complex_packing
    assert peer.values_per_ciphertext == 4096
    assert not PRESETS["plaintext"].encrypted


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shipped_presets_pass_the_check(name: str) -> None:
    check_security(get_preset(name))


def test_get_preset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="lean, peer-default, plaintext"):
        get_preset("fast")


def test_max_abs_value_follows_the_derivation() -> None:
    # 40-bit ciphertext modulus, scale 2^32, one bit of margin: 2^6 / sqrt(2) = 45.25 -> 32
    assert LEAN.max_abs_value == 32.0
    assert dataclasses.replace(LEAN, complex_packing=False).max_abs_value == 64.0
    assert PRESETS["peer-default"].max_abs_value == 2.0**58
    bound = LEAN.max_abs_value * math.sqrt(2) * LEAN.scale  # largest coefficient magnitude
    assert bound < 2.0 ** (LEAN.ciphertext_modulus_bits - 2)  # a factor 2 below q/2


WEAK = [
    ("N=1024", dict(poly_modulus_degree=1024, coeff_mod_bit_sizes=(20, 7)), "N=1024 < 2048"),
    ("N not a power of 2", dict(poly_modulus_degree=3000), "power of two"),
    ("one prime", dict(coeff_mod_bit_sizes=(40,)), "one-prime chain"),
    (
        "too many bits at 2048",
        dict(poly_modulus_degree=2048, coeff_mod_bit_sizes=(40, 20)),
        "60 bits > 54 allowed at N=2048",
    ),
    (
        "too many bits at 4096",
        dict(coeff_mod_bit_sizes=(60, 40, 20)),
        "120 bits > 109 allowed at N=4096",
    ),
    ("prime over 60 bits", dict(coeff_mod_bit_sizes=(61, 20)), "10..60 bits"),
    ("scale above the data prime", dict(scale_bits=40), "does not fit under the 40-bit"),
    ("scale too coarse", dict(scale_bits=16), "too coarse"),
    ("no headroom", dict(coeff_mod_bit_sizes=(34, 20)), "leaves no room"),
]


@pytest.mark.parametrize(("case", "changes", "reason"), WEAK, ids=[w[0] for w in WEAK])
def test_weak_parameters_are_refused_with_a_reason(
    case: str, changes: dict[str, object], reason: str
) -> None:
    weak = dataclasses.replace(LEAN, name=case, **changes)  # type: ignore[arg-type]
    with pytest.raises(InsecureParametersError, match=reason):
        check_security(weak)
    with pytest.raises(InsecureParametersError):
        create_secret_context(weak)


def test_the_other_lean_candidate_is_accepted() -> None:
    check_security(CkksPreset("small", True, 2048, (40, 14), 32, seeded=True, complex_packing=True))


def test_plaintext_is_exempt() -> None:
    check_security(dataclasses.replace(PRESETS["plaintext"], coeff_mod_bit_sizes=(1,)))


@pytest.mark.parametrize(
    ("preset", "n", "expected"),
    [
        ("lean", 0, (4096, 0)),
        ("lean", 1, (4096, 1)),
        ("lean", 4096, (4096, 1)),
        ("lean", 4097, (4096, 2)),
        ("peer-default", 1_000_000, (4096, 245)),
        ("plaintext", 1_000_000, (16384, 62)),
    ],
)
def test_layout_for(preset: str, n: int, expected: tuple[int, int]) -> None:
    assert layout_for(preset, n) == expected
    assert layout_for(get_preset(preset), n) == expected


def test_layout_for_refuses_negative_counts() -> None:
    with pytest.raises(ConfigError):
        layout_for("lean", -1)


def test_preset_json_round_trips() -> None:
    for preset in PRESETS.values():
        assert CkksPreset.from_json(preset.to_json()) == preset
