"""The IPFS Pinning Service API (v1.0.0) under /psa, and the background worker that fulfils its requests.

I/O edge, thin: requests are validated here, stored and settled by Node,
fetched by node.fetch. Every endpoint needs a bearer token. Errors are the
spec's Failure JSON, `{"error": {"reason": "NOT_FOUND", "details": "..."}}`,
rendered by this sub-app's own middleware. A request moves queued → pinning
→ pinned | failed; a DAG already complete here is pinned before POST returns.
The worker lives with the app (cleanup_ctx) and, at start, resumes every
request left queued or pinning by the last run.
Spec: ../shared/spec/ipfs-pinning-service.yaml; choices where it is silent
are in docs/http-api.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

from node import cid as cids
from node.errors import InputError, NodeError, Unauthorized
from node.fetch import Fetcher
from node.index import MATCHES, PIN_STATUSES, PinRequest, PinRequestQuery
from node.netpolicy import NetworkPolicy
from node.node import Node
from node.web.bodies import read_limited
from node.web.context import NODE, OPTIONS, node_of, offload, options_of, require_token

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_NAME: Final = 255
MAX_ORIGINS: Final = 20
MAX_CID_FILTER: Final = 10
MAX_META_KEYS: Final = 1000
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 10
FETCHES_AT_ONCE: Final = 4
log = logging.getLogger("artkeep.psa")


def setup(app: web.Application) -> None:
    """Mount the Pinning Service API at /psa and tie its worker to the app's life."""
    worker = PinWorker()
    app[WORKER] = worker
    app.cleanup_ctx.append(worker.run)
    psa = web.Application(middlewares=[_failures])
    psa.router.add_get("/pins", _list)
    psa.router.add_post("/pins", _add)
    psa.router.add_get("/pins/{requestid}", _get)
    psa.router.add_post("/pins/{requestid}", _replace)
    psa.router.add_delete("/pins/{requestid}", _delete)
    app.add_subapp("/psa", psa)


