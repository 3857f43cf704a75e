"""The aggregator: FastAPI app factory, routes, schemas, storage and the round service.

``create_app(settings)`` builds the app; ``fedsparsify serve`` runs it under uvicorn.
"""

from fedsparsify.api.app import create_app
from fedsparsify.api.settings import Settings

__all__ = ["Settings", "create_app"]
