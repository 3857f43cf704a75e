#!/usr/bin/env python
"""What sparse CKKS updates cost, against a peer's dense parameters and plaintext.

A thin wrapper around :mod:`fedsparsify.bench.crypto_costs` (also ``fedsparsify bench crypto``);
``--help`` lists the options.
"""

from __future__ import annotations

from fedsparsify.bench.crypto_costs import main

if __name__ == "__main__":
    raise SystemExit(main())
