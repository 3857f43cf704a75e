"""The masking benchmark in CI size: masks cost PRG output, not upload bytes, and the masked sum
decrypts within the result grid."""

from __future__ import annotations

import json
from pathlib import Path

from fedsparsify.bench.masking import KEYS, main, measure_masking
from fedsparsify.platform.round_rules import RESULT_GRID


def test_masks_keep_the_upload_size_and_the_sum(tmp_path: Path) -> None:
    (row,) = measure_masking((3,), workload="vec100k", repeats=1)
    # 5 % of 100k values, kept per layer of the workload (rounded up per layer)
    assert 5_000 <= row["n_kept"] <= 5_500 and row["frames"] == 2
    assert (
        abs(row["upload_bytes_masked"] - row["upload_bytes_plain"])
        < 0.01 * row["upload_bytes_plain"]
    )
    # two peers, two frames of 4096 coefficients, 5 bytes per 40-bit residue (plus rejections)
    assert row["prg_bytes"] >= 2 * 2 * 4096 * 5
    assert 0 < row["sum_max_error"] < RESULT_GRID
    out = tmp_path / "masking.json"
    assert main(["--quick", "--json", str(out)]) == 0
    body = json.loads(out.read_text())
    assert body["provenance"]["command"] and "commit" in body["provenance"]
    assert [r["participants"] for r in body["rows"]] == [4, 16]
    assert set(body["rows"][0]) == set(KEYS)
