"""Membership inference against the final brain-age model, and against what the aggregator holds.

Targets: the accuracy benchmark's brain-age federation (same data, seeds, model and training,
:mod:`fedsparsify.bench.accuracy`), trained with dense FedAvg and with FedSparsify-Global at 0.9
and 0.95 through the in-process runner. Members: every site's training subjects; non-members:
the sites' validation subjects and the test set (same sites, never trained on).

Attacks (:mod:`fedsparsify.bench.membership`): the loss threshold, and the loss calibrated by
``--references`` reference federations the attacker trains itself with the same spec (dense
FedAvg, other seeds) on other subjects of the same sites. Reported: ROC AUC and the true-positive
rate at 1 % false positives, mean ± std over seeds.

What a curious aggregator holds: the spec (so the initial model), the public context, and every
upload as stored: lean CKKS, pairwise-masked, made here by the sites' real codec from each site's
last-round update. Views, each attacked on that site's own members against the same site's
non-members (its validation subjects and its share of the test set), averaged over sites:

- ``aggregator, no key``: the only model it can compute, the initial model from the spec
  (the ciphertexts are uniformly random residues to it).
- ``aggregator + key, masked upload``: a stored upload decrypted with the CKKS key (an aggregator
  colluding with a site): with pairwise masks it decrypts to noise.
- ``aggregator + key, masks off``: the same upload made without pairwise masks, for reference:
  the site's own trained model, what the masks withhold.

With the key, the stored running sum decrypts to the round's average: the final model of the
target rows. A sum is what no mask hides from a party that holds the key.

    .venv/bin/fedsparsify bench privacy            # committed results (benchmarks/results)
    .venv/bin/fedsparsify bench privacy --quick    # CI smoke run (tiny federation, < 1 min)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsparsify.bench.accuracy import CACHE, RESULTS, SEEDS, brainage_setup, load_data, make_spec
from fedsparsify.bench.membership import (
    attack_metrics,
    calibrated_scores,
    loss_scores,
    squared_errors,
)
from fedsparsify.bench.provenance import provenance
from fedsparsify.clients.codec import UpdateCodec
from fedsparsify.crypto import (
    PairwiseMasker,
    RoundBinding,
    SecretContext,
    SiteIdentity,
    create_secret_context,
    participants_digest,
)
from fedsparsify.platform.data import COARSE_SHAPE, FederatedData, make_brainage_federation
from fedsparsify.platform.models import build_model
from fedsparsify.platform.round_rules import VALUES, round_weights
from fedsparsify.platform.rounds import Site
from fedsparsify.platform.runner import InProcessFederation
from fedsparsify.platform.spec import FederationSpec

__all__ = ["TARGETS", "main", "run_seed", "summarise"]

logger = logging.getLogger(__name__)

#: (label, accuracy-benchmark method, target sparsity) of each attacked model.
TARGETS = (
    ("fedavg", "fedavg", 0.0),
    ("fedsparsify-0.9", "fedsparsify-global", 0.9),
    ("fedsparsify-0.95", "fedsparsify-global", 0.95),
)
VIEWS = ("aggregator, no key", "aggregator + key, masked upload", "aggregator + key, masks off")
ATTACKS = ("loss", "calibrated")
#: The reference federations' subjects start here (far from the sites' own and the test set).
REFERENCE_OFFSET = 100_000


def _candidates(data: FederatedData) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    xs = [s.x_train for s in data.sites] + [s.x_val for s in data.sites] + [data.x_test]
    ys = [s.y_train for s in data.sites] + [s.y_val for s in data.sites] + [data.y_test]
    n_members = sum(len(s.y_train) for s in data.sites)
    is_member = np.zeros(sum(len(y) for y in ys), dtype=bool)
    is_member[:n_members] = True
    return torch.cat(xs), torch.cat(ys), is_member


def _site_index(data: FederatedData) -> np.ndarray:
    """Which site each candidate comes from (the test set is in blocks, one per site)."""
    k = len(data.sites)
    train = [np.full(len(s.y_train), i) for i, s in enumerate(data.sites)]
    val = [np.full(len(s.y_val), i) for i, s in enumerate(data.sites)]
    n_test = len(data.y_test)
    test = [np.full(n_test // k + (1 if i < n_test % k else 0), i) for i in range(k)]
    return np.concatenate(train + val + test)


def _attacks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    is_member: np.ndarray,
    refs: Sequence[np.ndarray],
    select: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    losses = squared_errors(model, x, y)
    keep = np.ones(len(losses), dtype=bool) if select is None else select
    return {
        "loss": attack_metrics(loss_scores(losses)[keep], is_member[keep]),
        "calibrated": attack_metrics(calibrated_scores(losses, list(refs))[keep], is_member[keep]),
    }


def _mean_over_sites(per_site: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        a: {m: statistics.fmean(s[a][m] for s in per_site) for m in per_site[0][a]} for a in ATTACKS
    }


def _uploads(
    spec: FederationSpec, sites: list[Site], scratch: Path
) -> tuple[SecretContext, dict[str, list[Path]]]:
    """Each site's last-round upload as the aggregator stores it, masked and (reference) not,
    made by the sites' codec with a fresh CKKS key set and fresh site identities."""
    ctx = create_secret_context("lean")
    ids = [f"site-{k}" for k in range(len(sites))]
    identities = {i: SiteIdentity.generate() for i in ids}
    keys = {i: identities[i].public().mask_key for i in ids}
    binding = RoundBinding("privacy-audit", spec.rounds - 1, 0, participants_digest(keys))
    updates = [site.train() for site in sites]  # the last round's update, retrained exactly
    weights = round_weights(
        {i: u.num_samples for i, u in zip(ids, updates, strict=True)},
        weighting=spec.weighting,
        max_weight_share=spec.max_weight_share,
    )
    out: dict[str, list[Path]] = {"masked": [], "unmasked": []}
    for k, (cid, update) in enumerate(zip(ids, updates, strict=True)):
        masker = PairwiseMasker(
            own_id=cid,
            own_mask_private=identities[cid].mask_private,
            mask_keys=keys,
            binding=binding,
            channel=VALUES,
        )
        for kind, maskers in (("masked", {VALUES: masker}), ("unmasked", None)):
            folder = scratch / f"{kind}-{k}"
            folder.mkdir(parents=True)
            files, _ = UpdateCodec(ctx, contributor=cid).encode(
                update,
                weights={VALUES: weights[cid]},
                binding=binding,
                maskers=maskers,
                scratch=folder,
            )
            out[kind].append(files[VALUES])
    return ctx, out


