"""The gallery: HTML pages to browse, search and import works, served by the daemon at `/`.

I/O edge; thin handlers over Node, every Node call on a worker thread.
Pages are rendered on the server (node.web.gallery_views, jinja2 with
autoescape) and work without JavaScript; gallery.js only adds copy
buttons, infinite scroll and upload progress. Every response carries a
strict Content-Security-Policy (scripts and styles only from /static,
nothing inline) and nosniff. Reading is open when gallery.public is on;
anything that changes state (import, login, logout) needs a form with this
node's CSRF token, and import a login (or an API token).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import BodyPartReader, web

from node import cid as cids
from node import restore, search, sources
from node import work as work_records
from node.blockstore import Usage
from node.cid import Cid
from node.errors import FormRefused, InputError, NodeError, NotFound, TooLarge, Unauthorized, UploadStalled
from node.node import Node, Rescued
from node.profiles import get_profile
from node.web import gallery_auth as auth
from node.web import gallery_views as views
from node.web.context import NODE, OPTIONS, node_of, offload, options_of, require_token

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
FOREVER = "max-age=31536000, immutable"  # content named by CID never changes
USAGE_MAX_AGE = 60.0  # seconds a store walk for the health page is reused
FINDINGS_SHOWN = 50
UPLOAD_SOURCE = "gallery upload"  # provenance source of works imported from the browser
FIELD_LIMIT = 4096  # bytes of a plain form field in an upload
BACKFILL_BATCH = 256
PREFIXES = ("/works/", "/thumbs/", "/static/", "/health", "/import", "/login", "/logout")  # and "/"
ADVANCED_FILTERS = ("negative", "model", "lora", "seed", "generator", "from", "to")  # behind "More filters"
log = logging.getLogger("artkeep.gallery")


class ServerLinks:
    """The daemon's URLs: absolute paths on this node."""

    live = True

    def __init__(self, versions: dict[str, str]) -> None:
        self._versions = versions

    def static(self, name: str) -> str:
        return f"/static/{name}?v={self._versions[name]}"

    def home(self) -> str:
        return "/"

    def work(self, cid: str) -> str:
        return f"/works/{cid}"

    def thumb(self, image_cid: str) -> str:
        return f"/thumbs/{image_cid}"

    def image(self, work: str, image_cid: str, media_type: str | None) -> str:
        return f"/works/{work}/image"

    def download(self, work: str, name: str) -> str:
        return f"/works/{work}/files/{name}"

    def raw(self, work: str, index: int) -> str | None:
        return f"/works/{work}/raw/{index}"

    def gateway(self, cid: str) -> str:
        return f"/ipfs/{cid}"

    def car(self, work: str) -> str | None:
        return f"/ipfs/{work}?format=car"

    def filtered(self, **params: str) -> str | None:
        return "/?" + urllib.parse.urlencode(params)


@dataclass
class Gallery:
    """The gallery's share of the app: templates, static files, the session key, a cached store walk."""

    env: jinja2.Environment
    static: dict[str, bytes]
    links: ServerLinks
    key: bytes
    public: bool
    usage: tuple[float, Usage] | None = None
    backfill_stop: asyncio.Event = field(default_factory=asyncio.Event)


GALLERY = web.AppKey("gallery", Gallery)


def setup(app: web.Application) -> None:
    static = views.static_files()
    app[GALLERY] = Gallery(views.environment(), static,
                           ServerLinks({name: views.static_version(data) for name, data in static.items()}),
                           auth.session_key(app[NODE].key_seed()), app[OPTIONS].gallery_public)
    app.router.add_get("/", _page(_gallery))
    app.router.add_get("/works/{cid}", _page(_work))
    app.router.add_get("/works/{cid}/image", _page(_image, html=False))
    app.router.add_get("/works/{cid}/files/{name}", _page(_work_file, html=False))
    app.router.add_get("/works/{cid}/raw/{index:[0-9]+}", _page(_raw, html=False))
    app.router.add_get("/thumbs/{cid}", _page(_thumbnail, html=False))
    app.router.add_get("/health", _page(_health))
    app.router.add_get("/import", _page(_import_form))
    app.router.add_post("/import", _page(_import))
    app.router.add_get("/login", _page(_login_form))
    app.router.add_post("/login", _page(_login))
    app.router.add_post("/logout", _page(_logout))
    app.router.add_get("/static/{name}", _page(_static, html=False))
    app.cleanup_ctx.append(_background)


