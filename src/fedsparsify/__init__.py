"""fedsparsify: federated training with progressive pruning and sparse CKKS secure aggregation."""

__version__ = "0.1.0"