def _model_from_upload(site: Site, codec: UpdateCodec, path: Path) -> nn.Module:
    """The model a key holder builds from one stored upload (weights written at the mask)."""
    decoded, _ = codec.decode({VALUES: path})
    model = build_model(site.spec.model, seed=site.spec.seed)
    plan = site.plan
    assert plan is not None
    with torch.no_grad():
        plan.layout.scatter(decoded.mean, model.state_dict())
    return model


def _stored(runs_dir: Path | None, kind: str, *parts: Any) -> Path | None:
    if runs_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return runs_dir / f"{kind}-{digest[:24]}"


def _train_references(
    setup: Any, seed: int, count: int, cache_dir: Path, runs_dir: Path | None
) -> list[nn.Module]:
    models = []
    for r in range(count):
        spec = make_spec(setup, "fedavg", 0.0, seed=seed).model_copy(
            update={"seed": 7919 * (r + 1) + seed, "name": f"privacy-reference-{r}"}
        )
        stored = _stored(runs_dir, "reference", setup.describe(), seed, r)
        if stored is not None and stored.with_suffix(".pt").is_file():
            model = build_model(spec.model, seed=spec.seed)
            model.load_state_dict(torch.load(stored.with_suffix(".pt"), weights_only=True))
            models.append(model)
            continue
        data = make_brainage_federation(
            shape=COARSE_SHAPE,
            iid=False,
            seed=seed,
            cache_dir=cache_dir,
            subject_offset=REFERENCE_OFFSET * (r + 1),
            **setup.data,
        )
        fed = InProcessFederation(spec, data)
        fed.run()
        models.append(fed.global_model)
        logger.info("reference %d of seed %d: test MAE %.2f", r, seed, fed.rows[-1]["mae"])
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            torch.save(fed.global_model.state_dict(), stored.with_suffix(".tmp"))
            stored.with_suffix(".tmp").replace(stored.with_suffix(".pt"))
    return models


