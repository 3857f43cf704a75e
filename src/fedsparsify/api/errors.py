"""Exception handlers: every error answer is ``{"error": code, "detail": text}``.

- :class:`~fedsparsify.errors.FedsparsifyError` (any subclass) → its ``http_status`` and ``code``;
- request validation → 422 with code ``invalid_config`` (:class:`~fedsparsify.errors.ConfigError`);
- Starlette HTTP errors (unknown path, wrong method) → their status, a code by status;
- SQLAlchemy: integrity → 409 ``conflict``; a locked or unreachable database, or no pooled
  connection free in time → 503 ``unavailable`` (clients retry); anything else → 500
  ``internal_error``, logged.

So a client always gets one JSON shape, and anything a client can send yields a 4xx.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedsparsify.errors import (
    ConfigError,
    ConflictError,
    FedsparsifyError,
    UnavailableError,
)

__all__ = ["error_response", "install_exception_handlers"]

log = logging.getLogger(__name__)

#: Validation errors named in one answer (a hostile body can hold a hundred thousand).
MAX_REPORTED_ERRORS = 10

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: ConfigError.code,
    503: "unavailable",
}


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    """The one error body."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _fedsparsify(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FedsparsifyError)
    return error_response(exc.http_status, exc.code, str(exc))


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    parts = []
    for err in errors[:MAX_REPORTED_ERRORS]:
        where = ".".join(str(p) for p in err.get("loc", ()))[:200]
        parts.append(f"{where}: {str(err.get('msg', 'invalid'))[:300]}")
    if len(errors) > MAX_REPORTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_REPORTED_ERRORS} more")
    return error_response(422, ConfigError.code, "; ".join(parts) or "invalid request")


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


def _sqlalchemy(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, IntegrityError):
        log.info("integrity error answered as 409: %s", exc.orig)
        return error_response(409, ConflictError.code, "the request conflicts with stored state")
    if isinstance(exc, OperationalError):
        log.warning("database unavailable: %s", exc.orig)
        return error_response(503, UnavailableError.code, "database busy or unreachable; retry")
    if isinstance(exc, PoolTimeoutError):
        log.warning("no database connection free in time: %s", exc)
        return error_response(503, UnavailableError.code, "aggregator busy; retry")
    log.exception("database error")
    return error_response(500, "internal_error", "database error")


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_exception_handlers(app: FastAPI) -> None:
    """Register every handler on ``app``."""
    app.add_exception_handler(FedsparsifyError, _fedsparsify)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(SQLAlchemyError, _sqlalchemy)
    app.add_exception_handler(Exception, _unexpected)
