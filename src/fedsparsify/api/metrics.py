"""Prometheus metrics of one aggregator (a registry per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["ServerMetrics"]


class ServerMetrics:
    """Counters and histograms served at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rounds_opened = Counter(
            "fedsparsify_rounds_opened", "Rounds opened.", registry=self.registry
        )
        self.rounds_closed = Counter(
            "fedsparsify_rounds_closed", "Rounds closed with an aggregate.", registry=self.registry
        )
        self.rounds_failed = Counter(
            "fedsparsify_rounds_failed",
            "Rounds failed (deadline passed without a quorum).",
            registry=self.registry,
        )
        self.rounds_retried = Counter(
            "fedsparsify_rounds_retried",
            "Round attempts restarted because a participant missed the deadline (pairwise masks).",
            registry=self.registry,
        )
        self.uploads_accepted = Counter(
            "fedsparsify_uploads_accepted",
            "Update uploads accepted, by channel.",
            ["channel"],
            registry=self.registry,
        )
        self.uploads_refused = Counter(
            "fedsparsify_uploads_refused",
            "Update uploads refused, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.edge_refused = Counter(
            "fedsparsify_edge_refused",
            "Requests and connections refused or dropped at the HTTP edge, by reason: "
            "body_too_large, body_stalled, body_too_slow, head_too_large, head_timeout, "
            "too_many_connections, too_many_connections_from_address, uploads_busy.",
            ["reason"],
            registry=self.registry,
        )
        self.bytes_received = Counter(
            "fedsparsify_bytes_received",
            "Bytes of request bodies received (updates, contexts, envelopes).",
            ["kind"],
            registry=self.registry,
        )
        self.bytes_served = Counter(
            "fedsparsify_bytes_served",
            "Bytes of blobs served (aggregates, contexts, envelopes).",
            ["kind"],
            registry=self.registry,
        )
        self.aggregation_seconds = Histogram(
            "fedsparsify_aggregation_seconds",
            "Seconds spent adding ciphertexts: per upload ('add') and per round close ('close').",
            ["step"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0),
            registry=self.registry,
        )
        self.upload_stage_seconds = Histogram(
            "fedsparsify_upload_stage_seconds",
            "Seconds per upload from its first body byte to a validated, fsynced temporary file "
            "(receiving and checking every frame; the add is counted in aggregation_seconds).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0),
            registry=self.registry,
        )
