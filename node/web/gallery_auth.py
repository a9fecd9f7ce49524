"""Who is looking at the gallery: a login session cookie, and the CSRF token every form carries.

I/O edge (cookies). A session is `TOKEN_ID.EXPIRES.MAC`, signed with a key
derived from the node's own key, so it survives restarts and needs no
table; it ends when it expires, at logout, or when its API token is revoked.
Every visitor also gets a random, HttpOnly `artkeep_visitor` cookie; a form's
CSRF token is an HMAC of it, so a page on another site can neither read nor
forge one. Cookies are SameSite=Strict, and Secure when served over https.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

SESSION_COOKIE = "artkeep_session"
VISITOR_COOKIE = "artkeep_visitor"
SESSION_SECONDS = 14 * 24 * 3600
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


def session_key(node_seed: bytes) -> bytes:
    """The HMAC key for sessions and CSRF tokens: derived from, never equal to, the node's signing key."""
    return hmac.new(node_seed, b"artkeep gallery sessions v1", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Viewer:
    """The person behind a request: logged in or not, and the CSRF token their forms carry."""

    logged_in: bool
    token_id: str | None
    visitor: str  # the visitor cookie's value (new if the request had none)
    csrf: str
    new_visitor: bool  # the response must set the visitor cookie


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def session_value(key: bytes, token_id: str, now: float) -> str:
    expires = int(now) + SESSION_SECONDS
    return f"{token_id}.{expires}.{_mac(key, f'session:{token_id}.{expires}')}"


def session_token_id(key: bytes, value: str, now: float) -> str | None:
    """The API token id a session cookie stands for; None if it is forged, altered or expired."""
    token_id, _, rest = value.partition(".")
    expires, _, mac = rest.partition(".")
    if not token_id or not expires.isdigit() or int(expires) < now:
        return None
    if not hmac.compare_digest(mac, _mac(key, f"session:{token_id}.{expires}")):
        return None
    return token_id


def csrf_token(key: bytes, visitor: str) -> str:
    return _mac(key, f"csrf:{visitor}")


def csrf_ok(key: bytes, visitor: str, token: str) -> bool:
    return bool(visitor) and hmac.compare_digest(token, csrf_token(key, visitor))


def viewer_of(request: web.Request, key: bytes, live_token_ids: frozenset[str] | None) -> Viewer:
    """The request's viewer; live_token_ids are the tokens not revoked (None: do not check a session)."""
    visitor = request.cookies.get(VISITOR_COOKIE, "")
    new_visitor = len(visitor) < 32 or not visitor.isalnum()
    if new_visitor:
        visitor = secrets.token_hex(16)
    token_id = None
    if live_token_ids is not None:
        token_id = session_token_id(key, request.cookies.get(SESSION_COOKIE, ""), time.time())
        if token_id not in live_token_ids:
            token_id = None
    return Viewer(token_id is not None, token_id, visitor, csrf_token(key, visitor), new_visitor)


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
               max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="Strict",
                        secure=request.secure)


def remember_visitor(request: web.Request, response: web.StreamResponse, viewer: Viewer) -> None:
    if viewer.new_visitor:
        set_cookie(request, response, VISITOR_COOKIE, viewer.visitor, None)
