"""``fedsparsify export``: a finished site's final global model as a model folder.

What the export needs and the state directory alone does not hold, the site records when the
federation completes (:func:`final_summary`, saved in its last checkpoint): rounds and sites of
the federation, its own final validation MAE, the key set's digest, and the age-bias correction
fitted on its own validation set (:mod:`fedsparsify.platform.agebias`). The export then reads
the checkpoint (without writing to the state directory), puts the model's values on the result
grid (:func:`~fedsparsify.platform.modelfile.round_state`) and writes the folder
(:func:`~fedsparsify.platform.modelfile.write_model_dir`). Nothing is sent anywhere.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from fedsparsify import __version__
from fedsparsify.clients.checkpoint import (
    CHECKPOINT_FILE,
    LEGACY_CHECKPOINT_FILE,
    read_checkpoint,
    read_legacy_checkpoint,
)
from fedsparsify.clients.site_log import rounds_taken_part
from fedsparsify.errors import ConfigError, DataError
from fedsparsify.platform.agebias import AgeBias, fit_age_bias
from fedsparsify.platform.masks import kept_count, prunable_shapes, sparsity, unpack_mask
from fedsparsify.platform.modelfile import ROUNDING_GRID, round_state, write_model_dir
from fedsparsify.platform.models import build_model, count_trainable
from fedsparsify.platform.predict import ModelGrid
from fedsparsify.platform.rounds import Site
from fedsparsify.platform.spec import FederationSpec, parse_spec
from fedsparsify.platform.spec_compat import matches_saved_digest
from fedsparsify.platform.training import predict_outputs

__all__ = ["export_model", "final_summary", "render_card"]

PREPROCESSING = (
    "reoriented to RAS+, the brain's bounding box (plus 3 mm) fitted to the grid's shape with "
    "isotropic voxels, z-scored over the volume: as `fedsparsify client --data` reads NIfTI"
)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def final_summary(
    site: Site, fed: dict[str, Any], *, key_set_digest: str, client_id: str
) -> dict[str, Any]:
    """What a site records about the finished federation, for its model card.

    ``site`` holds the final global model. The age-bias line is fitted on the site's own
    validation set (regression models only; None when it has fewer than three subjects).
    """
    summary: dict[str, Any] = {
        "finished_at": _utc(time.time()),
        "federation_id": fed.get("id"),
        "federation_state": fed.get("state"),
        "rounds": len([h for h in fed.get("history", []) if h.get("state") == "closed"]),
        "rounds_taken_part": rounds_taken_part(fed, client_id),
        "final_sparsity": round(sparsity(site.mask), 6),
        "sites": [
            {"name": p.get("name"), "num_samples": p.get("num_samples")}
            for p in fed.get("participants", [])
        ],
        "key_set_digest": key_set_digest,
        "validation": {
            "n": len(site.data.y_val),
            **{k: round(v, 4) for k, v in site.evaluate().items()},
        },
        "age_bias": None,
    }
    if site.data.task == "regression" and len(site.data.y_val) > 0:
        predicted = predict_outputs(site.model, site.data.x_val).reshape(-1).numpy()
        bias = fit_age_bias(predicted, site.data.y_val.numpy())
        summary["age_bias"] = None if bias is None else bias.to_json()
    return summary


def _read_state(state_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The checkpoint and federation id of a state directory, read without writing to it
    (a release-0.1 ``checkpoint.pt`` too: see :mod:`.checkpoint`)."""
    if not state_dir.is_dir():
        raise DataError(f"{state_dir} is not a site's state directory (`client --state`)")
    if (state_dir / CHECKPOINT_FILE).exists():
        checkpoint = read_checkpoint(state_dir / CHECKPOINT_FILE)
    elif (state_dir / LEGACY_CHECKPOINT_FILE).exists():
        checkpoint = read_legacy_checkpoint(state_dir / LEGACY_CHECKPOINT_FILE)
    else:
        raise DataError(f"{state_dir} holds no checkpoint: this site has not trained yet")
    try:
        creds = json.loads((state_dir / "credentials.json").read_text())
        federation_id = str(creds["federation_id"])
    except (OSError, ValueError, KeyError, TypeError):
        federation_id = None
    return checkpoint, federation_id


def _load_finished(
    state_dir: Path, spec_file: Path | None
) -> tuple[dict[str, Any], FederationSpec, str | None]:
    checkpoint, federation_id = _read_state(state_dir)
    site_state = checkpoint.get("site") or {}
    if not checkpoint.get("final") or not site_state.get("finished"):
        raise DataError(
            f"{state_dir}: the federation has not finished at this site (last round "
            f"{site_state.get('round_index')}); export once `fedsparsify client` has printed "
            "its final summary"
        )
    if spec_file is not None:
        try:
            raw: Any = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read --spec {spec_file}: {exc}") from exc
    elif checkpoint.get("spec") is not None:
        raw = checkpoint["spec"]
    else:
        raise DataError(
            f"{state_dir} was written by an older fedsparsify and does not record the spec: "
            "pass the federation's spec with --spec FILE (`fedsparsify federation show ID`)"
        )
    spec = parse_spec(raw, source=str(spec_file) if spec_file else "the saved spec")
    verified = matches_saved_digest(spec, site_state.get("spec_digest"))  # 0.1's digest too
    if not verified and "spec" in checkpoint:
        raise ConfigError(f"the spec does not match the one {state_dir} trained under")
    checkpoint["spec_verified"] = verified
    return checkpoint, spec, federation_id


