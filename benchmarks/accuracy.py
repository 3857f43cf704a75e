#!/usr/bin/env python
"""FedSparsify against its baselines: test metric at target sparsity 0.8, 0.9 and 0.95.

A thin wrapper around :mod:`fedsparsify.bench.accuracy` (also ``fedsparsify bench accuracy``);
``--help`` lists the options.
"""

from __future__ import annotations

from fedsparsify.bench.accuracy import main

if __name__ == "__main__":
    raise SystemExit(main())
