"""The whole reliability and security battery (issue 7) and its report.

Runs every test of ``tests/security`` (the bad-input battery, the secrets scan, TLS) and of
``tests/reliability`` (slow ones included: fuzzing with many examples, the
aggregator killed with SIGKILL three times, a site process killed and restarted, one of five
sites vanishing, 32 concurrent full-size BrainAge uploads; the live-server ones on SQLite and on
PostgreSQL; the HTTP edge's abuse cases: huge and stalled bodies, slow heads, a small
file-descriptor limit, lost answers retried; three aggregator processes on one PostgreSQL with
kills and a restart) and writes what they measured to ``benchmarks/results/reliability.json``:
fuzz cases and answers by status class, faults and their outcomes, concurrent clients,
aggregator RSS peak and trend, uploads lost, and whether the disturbed run equals the
undisturbed one; the edge's figures; the replicas run; and the security tests passed and
failed, per file.

    .venv/bin/python benchmarks/reliability.py            # everything (a few minutes)
    .venv/bin/python benchmarks/reliability.py --quick    # the fast part only (`make test`'s)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from fedsparsify.bench.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]


def security_cases(junit: Path) -> dict[str, dict[str, int]]:
    """Passed and failed test cases of ``tests/security``, per file, from pytest's JUnit XML."""
    out: dict[str, dict[str, int]] = {}
    if not junit.exists():
        return out
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "")
        if not module.startswith("tests.security."):
            continue
        counts = out.setdefault(module.removeprefix("tests.security."), {"passed": 0, "failed": 0})
        failed = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        if not skipped:
            counts["failed" if failed else "passed"] += 1
    return out


def summarise(records: list[dict[str, Any]], exit_code: int, seconds: float) -> dict[str, Any]:
    """The report's shape, from the tests' JSON lines."""
    fuzz = [r for r in records if r["kind"] == "fuzz"]
    after = [r for r in records if r["kind"] == "fuzz_then_round"]
    faults = [f for r in records if r["kind"] == "faults" for f in r["injected"]]
    equal = [r for r in records if r["kind"] == "faults" and "equal_to_undisturbed" in r]
    load = [r for r in records if r["kind"] == "load"]
    replicas = [r for r in records if r["kind"] == "replicas"]
    edge = {
        r["item"]: {k: v for k, v in r.items() if k not in ("kind", "item")}
        for r in records
        if r["kind"] == "edge"
    }
    by_class: dict[str, int] = {}
    for r in fuzz:
        for k, v in r["responses_by_status_class"].items():
            by_class[k] = by_class.get(k, 0) + v
    biggest = max(load, key=lambda r: r["clients"] * r["n_values"], default=None)
    return {
        "all_tests_passed": exit_code == 0,
        "pytest_exit_code": exit_code,
        "seconds": round(seconds, 1),
        "fuzz": {
            "cases": sum(r["cases"] for r in fuzz),
            "responses_by_status_class": by_class,
            "server_errors": [e for r in fuzz for e in r["server_errors"]],
            "runs": fuzz,
            "federation_completed_afterwards": bool(after) and all(r["completed"] for r in after),
            "max_abs_error_afterwards": max((r["max_abs_error"] for r in after), default=None),
        },
        "faults": {"injected": len(faults), "outcomes": faults},
        "equal_to_undisturbed_run": bool(equal) and all(r["equal_to_undisturbed"] for r in equal),
        "max_abs_difference_to_undisturbed": max(
            (r["max_abs_difference"] for r in equal), default=None
        ),
        "load": {
            "concurrent_clients": biggest["clients"] if biggest else 0,
            "aggregator_rss_peak_mib": biggest["rss_peak_mib"] if biggest else None,
            "aggregator_rss_baseline_mib": biggest["rss_baseline_mib"] if biggest else None,
            "rss_trend_mib_per_upload": biggest["rss_slope_mib_per_upload"] if biggest else None,
            "runs": load,
        },
        "uploads_lost": sum(r["lost"] for r in load),
        "replicas": {
            "runs": replicas,
            "faults": sum(len(r["faults"]) for r in replicas),
            "five_xx": sum(r["five_xx"] for r in replicas),
        },
        "edge": edge,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the tests `make test` runs")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "reliability.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "records.jsonl"
        record.touch()
        junit = Path(tmp) / "junit.xml"
        marks = "not slow" if args.quick else ""
        started = time.monotonic()
        code = subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/security",
                "tests/reliability",
                "-m",
                marks,
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
            ],
            cwd=ROOT,
            env={**os.environ, "FEDSPARSIFY_RELIABILITY_RECORD": str(record)},
        )
        seconds = time.monotonic() - started
        records = [json.loads(line) for line in record.read_text().splitlines() if line]
        security = security_cases(junit)
    report = {"provenance": provenance(["benchmarks/reliability.py", *sys.argv[1:]])}
    report.update(summarise(records, code, seconds))
    report["security_tests"] = security
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    details = ("fuzz", "load", "faults", "security_tests", "replicas", "edge")
    print(json.dumps({k: v for k, v in report.items() if k not in details}))
    print(f"report: {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