def export_model(state_dir: Path, out: Path, *, spec_file: Path | None = None) -> dict[str, Any]:
    """Write ``out`` from the finished site in ``state_dir``; return the model card."""
    checkpoint, spec, federation_id = _load_finished(state_dir, spec_file)
    site_state = checkpoint["site"]
    model = build_model(spec.model, seed=spec.seed)
    mask = unpack_mask(site_state["mask"], prunable_shapes(model))
    try:
        model.load_state_dict(site_state["model"])
    except RuntimeError as exc:
        raise DataError(f"{state_dir}: the saved model does not fit the spec: {exc}") from exc
    rounded, worst = round_state(model.state_dict())
    summary: dict[str, Any] = checkpoint.get("summary") or {}
    card: dict[str, Any] = {
        "created_at": _utc(time.time()),
        "fedsparsify_version": __version__,
        "site": site_state.get("name"),
        "federation": {
            "id": federation_id or summary.get("federation_id"),
            "name": spec.name,
            "rounds_planned": spec.rounds,
            "rounds_completed": summary.get("rounds"),
            "rounds_taken_part": summary.get("rounds_taken_part"),
            "sites": summary.get("sites"),
            "finished_at": summary.get("finished_at"),
            "key_set_digest": summary.get("key_set_digest"),
        },
        "spec": spec.model_dump(mode="json"),
        "spec_verified": checkpoint["spec_verified"],
        "parameters": count_trainable(model),
        "prunable_weights": sum(m.numel() for m in mask.values()),
        "kept_weights": kept_count(mask),
        "final_sparsity": round(sparsity(mask), 6),
        "final_validation": summary.get("validation"),
        "age_bias": summary.get("age_bias"),
        "rounding": {
            "grid": ROUNDING_GRID,
            "grid_text": f"2^{math.log2(ROUNDING_GRID):.0f}",
            "mode": "every floating value to the nearest multiple of the grid (ties to even)",
            "max_abs_change": worst,
            "why": "decrypted CKKS values carry noise that must not be published in full",
        },
    }
    if spec.model.kind == "brainage":
        card["input"] = {**ModelGrid.for_shape(spec.model.input_shape).to_json()}
        card["input"]["preprocessing"] = PREPROCESSING
    write_model_dir(out, state=rounded, mask=mask, card=card, markdown=render_card(card))
    return card


def _fmt(value: Any, pattern: str = "{}") -> str:
    return "unknown" if value is None else pattern.format(value)


def _metric(key: str, value: float) -> str:
    return f"{key.upper()} {value:.2f} y" if key in ("mae", "rmse") else f"{key} {value:.3f}"


def render_card(card: dict[str, Any]) -> str:
    """The model card as Markdown (the JSON card holds the same and more)."""
    fed, spec = card["federation"], card["spec"]
    validation = card.get("final_validation") or {}
    bias = card.get("age_bias")
    sites = fed.get("sites") or []
    lines = [
        f"# Model card: {fed['name']} (exported by {card.get('site')})",
        "",
        f"- created: {card['created_at']} with fedsparsify {card['fedsparsify_version']}",
        f"- federation {fed.get('id')}: {_fmt(fed.get('rounds_completed'))} of "
        f"{fed['rounds_planned']} rounds completed, this site took part in "
        f"{_fmt(fed.get('rounds_taken_part'))}; finished {_fmt(fed.get('finished_at'))}",
        f"- sites ({len(sites)}): "
        + (", ".join(f"{s['name']} ({s['num_samples']} samples)" for s in sites) or "unknown"),
        f"- key set digest: `{_fmt(fed.get('key_set_digest'))}`",
        "- spec: "
        + (
            "the one the site trained under"
            if card.get("spec_verified")
            else "given at export (a release-0.1 state records no spec to check it against)"
        ),
        f"- model: {spec['model']['kind']} width {spec['model']['width']}, input "
        f"{spec['model']['input_shape']}, {card['parameters']:,} parameters; "
        f"{card['kept_weights']:,} of {card['prunable_weights']:,} prunable weights kept",
        f"- method {spec['method']}, final sparsity {card['final_sparsity']:.3f}, "
        f"crypto preset {spec['crypto_preset']}",
        f"- final validation on this site's own data (n={_fmt(validation.get('n'))}): "
        + (
            ", ".join(_metric(k, v) for k, v in validation.items() if k not in ("n", "mse"))
            or "unknown"
        ),
        f"- rounding: {card['rounding']['mode']}, grid {card['rounding']['grid_text']}; "
        f"largest change {card['rounding']['max_abs_change']:.2e}",
    ]
    if bias is not None:
        lines.append(
            f"- age-bias correction: predicted = {bias['slope']:.4f} x age + "
            f"{bias['intercept']:.2f}, fitted on n={bias['n']} validation subjects aged "
            f"{bias['age_min']:.0f}-{bias['age_max']:.0f} (r={bias['r']:.2f})"
        )
        weakness = AgeBias.from_json(bias).weakness()
        if weakness is not None:
            lines.append(f"  - caution: {weakness}")
    elif "input" in card:
        lines.append("- age-bias correction: none (too few validation subjects to fit one)")
    if "input" in card:
        grid = card["input"]
        lines.append(
            f"- input: {'x'.join(map(str, grid['shape']))} voxels of {grid['voxel_mm']:.2f} mm, "
            f"{grid['orientation']}; {grid['preprocessing']}"
        )
    lines += [
        "",
        "Files: `model.safetensors` (dense, rounded), `mask.safetensors` (kept weights), "
        "`sparse.safetensors` (bitmask plus kept values), `model-card.json` (this card with "
        "the full spec and each file's SHA-256).",
        "",
    ]
    return "\n".join(lines)
