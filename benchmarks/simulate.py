#!/usr/bin/env python
"""What a simulated round costs for 10, 100 and 1,000 sites, local against Ray.

A thin wrapper around :mod:`fedsparsify.bench.simulate` (also ``fedsparsify bench simulate``);
``--help`` lists the options.
"""

from __future__ import annotations

from fedsparsify.bench.simulate import main

if __name__ == "__main__":
    raise SystemExit(main())
