"""Schemathesis-driven fuzzing of a live aggregator's OpenAPI, with every kind of credential.

Each operation of the served ``/openapi.json`` gets Hypothesis-generated requests, valid
(``positive``) and invalid (``negative``) by the schema. Path parameters are usually the real
federation, client, round and channel (so requests reach the services instead of stopping at
404) and sometimes generated; the ``Authorization`` / ``X-Enrollment-Token`` headers are drawn
from the real admin, dealer, member and enrolment tokens, a wrong token and none. Any 5xx
answer fails: anything a client can send must get a 4xx.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

__all__ = ["FuzzStats", "Identities", "fuzz_api"]


@dataclass(frozen=True)
class Identities:
    """Real credentials and ids of one set-up federation on the server under test."""

    admin_token: str
    enrollment_token: str
    dealer_token: str
    member_token: str
    federation_id: str
    client_id: str

    def header_choices(self) -> list[dict[str, str]]:
        """Credentials a request may carry; real ones more often than wrong ones."""

        def bearer(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        return [
            bearer(self.admin_token),
            bearer(self.dealer_token),
            bearer(self.member_token),
            bearer(self.member_token),
            {"X-Enrollment-Token": self.enrollment_token},
            bearer(self.enrollment_token),
            bearer("fsc_not-a-token"),
            {},
        ]

    def path_values(self) -> dict[str, Any]:
        """Real values for every path parameter the API has."""
        return {
            "fid": self.federation_id,
            "client_id": self.client_id,
            "index": 0,
            "channel": "values",
        }


@dataclass
class FuzzStats:
    """What a fuzz run sent and got back."""

    cases: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "cases": self.cases,
            "responses_by_status_class": dict(sorted(self.by_class.items())),
            "operations": len(self.by_operation),
            "server_errors": self.server_errors[:20],
            "operations_without_invalid_inputs": self.skipped,
        }


def _fuzz_operation(
    op: Any,
    mode: GenerationMode,
    url: str,
    session: requests.Session,
    ids: Identities,
    stats: FuzzStats,
    *,
    examples: int,
    rng_seed: int,
) -> None:
    names = [p.name for p in op.path_parameters]
    real = ids.path_values()
    fixed = {n: real[n] for n in names if n in real}
    paths: list[dict[str, Any]] = [fixed, fixed, fixed, {}] if fixed else [{}]
    label = f"{op.method.upper()} {op.path}"

    def build(pick: tuple[dict[str, str], dict[str, Any]]) -> Any:
        headers, path = pick
        return op.as_strategy(mode, headers=dict(headers), path_parameters=dict(path) or None)

    strategy = st.tuples(st.sampled_from(ids.header_choices()), st.sampled_from(paths))

    @seed(rng_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy.flatmap(build))
    def run(case: Any) -> None:
        response = case.call(base_url=url, session=session, timeout=60)
        stats.cases += 1
        stats.by_class[f"{response.status_code // 100}xx"] += 1
        stats.by_operation[label] += 1
        if response.status_code >= 500:
            stats.server_errors.append(
                f"{response.status_code} {label} ({mode}) {case.formatted_path}: "
                f"{response.text[:300]}"
            )

    try:
        run()
    except Unsatisfiable:
        # Nothing in this operation can be made invalid (e.g. no parameters, negative mode).
        stats.skipped.append(f"{label} ({mode})")


def fuzz_api(url: str, ids: Identities, *, examples: int, rng_seed: int = 0) -> FuzzStats:
    """Send ``examples`` generated requests per operation and generation mode; record answers.

    Never raises on a 5xx: the caller asserts on :attr:`FuzzStats.server_errors`, so one run
    reports every failing operation at once.
    """
    stats = FuzzStats()
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    with requests.Session() as session:
        for result in schema.get_all_operations():
            op = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(
                    op, mode, url, session, ids, stats, examples=examples, rng_seed=rng_seed
                )
    return stats
