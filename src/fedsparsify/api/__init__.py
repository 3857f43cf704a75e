"""The aggregator: FastAPI app factory, routes, schemas, storage and the round service."""
