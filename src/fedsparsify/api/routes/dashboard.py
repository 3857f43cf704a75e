"""The read-only dashboard: ``/`` (page), sign-in and sign-out, ``/dashboard/session``, static.

The page is plain HTML, CSS and JavaScript shipped inside the package (``api/dashboard/``): no
request leaves for anywhere else, nothing is built. It signs in with a POST form (the admin token
or a site's client token) that sets an HttpOnly, SameSite=Strict cookie, Secure over HTTPS,
holding a server-side session id (:mod:`fedsparsify.api.services.sessions`); the token itself is
never put in a URL, a cookie or a log. Everything the page shows then comes from the REST API's
own GET endpoints, which accept that cookie as well as a bearer token (see
:func:`fedsparsify.api.routes.deps.get_caller`): a member sees only its own federation, the admin
all, and the page shows nothing the REST API would not show that caller.

Cross-site requests: the cookie is SameSite=Strict, only reads, and sign-in and sign-out check
that the form came from this server's own page (``Origin``, ``Sec-Fetch-Site``).
"""

from __future__ import annotations

import html
import logging
import re
from functools import cache
from importlib import resources
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from fedsparsify.api.db import ClientRow
from fedsparsify.api.routes.deps import (
    SESSION_COOKIE,
    CallerDep,
    StateDep,
    bearer_scheme,
    read_body,
)
from fedsparsify.api.schemas import DashboardSession, ErrorBody, iso
from fedsparsify.api.services.auth import Caller
from fedsparsify.api.services.sessions import (
    end_session,
    open_session,
    resolve_session,
    session_expiry,
)
from fedsparsify.api.state import AppState
from fedsparsify.errors import (
    AuthenticationError,
    FedsparsifyError,
    NotFoundError,
    PermissionDeniedError,
    ServiceError,
)

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["dashboard"])

#: The largest sign-in form read (a token is about 50 characters).
MAX_FORM_BYTES = 4096
_STATIC_NAME = re.compile(r"^[a-z0-9-]{1,64}\.(js|css|svg)$")
_MEDIA_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_ERROR_SLOT = "<!--sign-in-error-->"


@cache
def _asset(name: str) -> bytes:
    return (resources.files("fedsparsify.api") / "dashboard" / name).read_bytes()


def _headers(cache_control: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cache-Control": cache_control,
    }


def _page(name: str, status: int = 200, error: str | None = None) -> Response:
    body = _asset(name).decode("utf-8")
    if error is not None:
        body = body.replace(_ERROR_SLOT, f'<p class="error" role="alert">{html.escape(error)}</p>')
    return Response(body, status_code=status, media_type="text/html", headers=_headers("no-store"))


def _set_cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _clear_cookie(response: Response, request: Request) -> None:
    _set_cookie(response, request, "", 0)


def check_same_origin(request: Request) -> None:
    """Refuse a form posted from another site: ``Sec-Fetch-Site`` must not be cross-site and
    ``Origin``, when the browser sends one (they all do for a POST), must be this server's."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise PermissionDeniedError(f"a form from another site ({fetch_site}) is refused")
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own:
        raise PermissionDeniedError("a form from another origin is refused")


async def _form_token(request: Request, state: AppState) -> str:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ServiceError("the sign-in form must be application/x-www-form-urlencoded")
    body = await read_body(request, state, MAX_FORM_BYTES, "sign-in form")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=4, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ServiceError("the sign-in form is not valid form data") from exc
    tokens = fields.get("token", [])
    return tokens[0].strip() if len(tokens) == 1 else ""


def _signed_in(state: AppState, request: Request) -> bool:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return False
    with state.db.session() as session:
        try:
            resolve_session(state, session, session_id)
        except AuthenticationError:
            return False
    return True


@router.get("/", include_in_schema=False)
def index(request: Request, state: StateDep) -> Response:
    """The dashboard once signed in, else the sign-in form (a stale cookie is cleared)."""
    if _signed_in(state, request):
        return _page("index.html")
    response = _page("sign-in.html")
    if request.cookies.get(SESSION_COOKIE):
        _clear_cookie(response, request)
    return response


@router.post("/dashboard/sign-in", include_in_schema=False)
async def sign_in(request: Request, state: StateDep) -> Response:
    """Form field ``token``: the admin token or a site's client token. Success: 303 to ``/``
    with the session cookie; otherwise the form again with what was wrong (401, 403, 4xx)."""
    try:
        check_same_origin(request)
        token = await _form_token(request, state)
        with state.db.session() as session:
            opened = open_session(state, session, token)
    except AuthenticationError:
        log.info("dashboard sign-in refused: not a valid admin or client token")
        return _page(
            "sign-in.html",
            401,
            "That is neither the admin token nor a site's client token of this aggregator.",
        )
    except FedsparsifyError as exc:
        log.info("dashboard sign-in refused: %s", exc)
        return _page("sign-in.html", exc.http_status, f"Sign-in refused: {exc}")
    response = RedirectResponse("/", status_code=303, headers=_headers("no-store"))
    _set_cookie(response, request, opened.session_id, int(state.settings.dashboard_session_s))
    return response


@router.post("/dashboard/sign-out", include_in_schema=False)
def sign_out(request: Request, state: StateDep) -> Response:
    """End the session (its row is deleted) and clear the cookie; 303 to ``/``."""
    try:
        check_same_origin(request)
    except PermissionDeniedError as exc:
        return _page("sign-in.html", 403, f"Sign-out refused: {exc}")
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        with state.db.session() as session:
            end_session(session, session_id)
    response = RedirectResponse("/", status_code=303, headers=_headers("no-store"))
    _clear_cookie(response, request)
    return response


@router.get(
    "/dashboard/session",
    response_model=DashboardSession,
    summary="Who is signed in (dashboard session or bearer)",
    responses={401: {"model": ErrorBody}},
)
def whoami(
    request: Request,
    caller: CallerDep,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> DashboardSession:
    """The caller the dashboard's cookie (or a bearer token) stands for: the admin, or a client
    and its federation; when the session ends; how often the page refreshes."""
    expires: float | None = None
    with state.db.session() as session:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id and credentials is None:  # the caller came from the cookie
            expires = session_expiry(session, session_id)
        name = _client_name(session, caller)
    return DashboardSession(
        role="admin" if caller.is_admin else "client",
        client_id=caller.client_id,
        federation_id=caller.federation_id,
        name=name,
        expires_at=iso(expires),
        poll_s=state.settings.dashboard_poll_s,
    )


def _client_name(session: Session, caller: Caller) -> str | None:
    if caller.client_id is None:
        return None
    client = session.get(ClientRow, caller.client_id)
    return client.name if client is not None else None


@router.get("/dashboard/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    """The page's scripts, styles and icons (only the files shipped in the package)."""
    match = _STATIC_NAME.match(name)
    try:
        body = _asset(name) if match is not None else b""
    except (FileNotFoundError, IsADirectoryError):
        match = None
    if match is None:
        raise NotFoundError("the dashboard has no such file")
    return Response(body, media_type=_MEDIA_TYPES[match.group(1)], headers=_headers("no-cache"))
