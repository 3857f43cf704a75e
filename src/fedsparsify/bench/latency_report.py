"""The latency benchmark's report: ratios and targets, JSON, a Markdown table and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["markdown", "ratios", "write_report"]

#: The issue's targets at 0.95 sparsity against ckks-peer-dense.
TARGET_TIME_RATIO = 50.0
TARGET_BYTES_RATIO = 100.0
RATIO_SPARSITIES = (0.9, 0.95)
STACK_PHASES = (
    "mask_pack",
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


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and sparsity (0.9, 0.95): ckks-peer-dense / ckks-lean-sparse for client round
    time, upload bytes and upload+download bytes, and plaintext / ckks-lean-sparse bytes; with
    the issue's targets checked at 0.95 (time >= 50x, upload bytes >= 100x, fewer upload bytes
    than plaintext)."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        peer = _find(rows, model, "ckks-peer-dense", 0.0)
        plain = _find(rows, model, "plaintext", 0.0)
        for s in RATIO_SPARSITIES:
            sparse = _find(rows, model, "ckks-lean-sparse", s)
            if not sparse or not peer:
                continue
            both = sparse["upload_bytes"] + sparse["download_bytes"]
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
            }
            if s == 0.95:
                t, b, p = (
                    entry["time_vs_peer_dense"],
                    entry["upload_bytes_vs_peer_dense"],
                    entry["upload_bytes_vs_plaintext"],
                )
                entry["targets"] = {
                    "time_ge_50x": t is not None and t >= TARGET_TIME_RATIO,
                    "upload_bytes_ge_100x": b is not None and b >= TARGET_BYTES_RATIO,
                    "total_bytes_ge_100x": (entry["total_bytes_vs_peer_dense"] or 0.0)
                    >= TARGET_BYTES_RATIO,
                    "fewer_upload_bytes_than_plaintext": p is not None and p > 1.0,
                }
            out.append(entry)
    return out


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
        f"{m['tenseal']}; load average at start {m['load_average_at_start']}, at the end "
        f"{result.get('load_average_at_end')} (a shared machine: other processes' load slows "
        f"long rows more than short ones). Run time {result['elapsed_s']:.0f} s.",
        "",
        "Client phases are medians over sites and rounds; `client s` is the median sum of a "
        "site's phases in a round (waiting for the other sites excluded). `upload` is the PUT's "
        "wall time and includes the aggregator receiving, validating and adding the upload. "
        "`validate s` and `add s` are the aggregator's own seconds per upload from `/metrics`; "
        "`peak RSS` is the aggregator's resident memory sampled every 20 ms during the row. "
        "`rounds`: rounds per row with 2 sites each (fewer at 10M values, to keep the run "
        "short); `n_kept` includes the BrainAge biases, which are never pruned.",
        "",
        "| model | mode | sparsity | rounds | n_kept | upload B | download B | client s "
        "| encrypt s | upload s | download s | decrypt s | validate s | add s | peak RSS MB |",
        "|" + "---|" * 15,
    ]
    for r in result["rows"]:
        ph = r["phases"]
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['sparsity']:.2f} | {r['rounds']} | {r['n_kept']:,} "
            f"| {r['upload_bytes']:,} | {r['download_bytes']:,} | {r['client_round_s']:.3f} "
            f"| {ph['encrypt']:.3f} | {ph['upload']:.3f} | {ph['download']:.3f} "
            f"| {ph['decrypt']:.3f} | {r['server_validate_s']:.3f} | {r['server_add_s']:.3f} "
            f"| {r['server_peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "## Against ckks-peer-dense and plaintext",
        "",
        "Ratios are baseline / ckks-lean-sparse (higher is better for sparse). Targets at 0.95: "
        "client round time >= 50x and bytes >= 100x less than ckks-peer-dense, fewer bytes "
        "than plaintext.",
        "",
        "| model | sparsity | time vs peer | upload B vs peer | up+down B vs peer "
        "| upload B vs plaintext | up+down B vs plaintext | targets (0.95) |",
        "|" + "---|" * 8,
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
            f"| {_fmt_ratio(e['total_bytes_vs_plaintext'])} | {met} |"
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
    result["ratios"] = ratios(result["rows"])
    result["plots"] = plots(result, out_dir)
    (out_dir / "latency.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (out_dir / "latency.md").write_text(text)
    print(text)
