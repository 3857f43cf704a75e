#!/usr/bin/env python
"""Upload throughput and latency on 1, 2 and 3 aggregator processes (PostgreSQL) and SQLite.

A thin wrapper around :mod:`fedsparsify.bench.replicas` (also ``fedsparsify bench replicas``);
``--help`` lists the options.
"""

from __future__ import annotations

from fedsparsify.bench.replicas import main

if __name__ == "__main__":
    raise SystemExit(main())