def run_seed(
    quick: bool,
    seed: int,
    references: int,
    cache_dir: Path,
    runs_dir: Path | None = None,
    commit: str | None = None,
) -> dict[str, Any]:
    """Every target and view of one seed: attack metrics, test and train MAE. With
    ``runs_dir`` (``--resume``), finished reference models and targets are stored there and
    reused; each stored target names ``commit``, the commit whose code ran it."""
    setup = brainage_setup(quick)
    data = load_data(setup, seed=seed, cache_dir=cache_dir)
    x, y, is_member = _candidates(data)
    site_of = _site_index(data)
    ref_models = _train_references(setup, seed, references, cache_dir, runs_dir)
    ref_losses = [squared_errors(m, x, y) for m in ref_models]
    result: dict[str, Any] = {"seed": seed, "targets": {}, "views": {}, "commits": []}
    for label, method, target in TARGETS:
        stored = _stored(runs_dir, "target", setup.describe(), seed, label, references)
        if stored is not None and stored.with_suffix(".json").is_file():
            saved = json.loads(stored.with_suffix(".json").read_text())
            result["targets"][label], result["views"][label] = saved["target"], saved["views"]
            result["commits"].append(saved["commit"])
            logger.info("seed %d %s: stored run of commit %s", seed, label, saved["commit"])
            continue
        spec = make_spec(setup, method, target, seed=seed)
        started = time.perf_counter()
        fed = InProcessFederation(spec, data)
        fed.run()
        model = fed.global_model
        losses = squared_errors(model, x, y)
        mae = np.sqrt(losses)
        entry = {
            **_attacks(model, x, y, is_member, ref_losses),
            "test_mae": float(fed.rows[-1]["mae"]),
            "member_mae": float(mae[is_member].mean()),
            "nonmember_mae": float(mae[~is_member].mean()),
            "sparsity": float(fed.rows[-1]["sparsity"]),
            "seconds": round(time.perf_counter() - started, 1),
        }
        result["targets"][label] = entry
        logger.info("seed %d %s: %s", seed, label, entry)
        views: dict[str, list[dict[str, dict[str, float]]]] = {v: [] for v in VIEWS}
        initial = build_model(spec.model, seed=spec.seed)
        with tempfile.TemporaryDirectory(prefix="fedsparsify-privacy-") as tmp:
            ctx, blobs = _uploads(spec, fed.sites, Path(tmp))
            codec = UpdateCodec(ctx, contributor="site-0")
            for k, site in enumerate(fed.sites):
                own = site_of == k
                views["aggregator, no key"].append(
                    _attacks(initial, x, y, is_member, ref_losses, own)
                )
                for view, kind in (
                    ("aggregator + key, masked upload", "masked"),
                    ("aggregator + key, masks off", "unmasked"),
                ):
                    seen = _model_from_upload(site, codec, blobs[kind][k])
                    views[view].append(_attacks(seen, x, y, is_member, ref_losses, own))
        result["views"][label] = {v: _mean_over_sites(per) for v, per in views.items()}
        logger.info("seed %d %s views: %s", seed, label, result["views"][label])
        result["commits"].append(commit)
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            saved = {"target": entry, "views": result["views"][label], "commit": commit}
            stored.with_suffix(".tmp").write_text(json.dumps(saved))
            stored.with_suffix(".tmp").replace(stored.with_suffix(".json"))
    return result


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def summarise(per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (target, view, attack) with mean and std over seeds of AUC and TPR at 1 % FPR."""
    rows = []
    for label, _, _ in TARGETS:
        for view in ("final model", *VIEWS):
            for attack in ATTACKS:
                cells = [
                    s["targets"][label][attack]
                    if view == "final model"
                    else s["views"][label][view][attack]
                    for s in per_seed
                ]
                row: dict[str, Any] = {"target": label, "view": view, "attack": attack}
                for metric in ("auc", "tpr_at_1pct_fpr"):
                    row[metric] = _spread([c[metric] for c in cells])
                if view == "final model":
                    for key in ("test_mae", "member_mae", "nonmember_mae"):
                        row[key] = _spread([s["targets"][label][key] for s in per_seed])
                rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per (target, view), both attacks' AUC and TPR at 1 % FPR."""
    lines = [
        "| model | what the attacker holds | loss AUC | loss TPR@1%FPR | calibrated AUC "
        "| calibrated TPR@1%FPR |",
        "|---|---|---|---|---|---|",
    ]
    for label, _, _ in TARGETS:
        for view in ("final model", *VIEWS):
            got = {r["attack"]: r for r in rows if r["target"] == label and r["view"] == view}
            cells = []
            for attack in ATTACKS:
                for metric in ("auc", "tpr_at_1pct_fpr"):
                    s = got[attack][metric]
                    cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}")
            lines.append(f"| {label} | {view} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fedsparsify bench privacy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny federation, 2 seeds (CI)")
    parser.add_argument("--out", type=Path, default=None, help="folder for privacy.json")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2")
    parser.add_argument("--references", type=int, default=None, help="reference federations")
    parser.add_argument("--cache-dir", type=Path, default=CACHE / "brainage")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="store finished reference models and targets under benchmarks/.cache/privacy-runs "
        "and reuse them (a long run can stop and go on; the JSON lists every run's commit)",
    )
    args = parser.parse_args(argv)
    if args.references is not None and args.references < 1:
        parser.error("--references must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    out: Path = args.out or (CACHE / "privacy-quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds or ([0, 1] if args.quick else list(SEEDS))
    references = args.references or (1 if args.quick else 2)
    given = sys.argv[1:] if argv is None else argv
    record = provenance(["fedsparsify", "bench", "privacy", *given])
    record["threads"] = args.threads
    started = time.perf_counter()
    runs_dir = CACHE / "privacy-runs" if args.resume else None
    per_seed = [
        run_seed(args.quick, s, references, args.cache_dir, runs_dir, record["commit"])
        for s in seeds
    ]
    rows = summarise(per_seed)
    table = format_table(rows)
    report = {
        "benchmark": "privacy",
        **record,
        "quick": args.quick,
        "seeds": seeds,
        "references": references,
        "run_commits": sorted({str(c) for s in per_seed for c in s["commits"]}),
        "setup": brainage_setup(args.quick).describe(),
        "summary": rows,
        "per_seed": per_seed,
        "table": table,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "privacy.json").write_text(json.dumps(report, indent=1) + "\n")
    print(table)
    print(f"\nwrote {out / 'privacy.json'} in {report['seconds']} s")
    return 0
