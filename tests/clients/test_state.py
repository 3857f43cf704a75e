"""The site's checkpoint: safetensors plus JSON, owner-only, versioned, 0.1 pickles migrated."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import torch

from fedsparsify.clients.checkpoint import (
    CHECKPOINT_FILE,
    LEGACY_CHECKPOINT_FILE,
    decode_checkpoint,
    encode_checkpoint,
)
from fedsparsify.clients.state import StateDir
from fedsparsify.errors import DataError
from fedsparsify.platform.data import make_digits_federation
from fedsparsify.platform.masks import unpack_mask
from fedsparsify.platform.rounds import Site
from fedsparsify.platform.spec import FederationSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "release-0.1"


def _spec() -> FederationSpec:
    return FederationSpec.model_validate(
        {
            "name": "ckpt",
            "rounds": 3,
            "min_clients": 1,
            "quorum": 1,
            "schedule": {"kind": "progressive", "target": 0.5, "fraction": 0.5},
            "model": {"kind": "mlp", "input_shape": [1, 8, 8], "hidden": 16},
        }
    )


def test_a_site_state_round_trips_exactly_owner_only(tmp_path: Path) -> None:
    spec = _spec()
    site = Site(spec, make_digits_federation(1, seed=0).sites[0])
    site.begin_round(0, None)
    state = {"site": site.state_dict(), "uploaded_round": 0, "final": False, "spec": {"a": [1]}}
    folder = StateDir(tmp_path / "state")
    folder.save_checkpoint(state)
    path = tmp_path / "state" / CHECKPOINT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = folder.load_checkpoint()
    assert loaded is not None
    assert loaded["uploaded_round"] == 0 and loaded["final"] is False
    assert loaded["spec"] == {"a": [1]}
    assert loaded["site"]["mask"] == state["site"]["mask"]
    for key, tensor in state["site"]["model"].items():
        assert torch.equal(loaded["site"]["model"][key], tensor)
    restored = Site(spec, site.data)
    restored.load_state_dict(loaded["site"])
    assert restored.plan is not None and restored.plan.mask_digest == site.plan.mask_digest


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:5], "truncated"),
        (lambda b: b"\xff" * 8 + b[8:], "not a safetensors file"),
        (lambda b: b.replace(b'version\\": 2', b'version\\": 9'), "checkpoint version 9"),
        (lambda b: b.replace(b"fedsparsify-checkpoint", b"fedsparsify-xxxxxxxxxx"), "not a fed"),
    ],
)
def test_a_damaged_or_newer_checkpoint_is_refused_clearly(mangle, message: str) -> None:  # type: ignore[no-untyped-def]
    data = encode_checkpoint({"x": torch.arange(4), "n": 1})
    with pytest.raises(DataError, match=message):
        decode_checkpoint(mangle(data))


def test_a_pickled_checkpoint_is_migrated_without_unpickling_code(tmp_path: Path) -> None:
    """Release 0.1 (and the code before this one) wrote ``checkpoint.pt``: read it with torch's
    restricted unpickler and rewrite it as safetensors. (A whole 0.1 directory is refused for
    its missing identity keys, see StateDir; the checkpoint here is 0.1's own file.)"""
    root = tmp_path / "site"
    folder = StateDir(root)
    shutil.copy(FIXTURE / "site" / LEGACY_CHECKPOINT_FILE, root / LEGACY_CHECKPOINT_FILE)
    original = torch.load(root / LEGACY_CHECKPOINT_FILE, weights_only=True)
    migrated = folder.load_checkpoint()
    assert migrated is not None
    assert not (root / LEGACY_CHECKPOINT_FILE).exists()
    assert stat.S_IMODE((root / CHECKPOINT_FILE).stat().st_mode) == 0o600
    again = StateDir(root).load_checkpoint()  # now read from the new file
    assert again is not None
    for state in (migrated, again):
        assert state["uploaded_round"] == original["uploaded_round"]
        assert state["final"] is original["final"]
        assert state["site"]["mask"] == original["site"]["mask"]
        for key, tensor in original["site"]["model"].items():
            assert torch.equal(state["site"]["model"][key], tensor)
    mask = unpack_mask(
        again["site"]["mask"],
        {"net.1.weight": (16, 64), "net.3.weight": (16, 16), "net.5.weight": (10, 16)},
    )
    assert sum(int(m.sum()) for m in mask.values()) < 16 * 64 + 16 * 16 + 10 * 16  # pruned


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(json.loads('"MARKER"')),))


def test_a_legacy_pickle_with_code_is_refused_and_kept(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "site"
    folder = StateDir(root)
    torch.save({"site": {"x": _Payload()}, "uploaded_round": 0}, root / LEGACY_CHECKPOINT_FILE)
    with pytest.raises(DataError, match="not loaded"):
        folder.load_checkpoint()
    assert not (tmp_path / "MARKER").exists()
    assert (root / LEGACY_CHECKPOINT_FILE).exists()
    assert not (root / CHECKPOINT_FILE).exists()
