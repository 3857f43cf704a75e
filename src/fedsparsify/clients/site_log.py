"""What a site tells the person running it: waiting, one line per round, a final summary.

The runtime calls :class:`SiteLog` at a few points; every message is an INFO line of this
module's logger, and a waiting message is said once, not once per poll. Rounds are named by
their index, as the aggregator, the demo and the report name them, with the count beside it:
``round 3 (4/5)`` is the fourth of five.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["SiteLog", "describe_round", "rounds_taken_part"]

log = logging.getLogger(__name__)


def describe_round(index: int, rounds: int) -> str:
    """``round 3 (4/5)``."""
    return f"round {index} ({index + 1}/{rounds})"


def rounds_taken_part(fed: dict[str, Any], client_id: str) -> int:
    """Closed rounds whose aggregate holds this client's upload (counts across restarts)."""
    return sum(
        1
        for entry in fed.get("history", [])
        if entry.get("state") == "closed" and client_id in entry.get("contributors", [])
    )


def _metrics_text(metrics: dict[str, float]) -> str:
    parts = []
    if "val_mae" in metrics:
        parts.append(f"val MAE {metrics['val_mae']:.2f} y")
    elif "val_accuracy" in metrics:
        parts.append(f"val accuracy {metrics['val_accuracy']:.3f}")
    if "sparsity" in metrics:
        parts.append(f"sparsity {metrics['sparsity']:.3f}")
    if "upload_bytes" in metrics:
        parts.append(f"{metrics['upload_bytes']:,.0f} B up")
    if "download_bytes" in metrics:
        parts.append(f"{metrics['download_bytes']:,.0f} B down")
    if "round_s" in metrics:
        parts.append(f"{metrics['round_s']:.1f} s")
    return ", ".join(parts)


class SiteLog:
    """One site's messages to its operator."""

    def __init__(
        self, name: str, *, server: str, federation_id: str, rounds: int, state_dir: Path
    ) -> None:
        self.name = name
        self.server = server
        self.federation_id = federation_id
        self.rounds = rounds
        self.state_dir = state_dir
        self._said: set[str] = set()
        self.outcome: str | None = None

    def _once(self, key: str, message: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            log.info(message, *args)

    def waiting_for_key(self) -> None:
        """A non-dealer site waits for its sealed key."""
        self._once(
            "key",
            "%s: waiting for the key dealer (the first site that joined) to seal the CKKS key "
            "for this site; the dealer's `fedsparsify client` must be running",
            self.name,
        )

    def waiting(self, fed: dict[str, Any], client_id: str) -> None:
        """Nothing to do this poll: say why, once per reason."""
        current = fed.get("current_round")
        if current is None:
            self._once(
                "round-0",
                "%s: ready (holds the key); waiting for round 0. Once every site has joined, "
                "the operator opens it with: fedsparsify federation start-round %s --server %s",
                self.name,
                self.federation_id,
                self.server,
            )
            return
        history: list[dict[str, Any]] = fed.get("history", [])
        entry: dict[str, Any] = next((h for h in history if h.get("index") == current), {})
        running = bool(entry) and entry.get("state") not in ("closed", "failed")
        if running and client_id not in entry.get("participants", []):
            self._once(
                f"skip-{current}",
                "%s: %s runs without this site (not among its participants); waiting for "
                "the next round",
                self.name,
                describe_round(int(current), self.rounds),
            )

    def round_done(self, index: int, attempt: int, metrics: dict[str, float]) -> None:
        """The one line per round: own validation metric, sparsity, bytes, seconds."""
        again = f" attempt {attempt}" if attempt else ""
        log.info(
            "%s %s%s: %s",
            self.name,
            describe_round(index, self.rounds),
            again,
            _metrics_text(metrics),
        )

    def ended(self, fed: dict[str, Any], client_id: str, summary: dict[str, Any] | None) -> None:
        """The federation completed or failed: the final summary line."""
        self.outcome = self.summary_line(fed, client_id, summary)
        log.info("%s", self.outcome)

    def summary_line(
        self, fed: dict[str, Any], client_id: str, summary: dict[str, Any] | None
    ) -> str:
        """e.g. ``site-0: federation completed after 5 rounds (this site took part in 5); ...``."""
        state = fed.get("state")
        closed = sum(1 for h in fed.get("history", []) if h.get("state") == "closed")
        head = (
            f"{self.name}: federation {state} after {closed} of {self.rounds} rounds "
            f"(this site took part in {rounds_taken_part(fed, client_id)})"
        )
        if state != "completed":
            return f"{head}: {fed.get('reason') or 'no reason given'}"
        validation = (summary or {}).get("validation") or {}
        if summary is None:
            return head + "; this site holds no final model"
        if "mae" in validation:
            head += f"; final validation MAE {validation['mae']:.2f} y (n={validation['n']})"
        elif "accuracy" in validation:
            head += f"; final validation accuracy {validation['accuracy']:.3f}"
        if "final_sparsity" in summary:
            head += f", sparsity {summary['final_sparsity']:.3f}"
        return (
            f"{head}. Export the model with: fedsparsify export --state {self.state_dir} "
            "--out MODEL_DIR"
        )
