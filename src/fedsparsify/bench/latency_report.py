"""The latency benchmark's report: ratios and targets, JSON, a Markdown table and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["markdown", "ratios", "write_report"]

#: Client round time targets at 0.95 against ckks-peer-dense, by model (others: the default).
TIME_TARGETS = {"brainage": 60.0, "vec1m": 50.0}
DEFAULT_TIME_TARGET = 50.0
TARGET_BYTES_RATIO = 100.0
#: Bytes per kept value at 0.95: upload and download targets.
UPLOAD_BYTES_PER_KEPT = 5.05
DOWNLOAD_BYTES_PER_KEPT = 5.5
#: Upload + download per site at 0.95 for BrainAge.
TOTAL_BYTES_TARGET = {"brainage": 1_600_000}
#: Flower SecAgg+ on the same kept values: the masked vector as int64 up, the float32 model
#: down (flwr 1.42, read and measured for CRYPTO-FACTS.md); computed here from n_kept.
SECAGG_BYTES_PER_KEPT = 8 + 4
RATIO_SPARSITIES = (0.9, 0.95)
STACK_PHASES = (
    "mask_pack",
    "pairwise_mask",
    "encrypt",
    "serialise",
    "upload",
    "download",
    "deserialise",
    "decrypt",
    "unpack",
)


def _find(rows: list[dict[str, Any]], model: str, mode: str, sparsity: float) -> dict[str, Any]:
    for row in rows:
        if row["model"] == model and row["mode"] == mode and abs(row["sparsity"] - sparsity) < 1e-9:
            return row
    return {}


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def floor_of(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any]:
    """The plaintext float32 row holding the same kept values (dense: ``plaintext``; sparse:
    ``plaintext-sparse`` at the same sparsity): 4 bytes per kept value, no encryption."""
    mode = "plaintext" if row["sparsity"] == 0.0 else "plaintext-sparse"
    return _find(rows, row["model"], mode, row["sparsity"])


def annotate(rows: list[dict[str, Any]]) -> None:
    """Add bytes per kept value and the ratios to the plaintext floor to every row."""
    for r in rows:
        n = max(r["n_kept"], 1)
        r["upload_bytes_per_kept"] = r["upload_bytes"] / n
        r["download_bytes_per_kept"] = r["download_bytes"] / n
        floor = floor_of(rows, r)
        r["upload_vs_floor"] = _div(r["upload_bytes"], floor.get("upload_bytes", 0))
        r["total_vs_floor"] = _div(
            r["upload_bytes"] + r["download_bytes"],
            floor.get("upload_bytes", 0) + floor.get("download_bytes", 0),
        )


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and sparsity (0.9, 0.95): ckks-peer-dense / ckks-lean-sparse for client round
    time, upload bytes and upload+download bytes, plaintext / ckks-lean-sparse bytes, and at
    0.95 the targets: time (``TIME_TARGETS``), bytes per kept value up and down, BrainAge's
    upload + download per site, and fewer bytes than Flower SecAgg+ on the same kept values."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        peer = _find(rows, model, "ckks-peer-dense", 0.0)
        plain = _find(rows, model, "plaintext", 0.0)
        for s in RATIO_SPARSITIES:
            sparse = _find(rows, model, "ckks-lean-sparse", s)
            if not sparse or not peer:
                continue
            both = sparse["upload_bytes"] + sparse["download_bytes"]
            secagg = SECAGG_BYTES_PER_KEPT * sparse["n_kept"]
            entry: dict[str, Any] = {
                "model": model,
                "sparsity": s,
                "time_vs_peer_dense": _div(peer["client_round_s"], sparse["client_round_s"]),
                "upload_bytes_vs_peer_dense": _div(peer["upload_bytes"], sparse["upload_bytes"]),
                "total_bytes_vs_peer_dense": _div(
                    peer["upload_bytes"] + peer["download_bytes"], both
                ),
                "upload_bytes_vs_plaintext": _div(plain["upload_bytes"], sparse["upload_bytes"])
                if plain
                else None,
                "total_bytes_vs_plaintext": _div(
                    plain["upload_bytes"] + plain["download_bytes"], both
                )
                if plain
                else None,
                "total_bytes": both,
                "secagg_plus_bytes": secagg,
            }
            if s == 0.95:
                t = entry["time_vs_peer_dense"]
                want_t = TIME_TARGETS.get(model, DEFAULT_TIME_TARGET)
                n = max(sparse["n_kept"], 1)
                targets = {
                    f"time_ge_{want_t:.0f}x": t is not None and t >= want_t,
                    f"upload_le_{UPLOAD_BYTES_PER_KEPT}_B_per_kept": sparse["upload_bytes"] / n
                    <= UPLOAD_BYTES_PER_KEPT,
                    f"download_le_{DOWNLOAD_BYTES_PER_KEPT}_B_per_kept": sparse["download_bytes"]
                    / n
                    <= DOWNLOAD_BYTES_PER_KEPT,
                    "total_below_secagg_plus": both < secagg,
                    "upload_bytes_ge_100x": (entry["upload_bytes_vs_peer_dense"] or 0.0)
                    >= TARGET_BYTES_RATIO,
                }
                if model in TOTAL_BYTES_TARGET:
                    limit = TOTAL_BYTES_TARGET[model]
                    targets[f"total_le_{limit / 1e6:.1f}_MB"] = both <= limit
                entry["targets"] = targets
            out.append(entry)
    return out


def _site_method(config: dict[str, Any]) -> str:
    """How the sites ran (older results files: as before these settings existed)."""
    poll = config.get("site_poll_s", 0.01)
    threads = config.get("site_threads", 0)
    evaluate = config.get("site_evaluate", True)
    how = "torch's default threads" if not threads else f"{threads} torch thread(s)"
    does = "evaluate each round" if evaluate else "do not evaluate"
    return f"they {does}, run {how} each and poll every {poll:g} s"


def _fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.1f}x"


def markdown(result: dict[str, Any]) -> str:
    """The report as Markdown: machine, rows, ratios and targets, scaling, inference."""
    m = result["machine"]
    lines = [
        "# Latency benchmark",
        "",
        f"Command: `{result['command']}`. Machine: {m['cpu_model']}, nproc {m['nproc']}, "
        f"{m['memory_gb']} GB, Python {m['python']}, torch {m['torch']}, TenSEAL "
        f"{m['tenseal']}; commit {m.get('git_commit', 'unknown')}; load average at start "
        f"{m['load_average_at_start']}, at the end "
        f"{result.get('load_average_at_end')} (a shared machine: other processes' load slows "
        f"long rows more than short ones). Run time {result['elapsed_s']:.0f} s.",
        "",
        "Client phases are medians over sites and rounds; `client s` is the median sum of a "
        "site's phases in a round (waiting for the other sites excluded, and so is `other s`: "
        "the real client's roster check, state files and metrics report). Sites do not "
        f"train; {_site_method(result.get('config', {}))}. "
        "`upload` is the PUT's wall time and includes the aggregator receiving, validating and "
        "adding the upload. `validate s` (receiving, checking and adding while the body streams "
        "in) and `add s` (adding, streamed or at commit) are the aggregator's own seconds per "
        "upload from `/metrics`; `peak RSS` is the aggregator's resident memory sampled every "
        f"20 ms during the row. Rows run {result['rows'][0]['clients'] if result['rows'] else 0} "
        "sites; `n_kept` includes the biases, which are never pruned. `vs floor`: upload + "
        "download bytes against the plaintext float32 row with the same kept values.",
        "",
        "| model | mode | sparsity | rounds | n_kept | upload B | download B | up B/kept "
        "| down B/kept | vs floor | client s | other s | validate s | add s | peak RSS MB |",
        "|" + "---|" * 15,
    ]
    for r in result["rows"]:
        vs = r.get("total_vs_floor")
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['sparsity']:.2f} | {r['rounds']} | {r['n_kept']:,} "
            f"| {r['upload_bytes']:,} | {r['download_bytes']:,} "
            f"| {r['upload_bytes_per_kept']:.3f} | {r['download_bytes_per_kept']:.3f} "
            f"| {'' if vs is None else f'{vs:.2f}x'} | {r['client_round_s']:.3f} "
            f"| {r.get('other_s', 0.0):.3f} | {r['server_validate_s']:.3f} "
            f"| {r['server_add_s']:.3f} | {r['server_peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "## Client phases (seconds, medians)",
        "",
        "| model | mode | sparsity | " + " | ".join(STACK_PHASES) + " | client s |",
        "|" + "---|" * (len(STACK_PHASES) + 4),
    ]
    for r in result["rows"]:
        ph = r["phases"]
        cells = " | ".join(f"{ph.get(p, 0.0):.4f}" for p in STACK_PHASES)
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['sparsity']:.2f} | {cells} "
            f"| {r['client_round_s']:.3f} |"
        )
    lines += [
        "",
        "## Against ckks-peer-dense and plaintext",
        "",
        "Ratios are baseline / ckks-lean-sparse (higher is better for sparse). Targets at 0.95: "
        "client round time >= 60x (BrainAge) or 50x (others) faster than ckks-peer-dense; upload "
        f"<= {UPLOAD_BYTES_PER_KEPT} and download <= {DOWNLOAD_BYTES_PER_KEPT} bytes per kept "
        "value; BrainAge upload + download <= 1.6 MB per site; fewer bytes than Flower SecAgg+ "
        f"on the same kept values ({SECAGG_BYTES_PER_KEPT} B per kept value: int64 up, float32 "
        "down; computed, not run here).",
        "",
        "| model | sparsity | time vs peer | upload B vs peer | up+down B vs peer "
        "| upload B vs plaintext | up+down B vs plaintext | up+down B | SecAgg+ B "
        "| targets (0.95) |",
        "|" + "---|" * 10,
    ]
    for e in result["ratios"]:
        targets = e.get("targets")
        met = (
            ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items())
            if targets
            else ""
        )
        lines.append(
            f"| {e['model']} | {e['sparsity']:.2f} | {_fmt_ratio(e['time_vs_peer_dense'])} "
            f"| {_fmt_ratio(e['upload_bytes_vs_peer_dense'])} "
            f"| {_fmt_ratio(e['total_bytes_vs_peer_dense'])} "
            f"| {_fmt_ratio(e['upload_bytes_vs_plaintext'])} "
            f"| {_fmt_ratio(e['total_bytes_vs_plaintext'])} | {e['total_bytes']:,} "
            f"| {e['secagg_plus_bytes']:,} | {met} |"
        )
    if result["scaling"]:
        first = result["scaling"][0]
        lines += [
            "",
            f"## Aggregator against clients ({first['model']}, {first['preset']}, sparsity "
            f"{first['sparsity']}, {first['n_kept']:,} values, {first['upload_bytes']:,} B per "
            "upload)",
            "",
            "Updates were encrypted in advance and uploaded all at once from K threads of the "
            "benchmark process (not K site processes), so every upload is in flight together.",
            "",
            "| clients | add total s | add s/upload | validate s/upload | close s | uploads wall s "
            "| RSS before MB | peak RSS MB | growth MB |",
            "|" + "---|" * 9,
        ]
        for s in result["scaling"]:
            lines.append(
                f"| {s['clients']} | {s['server_add_total_s']:.3f} "
                f"| {s['server_add_per_upload_s']:.3f} | {s['server_validate_per_upload_s']:.3f} "
                f"| {s['server_close_s']:.3f} | {s['uploads_wall_s']:.2f} "
                f"| {s['server_rss_before_mb']:.0f} | {s['server_peak_rss_mb']:.0f} "
                f"| {s['server_rss_growth_mb']:.0f} |"
            )
    inf = result.get("inference")
    if inf:
        lines += [
            "",
            f"## Inference of the pruned model ({inf['model']}, input {inf['input_shape']}, "
            f"batch 1, {inf['threads']} thread(s), median of {inf['repeats']})",
            "",
            "Sizes are real `torch.save` bytes. Latency: dense kernels (PyTorch has no sparse "
            "Conv3d on CPU), pruned weights set to zero. `head CSR/dense` times a CSR against a "
            "dense product with the pruned 1x1x1 head conv as a matrix.",
            "",
            "| sparsity | non-zero | dense B | bitmask+values B | +zlib B | COO B | CSR B "
            "| latency s (min) | head dense s | head CSR s |",
            "|" + "---|" * 10,
        ]
        for r in inf["rows"]:
            hd, hc = r.get("head_matmul_dense_s"), r.get("head_matmul_csr_s")
            lines.append(
                f"| {r['sparsity']:.2f} | {r['n_nonzero']:,} | {r['dense_bytes']:,} "
                f"| {r['bitmask_values_bytes']:,} | {r['bitmask_values_zlib_bytes']:,} "
                f"| {r['torch_coo_bytes']:,} | {r['torch_csr_bytes']:,} "
                f"| {r['latency_s']:.3f} ({r['latency_min_s']:.3f}) "
                f"| {'' if hd is None else f'{hd:.2e}'} | {'' if hc is None else f'{hc:.2e}'} |"
            )
    return "\n".join(lines) + "\n"


def plots(result: dict[str, Any], out_dir: Path) -> list[str]:
    """Stacked phases against sparsity, bytes against sparsity (log), aggregator scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    if not models:
        return written
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        mrows = [r for r in rows if r["model"] == model]
        labels = [
            r["mode"].replace("ckks-", "") + ("" if r["sparsity"] == 0 else f"\n{r['sparsity']}")
            for r in mrows
        ]
        bottom = [0.0] * len(mrows)
        for phase in STACK_PHASES:
            heights = [r["phases"][phase] for r in mrows]
            ax.bar(labels, heights, bottom=bottom, label=phase)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_yscale("log")
        ax.set_title(f"{model}: client round by phase")
        ax.set_ylabel("seconds (log)")
        ax.tick_params(axis="x", labelsize=7)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "latency_phases.png", dpi=110)
    plt.close(fig)
    written.append("latency_phases.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in models:
        sparse = sorted(
            (r for r in rows if r["model"] == model and r["mode"] == "ckks-lean-sparse"),
            key=lambda r: r["sparsity"],
        )
        if sparse:
            line = ax.plot(
                [r["sparsity"] for r in sparse],
                [r["upload_bytes"] for r in sparse],
                marker="o",
                label=f"{model} lean-sparse upload",
            )
            ax.plot(
                [r["sparsity"] for r in sparse],
                [r["download_bytes"] for r in sparse],
                marker="x",
                linestyle=":",
                color=line[0].get_color(),
                label=f"{model} lean-sparse download",
            )
        floor = sorted(
            (r for r in rows if r["model"] == model and r["mode"] == "plaintext-sparse"),
            key=lambda r: r["sparsity"],
        )
        if floor:
            ax.plot(
                [r["sparsity"] for r in floor],
                [r["upload_bytes"] for r in floor],
                marker=".",
                linestyle="--",
                label=f"{model} plaintext float32 of the kept values (floor)",
            )
        for mode, style in (
            ("ckks-peer-dense", "--"),
            ("plaintext", "-."),
            ("ckks-lean-dense", ":"),
        ):
            base = _find(rows, model, mode, 0.0)
            if base:
                ax.axhline(base["upload_bytes"], linestyle=style, linewidth=1, color="gray")
                ax.annotate(
                    f"{model} {mode}", (0.5, base["upload_bytes"]), fontsize=6, color="gray"
                )
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("bytes per client (log)")
    ax.set_title("bytes against sparsity (dense baselines as lines)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "latency_bytes.png", dpi=110)
    plt.close(fig)
    written.append("latency_bytes.png")

    scaling = result["scaling"]
    if scaling:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        ks = [s["clients"] for s in scaling]
        ax1.plot(ks, [s["server_add_total_s"] for s in scaling], marker="o", label="add, total")
        ax1.plot(ks, [s["uploads_wall_s"] for s in scaling], marker="s", label="uploads wall")
        ax1.set_xlabel("clients")
        ax1.set_ylabel("seconds")
        ax1.set_xscale("log", base=2)
        ax1.set_title("aggregator time")
        ax1.legend(fontsize=8)
        ax2.plot(ks, [s["server_peak_rss_mb"] for s in scaling], marker="o", label="peak")
        ax2.plot(ks, [s["server_rss_before_mb"] for s in scaling], marker="s", label="before")
        ax2.set_xlabel("clients")
        ax2.set_ylabel("RSS MiB")
        ax2.set_xscale("log", base=2)
        ax2.set_title("aggregator memory")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "latency_scaling.png", dpi=110)
        plt.close(fig)
        written.append("latency_scaling.png")
    return written


def write_report(result: dict[str, Any], out_dir: Path) -> None:
    """Add ratios to ``result``; write latency.json, latency.md and the PNGs; print the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    annotate(result["rows"])
    result["ratios"] = ratios(result["rows"])
    result["plots"] = plots(result, out_dir)
    (out_dir / "latency.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (out_dir / "latency.md").write_text(text)
    print(text)
