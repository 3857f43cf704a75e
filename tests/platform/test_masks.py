"""Masks: prunable tensors, sparsity, digest, bit-packing and the upload layout."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import torch
from torch import nn

from fedsparsify.errors import MaskError
from fedsparsify.platform.masks import (
    Mask,
    ParameterLayout,
    apply_mask,
    full_mask,
    mask_digest,
    pack_mask,
    prunable_names,
    prunable_shapes,
    sparsity,
    unpack_mask,
)
from fedsparsify.platform.models import build_model
from fedsparsify.platform.spec import ModelSpec

torch.set_num_threads(1)


class _Net(nn.Module):
    """Linear, conv and a normalisation layer with learned affine (which must stay dense)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.norm = nn.BatchNorm2d(3)
        self.fc = nn.Linear(5, 7, bias=False)
        self.out = nn.Linear(7, 2)


def random_mask_for(model: nn.Module, keep: float, seed: int) -> Mask:
    # offset: a mask drawn from the stream that initialised the weights would select their sign
    gen = torch.Generator().manual_seed(10_000 + seed)
    return {n: torch.rand(s, generator=gen) < keep for n, s in prunable_shapes(model).items()}


def test_prunable_names_are_conv_and_linear_weights_only() -> None:
    assert prunable_names(_Net()) == ["conv.weight", "fc.weight", "out.weight"]
    brain = build_model(ModelSpec(kind="brainage", input_shape=(8, 8, 8), width=2), seed=0)
    names = prunable_names(brain)
    assert len(names) == 7
    assert not [n for n in names if "bias" in n]


def test_full_mask_and_sparsity() -> None:
    model = _Net()
    mask = full_mask(model)
    assert sparsity(mask) == 0.0
    assert all(m.all() and m.dtype == torch.bool for m in mask.values())
    mask["fc.weight"][:] = False  # 35 of 27 + 35 + 14 = 76
    mask["out.weight"][0, :3] = False
    assert sparsity(mask) == pytest.approx(38 / 76)


@pytest.mark.parametrize("keep", [0.0, 0.37, 1.0])
def test_pack_unpack_round_trip(keep: float) -> None:
    model = _Net()
    mask = random_mask_for(model, keep, seed=3)
    data = pack_mask(mask)
    # 9-byte header; per tensor: u16 name length, name, u8 ndim, u64 dims, ceil(numel/8) bytes
    sizes = {n: (len(n), m.dim(), (m.numel() + 7) // 8) for n, m in mask.items()}
    assert len(data) == 9 + sum(2 + ln + 1 + 8 * nd + nb for ln, nd, nb in sizes.values())
    assert sizes["conv.weight"][2] == 4  # 27 bits: packed, not one byte per flag
    back = unpack_mask(data, prunable_shapes(model))
    assert list(back) == list(prunable_shapes(model))
    for name in mask:
        assert torch.equal(back[name], mask[name])


def test_unpack_orders_like_the_expected_shapes() -> None:
    mask = random_mask_for(_Net(), 0.5, seed=1)
    shapes = {n: tuple(mask[n].shape) for n in reversed(list(mask))}
    assert list(unpack_mask(pack_mask(mask), shapes)) == list(shapes)


def test_unpack_rejects_mismatches() -> None:
    model = _Net()
    mask = random_mask_for(model, 0.5, seed=2)
    data = pack_mask(mask)
    shapes = prunable_shapes(model)
    with pytest.raises(MaskError, match="shape"):
        unpack_mask(data, {**shapes, "fc.weight": (5, 7)})
    with pytest.raises(MaskError, match="lacks"):
        unpack_mask(data, {**shapes, "extra.weight": (2,)})
    with pytest.raises(MaskError, match="unexpected"):
        unpack_mask(data, {k: v for k, v in shapes.items() if k != "fc.weight"})
    with pytest.raises(MaskError, match="truncated"):
        unpack_mask(data[:-1], shapes)
    with pytest.raises(MaskError, match="trailing"):
        unpack_mask(data + b"\x00", shapes)
    with pytest.raises(MaskError, match="magic"):
        unpack_mask(b"XXXX" + data[4:], shapes)
    # the last tensor (out.weight, 14 bits) ends with 2 padding bits in its last byte
    with pytest.raises(MaskError, match="padding"):
        unpack_mask(data[:-1] + bytes([data[-1] | 0x01]), shapes)


def reference_digest(mask: Mask) -> str:
    """The documented digest format, written out independently."""
    h = hashlib.sha256(b"fedsparsify-mask-v1\x00")
    for name in sorted(mask):
        m = mask[name].numpy()
        raw = name.encode()
        h.update(len(raw).to_bytes(4, "little") + raw)
        h.update(m.ndim.to_bytes(4, "little"))
        for dim in m.shape:
            h.update(int(dim).to_bytes(8, "little"))
        bits = "".join("1" if b else "0" for b in m.reshape(-1))
        bits += "0" * (-len(bits) % 8)
        h.update(bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)))
    return h.hexdigest()


