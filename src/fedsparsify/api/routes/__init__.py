"""One APIRouter per resource; :mod:`fedsparsify.api.routes.deps` holds the shared dependencies."""