def gallery_of(request: web.Request) -> Gallery:
    return request.config_dict[GALLERY]


async def _background(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: clear uploads a crash left behind, then list works recorded before the gallery existed."""
    node, gallery = app[NODE], app[GALLERY]
    await offload(_clear_uploads, node)
    task = asyncio.create_task(_backfill(node, gallery.backfill_stop), name="gallery backfill")
    yield
    gallery.backfill_stop.set()
    await task  # a batch in flight is one short transaction: let it finish rather than cut it


async def _backfill(node: Node, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            if not await offload(node.gallery_backfill, BACKFILL_BATCH):
                return
        except NodeError as exc:
            log.error("gallery: cannot list older works: %s", exc.message)
            return


# --- every response: security headers, errors as pages, a login when the gallery is private

def _page(handler: Handler, *, html: bool = True) -> Handler:
    """The handler with the security headers, errors as pages, and a private gallery's pages sending
    a visitor who is not logged in to the login form (files that are not pages answer 401)."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except Unauthorized as exc:
            if request.method == "GET" and exc.http_status == 401 and html:
                next_path = urllib.parse.quote(request.path_qs, safe="/?=&")
                response = _see_other(f"/login?next={next_path}")
            else:
                response = await _error(request, exc)
        except NodeError as exc:
            response = await _error(request, exc)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    return wrapped


def _see_other(location: str) -> web.Response:
    """A redirect after a form (or to the login form): the browser follows it with a GET."""
    return web.Response(status=303, headers={"Location": location})


async def _error(request: web.Request, exc: NodeError) -> web.Response:
    viewer = auth.viewer_of(request, gallery_of(request).key, None)
    titles = {400: "That request is not right", 401: "Log in first", 403: "Refused", 404: "Not found",
              413: "Too large", 408: "The upload stalled"}
    return _render(request, "error.html", viewer, status=exc.http_status, section="",
                   title=titles.get(exc.http_status, "Something went wrong"), message=exc.message,
                   code=exc.http_status)


def _render(request: web.Request, template: str, viewer: auth.Viewer, *, status: int = 200,
            section: str, **context: Any) -> web.Response:
    gallery = gallery_of(request)
    html = gallery.env.get_template(template).render(links=gallery.links, viewer=viewer, section=section,
                                                     csp=CSP, **context)
    response = web.Response(text=html, content_type="text/html", charset="utf-8", status=status,
                            headers={"Cache-Control": "no-store"})
    auth.remember_visitor(request, response, viewer)
    return response


async def _viewer(request: web.Request) -> auth.Viewer:
    live = None
    if auth.SESSION_COOKIE in request.cookies:
        live = frozenset(token.id for token in await offload(node_of(request).tokens))
    return auth.viewer_of(request, gallery_of(request).key, live)


async def _bearer(request: web.Request) -> bool:
    """True for a request with a valid API token; Unauthorized for one with a wrong token."""
    if "Authorization" not in request.headers:
        return False
    await require_token(request, write=True)
    return True


async def _reader(request: web.Request) -> auth.Viewer:
    """The viewer of a read-only page; Unauthorized when the gallery is private and they are not logged in."""
    viewer = await _viewer(request)
    if not gallery_of(request).public and not viewer.logged_in and not await _bearer(request):
        raise Unauthorized("this gallery is private: log in with an API token")
    return viewer


def _cache_control(request: web.Request, lasting: bool = True) -> str:
    if not lasting:
        return "no-store"
    return ("public, " if gallery_of(request).public else "private, ") + FOREVER


# --- pages

async def _gallery(request: web.Request) -> web.StreamResponse:
    viewer = await _reader(request)
    node, gallery = node_of(request), gallery_of(request)
    error = None
    try:
        query = search.parse_query(request.query)
    except InputError as exc:
        query, error = search.GalleryQuery(), exc.message

    def read() -> tuple[search.Page, list[tuple[str, int]], int, int]:
        return node.gallery_page(query), node.gallery_families(), node.count_works(), node.gallery_count()

    page, families, works, listed = await offload(read)
    params = query.params()
    view = views.GalleryView(
        cards=[views.card_view(card, gallery.links) for card in page.cards],
        total=listed,
        next_url=("/?" + urllib.parse.urlencode(query.params(page.next_before))
                  if page.next_before is not None else None),
        first_url=("/?" + urllib.parse.urlencode(params)) if query.before is not None else None,
        query=params, families=families, filtered=query.filtered,
        advanced=any(params.get(name) for name in ADVANCED_FILTERS),
        pending=max(0, works - listed), error=error)
    return _render(request, "gallery.html", viewer, status=400 if error else 200, section="gallery",
                   view=view)


async def _work(request: web.Request) -> web.StreamResponse:
    viewer = await _reader(request)
    node = node_of(request)
    cid = cids.parse(request.match_info["cid"])
    record, where, our_key = await offload(lambda: (node.work(cid), node.whereis(cid), node.public_key()))
    view = views.work_view(str(cid), record, gallery_of(request).links, our_key=our_key, where=where,
                           downloads=views.download_names(record))
    return _render(request, "work.html", viewer, section="", work=view)


async def _image(request: web.Request) -> web.StreamResponse:
    await _reader(request)
    node = node_of(request)
    record = await offload(node.work, cids.parse(request.match_info["cid"]))
    image = work_records.image_cid(record)
    media_type = str(record["image"].get("media_type") or "")  # type: ignore[union-attr]
    if media_type not in ("image/png", "image/jpeg", "image/webp"):
        media_type = "application/octet-stream"
    pieces = await offload(node.cat, str(image))
    first = await offload(next, pieces, b"")  # the first block read: a missing image fails before headers
    response = web.StreamResponse(headers={"Content-Type": media_type,
                                           "Cache-Control": _cache_control(request)})
    response.headers.update({"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})
    await response.prepare(request)
    piece: bytes = first
    try:
        while piece:
            await response.write(piece)
            piece = await offload(next, pieces, b"")
    except NodeError as exc:  # a block rotted mid-stream: the headers are gone, so cut the connection
        log.warning("image %s: stream cut: %s", image, exc.message, extra={"cid": str(image)})
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def _work_file(request: web.Request) -> web.StreamResponse:
    await _reader(request)
    node = node_of(request)
    name = request.match_info["name"]
    record = await offload(node.work, cids.parse(request.match_info["cid"]))
    if name not in views.download_names(record):
        raise NotFound(f"this work has no {name}")
    data = await offload(views.work_file, record, name, _file_reader(node))
    if data is None:
        raise NotFound(f"this work's {name} is not JSON")
    media_type = "application/json" if name.endswith(".json") else "text/plain"
    return web.Response(body=data, content_type=media_type, charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": _cache_control(request)})


async def _raw(request: web.Request) -> web.StreamResponse:
    await _reader(request)
    node = node_of(request)
    record = await offload(node.work, cids.parse(request.match_info["cid"]))
    entry = views.raw_entry(record, int(request.match_info["index"]))
    if entry is None:
        raise NotFound("this work has no such metadata entry")
    text = await offload(views.raw_text, entry, _file_reader(node))
    headers = {"Cache-Control": _cache_control(request)}
    if text is not None:
        return web.Response(text=text, content_type="text/plain", charset="utf-8", headers=headers)
    stored = entry.get("bytes")
    file_cid = entry.get("file")
    data = stored if isinstance(stored, bytes) else (
        await offload(_file_reader(node), file_cid) if isinstance(file_cid, Cid) else b"")
    key = restore.safe_name(str(entry.get("key")), "entry")
    headers["Content-Disposition"] = f'attachment; filename="{key}.bin"'
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


def _file_reader(node: Node) -> Callable[[Cid], bytes]:
    def read(cid: Cid) -> bytes:
        return b"".join(node.cat(str(cid)))
    return read


async def _thumbnail(request: web.Request) -> web.StreamResponse:
    await _reader(request)
    node = node_of(request)
    image = cids.parse(request.match_info["cid"])
    if not await offload(node.gallery_has_image, image):
        raise NotFound(f"no work in the gallery has the image {image}")
    thumbnail = await offload(node.thumbnail, image)
    return web.Response(body=thumbnail.data, content_type=thumbnail.media_type,
                        headers={"Cache-Control": _cache_control(request, thumbnail.lasting)})


async def _health(request: web.Request) -> web.StreamResponse:
    viewer = await _reader(request)
    node, gallery = node_of(request), gallery_of(request)
    if gallery.usage is None or time.monotonic() - gallery.usage[0] > USAGE_MAX_AGE:
        gallery.usage = (time.monotonic(), await offload(node.usage))
    usage = gallery.usage[1]
    works, listed, health, findings = await offload(lambda: (
        node.count_works(), node.gallery_count(), node.replication_health(),
        node.recent_findings(FINDINGS_SHOWN)))
    view = views.health_view(works, listed, health, findings, usage.blocks, usage.bytes)
    return _render(request, "health.html", viewer, section="health", view=view)


async def _static(request: web.Request) -> web.StreamResponse:
    data = gallery_of(request).static.get(request.match_info["name"])
    if data is None:
        raise NotFound("no such file")
    media_type = mimetypes.guess_type(request.match_info["name"])[0] or "application/octet-stream"
    return web.Response(body=data, content_type=media_type, charset="utf-8",
                        headers={"Cache-Control": "public, " + FOREVER})


# --- login

def _safe_next(value: str) -> str:
    """Only a path on this node: never another site (`//host`, `https://…`)."""
    return value if value.startswith("/") and not value.startswith(("//", "/\\")) else "/"


async def _login_form(request: web.Request) -> web.StreamResponse:
    viewer = await _viewer(request)
    return _render(request, "login.html", viewer, section="login", error=None,
                   next=_safe_next(request.query.get("next", "/")))


async def _form(request: web.Request, viewer: auth.Viewer) -> dict[str, str]:
    """A urlencoded form's fields, after checking its CSRF token."""
    form = await request.post()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    if not auth.csrf_ok(gallery_of(request).key, viewer.visitor, fields.get(auth.CSRF_FIELD, "")):
        raise FormRefused()
    return fields


async def _login(request: web.Request) -> web.StreamResponse:
    viewer = await _viewer(request)
    fields = await _form(request, viewer)
    next_path = _safe_next(fields.get("next", "/"))
    token = await offload(node_of(request).token_for, fields.get("token", "").strip())
    if token is None:
        return _render(request, "login.html", viewer, status=401, section="login", next=next_path,
                       error="That token is not known here (or was revoked). Create one with "
                             "`artkeep token create`.")
    log.info("gallery: login with token %s (%s)", token.id, token.name)
    response = _see_other(next_path)
    auth.set_cookie(request, response, auth.SESSION_COOKIE,
                    auth.session_value(gallery_of(request).key, token.id, time.time()), auth.SESSION_SECONDS)
    return response


async def _logout(request: web.Request) -> web.StreamResponse:
    viewer = await _viewer(request)
    await _form(request, viewer)
    response = _see_other("/")
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    return response


# --- import from the browser

@dataclass(frozen=True, slots=True)
class ReportRow:
    name: str
    outcome: str
    work_url: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    summary: str
    rows: list[ReportRow]


async def _import_form(request: web.Request) -> web.StreamResponse:
    viewer = await _reader(request)
    return _render(request, "import.html", viewer, section="import", report=None,
                   max_upload=views.human_size(options_of(request).max_upload_bytes))


async def _import(request: web.Request) -> web.StreamResponse:
    """Stream every file part to a folder under HOME/uploads, rescue them, answer the per-file report."""
    viewer = await _viewer(request)
    gallery, node, options = gallery_of(request), node_of(request), options_of(request)
    bearer = await _bearer(request)
    if not bearer and not viewer.logged_in:
        raise Unauthorized("log in (with an API token) to import")
    checked = bearer or auth.csrf_ok(gallery.key, viewer.visitor, request.headers.get(auth.CSRF_HEADER, ""))
    limit = options.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the upload of {request.content_length} bytes is over the {limit}-byte limit")
    if request.content_type != "multipart/form-data":
        raise InputError("send the files as multipart/form-data")
    try:
        body = await request.multipart()
    except (AssertionError, ValueError, KeyError) as exc:  # aiohttp refuses a missing or bad boundary
        raise InputError(f"malformed multipart body: {exc!r}") from None
    folder = await offload(_new_upload_folder, node)
    try:
        names: set[str] = set()
        used = 0
        while (part := await _stalling(body.next(), options.upload_timeout)) is not None:
            if not isinstance(part, BodyPartReader):
                raise InputError("nested multipart bodies are not accepted")
            if part.filename is None:  # a plain field: the CSRF token comes before the files
                value = await _read_field(part, options.upload_timeout)
                if part.name == auth.CSRF_FIELD:
                    checked = checked or auth.csrf_ok(gallery.key, viewer.visitor,
                                                      value.decode(errors="replace"))
                continue
            if not checked:
                raise FormRefused()
            # Clients URL-escape file names; only the last segment is kept, as restore does.
            name = _unique(restore.safe_name(urllib.parse.unquote(part.filename), "upload"), names)
            used += await _save_part(part, _upload_path(folder, name), limit - used, options.upload_timeout)
        if not checked:
            raise FormRefused()
        if not names:
            raise InputError("no file was chosen")
        profile = get_profile(options.import_profile)
        # Plain files are walked as one folder, so sidecars find their images; archives one by one.
        roots = [folder / "files", *sorted((folder / "archives").glob("*"))]
        results = await offload(lambda: list(node.rescue(sources.walk(roots), profile, source=UPLOAD_SOURCE)))
    finally:
        await offload(shutil.rmtree, folder, True)
    log.info("gallery: imported %d files from the browser", len(names))
    report = _report(results, folder, gallery.links)
    if "application/json" in request.headers.get("Accept", "") and "text/html" not in request.headers.get(
            "Accept", ""):
        return web.json_response({"summary": report.summary, "files": [
            {"name": row.name, "outcome": row.outcome, "work": row.work_url.rsplit("/", 1)[-1]
             if row.work_url else None, "detail": row.detail} for row in report.rows]})
    return _render(request, "import.html", viewer, section="import", report=report,
                   max_upload=views.human_size(options.max_upload_bytes))


async def _stalling(step: Awaitable[Any], timeout: float) -> Any:
    try:
        return await asyncio.wait_for(step, timeout)
    except TimeoutError:
        raise UploadStalled(f"no data for {timeout:g} s; the upload was dropped") from None
    except ValueError as exc:  # aiohttp's word for broken multipart framing
        raise InputError(f"malformed multipart body: {exc}") from None


async def _read_field(part: BodyPartReader, timeout: float) -> bytes:
    value = bytearray()
    while chunk := await _stalling(part.read_chunk(FIELD_LIMIT), timeout):
        value += chunk
        if len(value) > FIELD_LIMIT:
            raise TooLarge(f"a form field is over {FIELD_LIMIT} bytes")
    return bytes(value)


async def _save_part(part: BodyPartReader, target: Path, limit: int, timeout: float) -> int:
    """Stream a file part to target; its size. TooLarge past limit bytes, UploadStalled if it stops."""
    size = 0
    handle = await offload(target.open, "wb")
    try:
        while chunk := await _stalling(part.read_chunk(256 * 1024), timeout):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the upload is over the {limit}-byte limit")
            await offload(handle.write, chunk)
    finally:
        await offload(handle.close)
    return size


def _uploads_folder(node: Node) -> Path:
    return node.home / "uploads"


def _clear_uploads(node: Node) -> None:
    """Remove what uploads cut off by a crash left (none is in flight before the daemon serves)."""
    shutil.rmtree(_uploads_folder(node), ignore_errors=True)
    _uploads_folder(node).mkdir(parents=True, exist_ok=True)


def _new_upload_folder(node: Node) -> Path:
    _uploads_folder(node).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=_uploads_folder(node)))
    for kind in ("files", "archives"):
        (folder / kind).mkdir()
    return folder


def _upload_path(folder: Path, name: str) -> Path:
    return folder / ("archives" if name.lower().endswith(".zip") else "files") / name


def _unique(name: str, taken: set[str]) -> str:
    """name, or name with a number in front when another part of the upload had it."""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{number}-{name}"
    taken.add(candidate)
    return candidate


def _report(results: list[Rescued], folder: Path, links: ServerLinks) -> Report:
    counts = {"new": 0, "duplicate": 0, "sidecar": 0, "failed": 0}
    rows = []
    prefixes = (f"{folder}/files/", f"{folder}/archives/")
    for result in results:
        counts[result.outcome] += 1
        name = _without(result.display, prefixes)
        detail = {"new": "", "duplicate": "already kept here",
                  "sidecar": f"kept with {result.sidecar_of or ''}",
                  "failed": result.error or ""}[result.outcome]
        work_url = links.work(str(result.work)) if result.work else None
        rows.append(ReportRow(name, result.outcome, work_url, _without(detail, prefixes)))
    summary = ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count)
    summary = summary or "nothing imported"
    return Report(summary, rows)


def _without(text: str, prefixes: tuple[str, ...]) -> str:
    """text with the upload folder's paths taken out: the report names files as the user chose them."""
    for prefix in prefixes:
        text = text.replace(prefix, "")
    return text