class PinWorker:
    """Fetches queued requests in the background, FETCHES_AT_ONCE at a time, one task per request."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._node: Node | None = None
        self._fetcher: Fetcher | None = None
        self._slots = asyncio.Semaphore(FETCHES_AT_ONCE)

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: open the fetcher, resume unsettled requests; at cleanup, stop every fetch."""
        options = app[OPTIONS]
        policy = NetworkPolicy.parse(options.fetch_allow_networks)
        async with Fetcher(policy, timeout=options.fetch_timeout,
                           max_bytes=options.max_upload_bytes) as fetcher:
            self._node, self._fetcher = app[NODE], fetcher
            for request in await offload(self._node.unsettled_pin_requests):
                log.info("resuming pin request %s for %s", request.requestid, request.root)
                self.submit(request)
            try:
                yield
            finally:
                tasks = list(self._tasks.values())
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._node = self._fetcher = None

    def submit(self, request: PinRequest) -> None:
        if self._node is None or request.requestid in self._tasks:
            return
        task = asyncio.create_task(self._fulfil(request), name=f"pin request {request.requestid}")
        self._tasks[request.requestid] = task
        task.add_done_callback(lambda done: self._finished(request, done))

    def cancel(self, requestid: str) -> None:
        task = self._tasks.get(requestid)
        if task is not None:
            task.cancel()

    def _finished(self, request: PinRequest, task: asyncio.Task[None]) -> None:
        self._tasks.pop(request.requestid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("pin request %s for %s crashed; it resumes at the next start", request.requestid,
                      request.root, exc_info=task.exception())

    async def _fulfil(self, request: PinRequest) -> None:
        node, fetcher = self._node, self._fetcher
        assert node is not None and fetcher is not None
        async with self._slots:
            if not await offload(node.start_pin_request, request.requestid):
                return  # deleted or settled while it waited
            try:
                intake = await fetcher.fetch(node, cids.parse(request.root), request.origins)
                await offload(node.finish_pin_request, request.requestid, intake)
            except NodeError as exc:
                await offload(node.fail_pin_request, request.requestid, exc.message)


WORKER: Final = web.AppKey("psa_worker", PinWorker)


# --- handlers

async def _add(request: web.Request) -> web.Response:
    await require_token(request, write=True)
    return await _store(request, None)


async def _replace(request: web.Request) -> web.Response:
    await require_token(request, write=True)
    old = request.match_info["requestid"]
    response = await _store(request, old)
    request.config_dict[WORKER].cancel(old)
    return response


async def _store(request: web.Request, replacing: str | None) -> web.Response:
    body = await read_limited(request, options_of(request).max_request_bytes)
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send the Pin object as application/json")
    root, pin_request = _pin_request(body)
    stored = await offload(node_of(request).add_pin_request, root, pin_request, replacing)
    if stored.status == "queued":
        request.config_dict[WORKER].submit(stored)
    return web.json_response(_status(stored, _delegates(request)), status=202)


async def _get(request: web.Request) -> web.Response:
    await require_token(request, write=True)
    found = await offload(node_of(request).get_pin_request, request.match_info["requestid"])
    return web.json_response(_status(found, _delegates(request)))


async def _delete(request: web.Request) -> web.Response:
    await require_token(request, write=True)
    requestid = request.match_info["requestid"]
    await offload(node_of(request).remove_pin_request, requestid)
    request.config_dict[WORKER].cancel(requestid)
    return web.Response(status=202)


async def _list(request: web.Request) -> web.Response:
    await require_token(request, write=True)
    count, found = await offload(node_of(request).find_pin_requests, _query(request.query))
    delegates = _delegates(request)
    return web.json_response({"count": count, "results": [_status(item, delegates) for item in found]})


@web.middleware
async def _failures(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as the spec's Failure JSON; reason is the HTTP status name, details the message."""
    try:
        return await handler(request)
    except NodeError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
        return _failure(exc.http_status, exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {name: value for name, value in exc.headers.items() if name in ("Allow", "Retry-After")}
        return _failure(exc.status, exc.text or exc.reason, kept)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return _failure(500, "unexpected error; see the server log", {})


def _failure(status: int, details: str, headers: Mapping[str, str]) -> web.Response:
    reason = HTTPStatus(status).name if status in HTTPStatus._value2member_map_ else "ERROR"
    return web.json_response({"error": {"reason": reason, "details": details}}, status=status,
                             headers=headers)


# --- the wire format: Pin in, PinStatus and PinResults out

def _pin_request(body: bytes) -> tuple[cids.Cid, PinRequest]:
    """The stored request for a Pin object, or InputError saying what is wrong with it."""
    try:
        pin = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not JSON: {exc}") from None
    if not isinstance(pin, dict):
        raise InputError("the body must be a Pin object")
    text = pin.get("cid")
    if not isinstance(text, str):
        raise InputError("Pin.cid is required and must be a string")
    root = cids.parse(text)
    name = pin.get("name")
    if "name" in pin and (not isinstance(name, str) or len(name) > MAX_NAME):
        raise InputError(f"Pin.name must be a string of at most {MAX_NAME} characters")
    origins = pin.get("origins", [])
    if (not isinstance(origins, list) or len(origins) > MAX_ORIGINS
            or not all(isinstance(origin, str) for origin in origins) or len(set(origins)) != len(origins)):
        raise InputError(f"Pin.origins must be at most {MAX_ORIGINS} distinct strings")
    meta = _meta(pin.get("meta", {}), "Pin.meta")
    created_us = time.time_ns() // 1000
    return root, PinRequest(uuid.uuid4().hex, text, str(root), name, tuple(origins), meta, "queued",
                            created_us, {}, ())


def _meta(value: object, what: str) -> dict[str, str]:
    if (not isinstance(value, dict) or len(value) > MAX_META_KEYS
            or not all(isinstance(item, str) for item in value.values())):
        raise InputError(f"{what} must be an object of at most {MAX_META_KEYS} string values")
    return value


def _query(query: Mapping[str, str]) -> PinRequestQuery:
    """GET /pins filters; InputError for anything the spec's parameter schemas refuse."""
    arguments: dict[str, Any] = {}
    if "cid" in query:
        texts = _list_param(query, "cid", MAX_CID_FILTER)
        # A string that is no CID matches nothing; a valid one matches however it was written.
        arguments["roots"] = tuple({spelling for root in map(_cid_or_none, texts) if root is not None
                                    for spelling in _spellings(root)})
    if "name" in query:
        if len(query["name"]) > MAX_NAME:
            raise InputError(f"name must be at most {MAX_NAME} characters")
        arguments["name"] = query["name"]
    match = query.get("match", "exact")
    if match not in MATCHES:
        raise InputError(f"match must be one of {', '.join(MATCHES)}")
    arguments["match"] = match
    if "status" in query:
        statuses = _list_param(query, "status", len(PIN_STATUSES))
        if not set(statuses) <= set(PIN_STATUSES):
            raise InputError(f"status must be a comma-separated list of {', '.join(PIN_STATUSES)}")
        arguments["statuses"] = tuple(statuses)
    for key in ("before", "after"):
        if key in query:
            arguments[f"{key}_us"] = parse_rfc3339(query[key])
    limit = query.get("limit", str(DEFAULT_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise InputError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    arguments["limit"] = int(limit)
    if "meta" in query:
        try:
            arguments["meta"] = _meta(json.loads(query["meta"]), "meta")
        except ValueError:
            raise InputError("meta must be a JSON object of strings") from None
    return PinRequestQuery(**arguments)


def _list_param(query: Mapping[str, str], key: str, most: int) -> list[str]:
    items = query[key].split(",")
    if len(items) > most or len(set(items)) != len(items):
        raise InputError(f"{key} takes at most {most} distinct comma-separated values")
    return items


def _cid_or_none(text: str) -> cids.Cid | None:
    try:
        return cids.parse(text)
    except InputError:
        return None


def _spellings(root: cids.Cid) -> set[str]:
    """The ways pins.cid may print root: as given, as CIDv1, and as CIDv0 when it can be one."""
    v1 = root.to_v1()
    spellings = {str(root), str(v1)}
    if v1.codec == cids.DAG_PB and v1.multihash.startswith(b"\x12\x20") and len(v1.multihash) == 34:
        spellings.add(str(cids.Cid(0, cids.DAG_PB, v1.multihash)))
    return spellings


def _status(request: PinRequest, delegates: list[str]) -> dict[str, object]:
    pin: dict[str, object] = {"cid": request.cid, "origins": list(request.origins),
                              "meta": dict(request.meta)}
    if request.name is not None:
        pin["name"] = request.name
    return {"requestid": request.requestid, "status": request.status,
            "created": format_rfc3339(request.created_us), "pin": pin, "delegates": delegates,
            "info": dict(request.info)}


def _delegates(request: web.Request) -> list[str]:
    """Our own address as an HTTP multiaddr: where a client can reach our gateway and this API."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    host, port = (sockname[0], sockname[1]) if sockname else (request.url.host or "localhost",
                                                               request.url.port or 80)
    protocol = "ip6" if ":" in host else "ip4" if host.replace(".", "").isdigit() else "dns"
    return [f"/{protocol}/{host}/tcp/{port}/{'https' if request.secure else 'http'}"]


# --- RFC 3339 timestamps, as integer microseconds since 1970 so paging by `before` is exact

_RFC3339: Final = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?"
                             r"(?:[Zz]|([+-])(\d\d):(\d\d))")
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_rfc3339(text: str) -> int:
    """Microseconds since 1970 (UTC) of an RFC 3339 date-time; InputError if it is not one."""
    found = _RFC3339.fullmatch(text)
    if not found:
        raise InputError(f"{text!r:.60} is not an RFC 3339 date-time (e.g. 2020-07-27T17:32:28.276Z)")
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    sign, offset_hours, offset_minutes = found[8], int(found[9] or 0), int(found[10] or 0)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if (not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month - 1] + (leap and month == 2)
            or hour > 23 or minute > 59 or second > 60 or offset_hours > 23 or offset_minutes > 59):
        raise InputError(f"{text!r:.60} is not a valid date-time")
    fraction = int((found[7] or ".0")[1:7].ljust(6, "0"))
    offset = (offset_hours * 60 + offset_minutes) * (-1 if sign == "-" else 1)
    seconds = ((_days_from_civil(year, month, day) * 24 + hour) * 60 + minute - offset) * 60 + second
    return seconds * 1_000_000 + fraction


def format_rfc3339(microseconds: int) -> str:
    seconds, fraction = divmod(microseconds, 1_000_000)
    days, seconds = divmod(seconds, 86400)
    year, month, day = _civil_from_days(days)
    return (f"{year:04d}-{month:02d}-{day:02d}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:"
            f"{seconds % 60:02d}.{fraction:06d}Z")


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm; any year)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + (3 if month_index < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day

