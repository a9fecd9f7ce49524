"""The HTTP every kind of place shares: auth headers, timeouts, bounded reads, and one mapping of failures.

I/O edge, used only by the modules in node/remotes. Every request goes through
`PlaceHttp.call`, which turns what went wrong into the RemoteError tree of
base.py: no answer in time, a refused or reset connection, 5xx and 429 are
Retryable (429 and 503 with the server's Retry-After), 401/403 and quota-like
refusals (402, 409, 413, 507) Permanent. It never retries by itself: waiting is
the push queue's decision. The place's secret never appears in a message: each
one is scrubbed of the token (and its Basic form) before it is raised.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import aiohttp

from node import __version__
from node.errors import NodeError
from node.remotes.base import Permanent, PlaceSpec, RemoteError, Retryable
from node.remotes.options import DEFAULT_TIMEOUT

MAX_JSON_BYTES: Final = 4 * 1024 * 1024
MAX_ERROR_BYTES: Final = 4096
MAX_DETAIL_CHARS: Final = 300
CHUNK: Final = 256 * 1024
CAR_MEDIA: Final = "application/vnd.ipld.car"
# Refusals that waiting does not fix: payment or quota (402, PSA's 409 INSUFFICIENT_FUNDS, 507), size (413).
QUOTA_STATUSES: Final = frozenset({402, 409, 413, 507})
RETRY_STATUSES: Final = frozenset({408, 425, 429})
NOT_IMPLEMENTED: Final = frozenset({501, 505})
USER_AGENT: Final = f"artkeep/{__version__}"
log = logging.getLogger("artkeep.remotes")

Params = Sequence[tuple[str, str]] | Mapping[str, str]


def auth_header(token: str | None, *, basic_allowed: bool = True) -> dict[str, str]:
    """`Basic` for a "user:password" token (where the kind allows it), else `Bearer`; nothing without one."""
    if token is None:
        return {}
    if basic_allowed and ":" in token:
        return {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}
    return {"Authorization": f"Bearer {token}"}


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None  # HTTP dates are GMT; a date without a zone is not one
    return max(0.0, when.timestamp() - time.time())


def secret_forms(token: str | None) -> list[str]:
    """Every spelling of the secret that could leak into a message: as given, its password, its Basic form."""
    if not token:
        return []
    forms = [token, base64.b64encode(token.encode()).decode()]
    _, colon, password = token.partition(":")
    if colon and len(password) >= 4:
        forms.append(password)
    return sorted(forms, key=len, reverse=True)


class PlaceHttp:
    """One place's HTTP API: its base URL, credentials and timeout, over the shared session."""

    def __init__(self, spec: PlaceSpec, session: aiohttp.ClientSession, *, base: str | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT,
                 token_required: bool = False) -> None:
        self.spec = spec
        self.token_required = token_required
        self.session = session
        self.base = (base or spec.url).rstrip("/")
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self.timeout = timeout
        self._secrets = secret_forms(spec.token)

    @property
    def label(self) -> str:
        return f"{self.spec.kind} place {self.spec.name!r} ({self.base})"

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def error(self, kind: type[RemoteError], message: str, *,
              retry_after: float | None = None) -> RemoteError:
        """A RemoteError about this place, its message free of the secret."""
        return kind(self.scrub(f"{self.label}: {message}"), retry_after=retry_after)

    @asynccontextmanager
    async def call(self, method: str, path: str, *, params: Params = (), data: Any = None,
                   headers: Mapping[str, str] | None = None, allow: Collection[int] = (200,),
                   redirects: bool = False) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request, if its status is in `allow`; else the RemoteError it maps to."""
        what = f"{method} {path}"
        if self.token_required and not self.spec.token:
            raise self.error(Permanent, "has no token; add the place again with one")
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
        try:
            response = await self.session.request(
                method, self.base + path, params=params, data=data,
                headers={**self.headers, **(headers or {})}, timeout=timeout, allow_redirects=redirects,
                max_redirects=3, raise_for_status=False)  # statuses are mapped below, whatever the session
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.failure(what, exc) from None
        try:
            if response.status not in allow:
                raise await self.status_error(what, response)
            yield response
        finally:
            response.release()

    def failure(self, what: str, exc: BaseException) -> BaseException:
        """What a transport failure means: our own NodeError if our CAR stream raised it, else Retryable."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, NodeError):
                return cause  # the local store failed while we uploaded: not the place's fault
            cause = cause.__cause__
        if isinstance(exc, TimeoutError):
            return self.error(Retryable, f"{what}: no answer within {self.timeout:g} s")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return self.error(Retryable, f"{what}: cannot connect ({exc.os_error.strerror or exc.os_error})")
        if isinstance(exc, aiohttp.TooManyRedirects):
            return self.error(Permanent, f"{what}: too many redirects")
        return self.error(Retryable, f"{what}: the connection failed ({type(exc).__name__}: {exc})")

    async def status_error(self, what: str, response: aiohttp.ClientResponse) -> RemoteError:
        status = response.status
        detail = await self._detail(response)
        message = f"{what} answered HTTP {status}" + (f": {detail}" if detail else "")
        if status in (401, 403):
            return self.error(Permanent, f"{what} refused our credentials (HTTP {status})"
                                         + (f": {detail}" if detail else ""))
        if status in QUOTA_STATUSES:
            return self.error(Permanent, message)
        if status in RETRY_STATUSES or (status >= 500 and status not in NOT_IMPLEMENTED):
            wait = retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
            return self.error(Retryable, message, retry_after=wait)
        return self.error(Permanent, message)

    async def _detail(self, response: aiohttp.ClientResponse) -> str:
        """What the server said about the error, in one short line (Kubo, PSA, Cluster and plain text)."""
        try:
            raw = await self.read(response, MAX_ERROR_BYTES, "", truncate=True)
        except RemoteError:
            return ""
        return error_detail(raw)

    async def read(self, response: aiohttp.ClientResponse, limit: int, what: str, *,
                   truncate: bool = False) -> bytes:
        """The body, at most `limit` bytes: over it, the first limit + 1 if `truncate`, else Retryable."""
        body = bytearray()
        try:
            while len(body) <= limit:
                chunk = await response.content.read(min(CHUNK, limit + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.failure(what, exc) from None
        if len(body) > limit and not truncate:
            raise self.error(Retryable, f"{what}: the answer is over {limit} bytes")
        return bytes(body)

    async def json(self, response: aiohttp.ClientResponse, what: str) -> Any:
        """The JSON body (at most MAX_JSON_BYTES); Retryable if it is not JSON."""
        raw = await self.read(response, MAX_JSON_BYTES, what)
        try:
            return json.loads(raw)
        except ValueError:
            raise self.error(Retryable, f"{what}: the answer is not JSON: {raw[:80]!r}") from None

    async def json_lines(self, response: aiohttp.ClientResponse, what: str) -> list[Any]:
        """An NDJSON (or concatenated JSON) body as values, at most MAX_JSON_BYTES in all."""
        raw = (await self.read(response, MAX_JSON_BYTES, what)).decode("utf-8", "replace")
        decoder = json.JSONDecoder()
        values: list[Any] = []
        position = 0
        while (position := _skip_space(raw, position)) < len(raw):
            try:
                value, position = decoder.raw_decode(raw, position)
            except ValueError:
                raise self.error(Retryable, f"{what}: the answer is not JSON lines: "
                                            f"{raw[position:position + 80]!r}") from None
            values.append(value)
        return values

    async def chunks(self, response: aiohttp.ClientResponse, what: str) -> AsyncIterator[bytes]:
        """The body as it arrives, transport failures mapped."""
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.failure(what, exc) from None


def car_upload(stream: AsyncIterator[bytes], filename: str) -> aiohttp.MultipartWriter:
    """A multipart/form-data body with the CAR as its one file part, sent as the stream yields it."""
    form = aiohttp.MultipartWriter("form-data")
    part = aiohttp.payload.AsyncIterablePayload(stream, content_type=CAR_MEDIA)
    part.set_content_disposition("form-data", name="file", filename=filename)
    form.append_payload(part)
    return form


async def close_stream(stream: AsyncIterator[bytes]) -> None:
    """Close a CAR stream the upload stopped reading, so its reader (a thread, a file) lets go now."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        # A reset leaves the upload's writer task inside the stream; that task ends it itself.
        with contextlib.suppress(RuntimeError):
            await aclose()


def error_detail(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if isinstance(found, dict):
        error = found.get("error")
        if isinstance(error, dict):  # PSA Failure: {"error": {"reason", "details"}}
            text = ": ".join(str(error[key]) for key in ("reason", "details") if error.get(key))
        elif isinstance(error, str):
            text = error
        else:  # Kubo {"Message"}, Cluster {"message"}
            text = str(found.get("Message") or found.get("message") or text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "…"


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position