def test_digest_matches_the_documented_format_and_ignores_dict_order() -> None:
    mask = random_mask_for(_Net(), 0.6, seed=5)
    assert mask_digest(mask) == reference_digest(mask)
    assert mask_digest(dict(reversed(list(mask.items())))) == mask_digest(mask)
    flipped = {k: v.clone() for k, v in mask.items()}
    flipped["conv.weight"].view(-1)[4] ^= True
    assert mask_digest(flipped) != mask_digest(mask)


def test_digest_is_frozen() -> None:
    """A fixed value: the digest must be the same on every machine and release."""
    mask = {"b": torch.tensor([[True, False, True]]), "a": torch.tensor([False] * 9 + [True])}
    expected = hashlib.sha256(
        b"fedsparsify-mask-v1\x00"
        + struct.pack("<I", 1)
        + b"a"
        + struct.pack("<IQ", 1, 10)
        + bytes([0b00000000, 0b01000000])
        + struct.pack("<I", 1)
        + b"b"
        + struct.pack("<IQQ", 2, 1, 3)
        + bytes([0b10100000])
    ).hexdigest()
    assert mask_digest(mask) == expected


def test_layout_order_flatten_and_counts() -> None:
    model = _Net()
    mask = random_mask_for(model, 0.5, seed=7)
    layout = ParameterLayout(model, mask)
    params = dict(model.named_parameters())
    assert layout.names == tuple(params)  # state_dict order over trainable parameters only
    expected = torch.cat(
        [p.detach()[mask[n]] if n in mask else p.detach().reshape(-1) for n, p in params.items()]
    ).numpy()
    flat = layout.flatten(model.state_dict())
    assert flat.dtype == np.float32
    np.testing.assert_array_equal(flat, expected)
    assert layout.n_values == expected.size
    assert layout.n_total == sum(p.numel() for p in params.values())
    assert layout.mask_digest == mask_digest(mask)


def test_layout_scatter_round_trip_zeroes_pruned_coordinates() -> None:
    model = _Net()
    mask = random_mask_for(model, 0.4, seed=8)
    layout = ParameterLayout(model, mask)
    values = layout.flatten(model.state_dict())
    target = _Net()
    with torch.no_grad():
        for p in target.parameters():
            p.fill_(5.0)
    layout.scatter(values, target.state_dict())
    for name, p in model.named_parameters():
        got = target.state_dict()[name]
        want = p.detach() * mask[name] if name in mask else p.detach()
        assert torch.equal(got, want)
        if name in mask:
            assert (got[~mask[name]] == 0).all()
    np.testing.assert_array_equal(layout.flatten(target.state_dict()), values)


def test_layout_rejects_bad_input() -> None:
    model = _Net()
    mask = full_mask(model)
    layout = ParameterLayout(model, mask)
    with pytest.raises(MaskError, match="values"):
        layout.scatter(np.zeros(layout.n_values - 1, dtype=np.float32), model.state_dict())
    with pytest.raises(MaskError, match="missing"):
        ParameterLayout(model, {k: v for k, v in mask.items() if k != "fc.weight"})
    with pytest.raises(MaskError, match="shape"):
        ParameterLayout(model, {**mask, "fc.weight": torch.ones(7, 4, dtype=torch.bool)})
    with pytest.raises(MaskError, match="dtype"):
        ParameterLayout(model, {**mask, "fc.weight": torch.ones(7, 5)})


def test_layout_indicator_and_to_mask_are_inverse() -> None:
    model = _Net()
    mask = random_mask_for(model, 0.7, seed=9)
    layout = ParameterLayout(model, mask)
    sub = {n: m & random_mask_for(model, 0.5, seed=10)[n] for n, m in mask.items()}
    ind = layout.indicator(sub)
    n_unmasked = sum(p.numel() for n, p in model.named_parameters() if n not in mask)
    assert ind.sum() == sum(int(m.sum()) for m in sub.values()) + n_unmasked
    back = layout.to_mask(ind > 0.5)
    assert all(torch.equal(back[n], sub[n]) for n in mask)


def test_apply_mask_zeroes_in_place() -> None:
    model = _Net()
    mask = random_mask_for(model, 0.5, seed=11)
    apply_mask(model.state_dict(), mask)
    for name, m in mask.items():
        weight = dict(model.named_parameters())[name]
        assert (weight[~m] == 0).all()
