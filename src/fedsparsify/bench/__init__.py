"""Benchmarks that the ``fedsparsify bench`` command runs (the scripts in ``benchmarks/`` are
thin wrappers): :mod:`fedsparsify.bench.latency` measures a round phase by phase over real HTTP.
"""
