#!/usr/bin/env python
"""Membership inference against the final brain-age model and what the aggregator stores.

A thin wrapper around :mod:`fedsparsify.bench.privacy` (also ``fedsparsify bench privacy``);
``--help`` lists the options.
"""

from __future__ import annotations

from fedsparsify.bench.privacy import main

if __name__ == "__main__":
    raise SystemExit(main())
