"""CKKS presets, keys, envelopes, sparse packing, wire format and the homomorphic sum."""
