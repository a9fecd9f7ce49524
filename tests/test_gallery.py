"""The gallery over plain HTTP: pages, search, paging, thumbnails, login and CSRF, import, static export."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sqlite3
import struct
import time
import zipfile
import zlib
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from node import sources
from node.index import FindingRow, Index
from node.node import Node, Rescued
from node.profiles import get_profile
from node.remotes.base import PlaceSpec
from node.search import GalleryEntry, GalleryQuery
from node.thumbnails import NoPreview, render
from node.web.gallery_auth import SESSION_COOKIE, session_key, session_token_id, session_value
from tests.conftest import SHARED, ArtkeepCli, Served

IMAGES = SHARED / "fixtures" / "images"
COMFY = IMAGES / "comfyui_lora_multiple.png"  # prompt "masterpiece best quality girl", two LoRAs
A1111 = IMAGES / "a1111_cropped.png"  # "photo of a duck", seed 235284042
FORGE = IMAGES / "forge_neo.png"
BOMB = IMAGES / "png_decompression_dos.png"
HOSTILE_PROMPT = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> lighthouse at dusk'
HOSTILE_NEGATIVE = "</pre><script>window.__xss = 3</script> blurry"


def hostile_png(path: Path) -> Path:
    """A real PNG whose A1111 parameters try to inject markup and script into any page that shows them."""
    info = PngInfo()
    info.add_text("parameters", f"{HOSTILE_PROMPT} <lora:detail_tweaker:0.8>\n"
                                f"Negative prompt: {HOSTILE_NEGATIVE}\n"
                                "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 777, Size: 64x64, "
                                'Model: <b onmouseover="window.__xss = 4">evil</b>')
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 120, 40)).save(path, pnginfo=info)
    return path


def broken_png(path: Path) -> Path:
    """A PNG cut off where its pixels begin: it sniffs as PNG and keeps its metadata, but nothing decodes."""
    data = FORGE.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: data.index(b"IDAT") - 4])  # before the first image data chunk's length
    return path


def small_png(path: Path, number: int) -> Path:
    info = PngInfo()
    info.add_text("parameters", f"tiny study number{number}\n"
                                f"Steps: 4, Sampler: Euler, Seed: {1000 + number}, Size: 8x8, Model: tiny")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (number % 256, 80, 160)).save(path, pnginfo=info)
    return path


def png_text(path: Path, key: str) -> str:
    with Image.open(path) as image:
        return str(image.info[key])


def rescue(node: Node, folder: Path, source: str | None = None) -> dict[str, Rescued]:
    results = list(node.rescue(sources.walk([folder]), get_profile("unixfs-v1-2025"), source=source))
    return {Path(result.display).name: result for result in results}


class Page(HTMLParser):
    """The parts of a page the tests look at: links, images, text, forms' hidden fields."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[dict[str, str]] = []
        self.scripts: list[dict[str, str]] = []
        self.hidden: dict[str, str] = {}
        self.text = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        if tag == "a" and "href" in found:
            self.links.append(found["href"])
        elif tag == "img":
            self.images.append(found)
        elif tag == "script":
            self.scripts.append(found)
        elif tag == "input" and found.get("type") == "hidden":
            self.hidden[found.get("name", "")] = found.get("value", "")
        elif tag == "link" and "href" in found:
            self.links.append(found["href"])

    def handle_data(self, data: str) -> None:
        self.text += data

    def works(self) -> list[str]:
        return [link.removeprefix("/works/") for link in self.links
                if re.fullmatch(r"/works/[a-z0-9]+", link)]


async def get(served: Served, path: str,
              headers: dict[str, str] | None = None) -> tuple[int, str, Mapping[str, str]]:
    """Status, body (as text, bytes that are not UTF-8 replaced) and headers; redirects not followed."""
    async with served.session.get(served.url + path, allow_redirects=False, headers=headers) as response:
        return response.status, (await response.read()).decode(errors="replace"), response.headers


def leftovers(node: Node) -> list[Path]:
    """What uploads left under HOME/uploads."""
    folder = node.home / "uploads"
    return list(folder.iterdir()) if folder.exists() else []


@pytest.fixture
async def gallery(served: Served, tmp_path: Path) -> tuple[Served, dict[str, Rescued]]:
    """The daemon holding real works: three generators, a hostile prompt and a broken image."""
    folder = tmp_path / "art"
    for source in (COMFY, A1111, FORGE):
        (folder / source.name).parent.mkdir(parents=True, exist_ok=True)
        (folder / source.name).write_bytes(source.read_bytes())
    hostile_png(folder / "hostile.png")
    broken_png(folder / "broken.png")
    results = await asyncio.to_thread(rescue, served.node, folder)
    assert all(result.work is not None for result in results.values()), results
    return served, results


# --- the grid and search

async def test_the_gallery_lists_every_work_newest_first(gallery: tuple[Served, dict[str, Rescued]]) -> None:
    served, works = gallery
    status, html, headers = await get(served, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    page = Page(html)
    assert sorted(page.works()) == sorted(str(result.work) for result in works.values())
    assert "5 works" in page.text
    thumbs = {image["src"] for image in page.images}
    assert {f"/thumbs/{result.cid}" for result in works.values()} == thumbs
    assert all(image["alt"] for image in page.images)  # every thumbnail says what it shows
    # The JSON index of the APIs moved to /api.
    status, body, _ = await get(served, "/api")
    assert status == 200 and json.loads(body)["apis"]["gallery"] == "/"


async def test_every_page_is_locked_down_by_its_headers(gallery: tuple[Served, dict[str, Rescued]]) -> None:
    served, works = gallery
    work = works["comfyui_lora_multiple.png"]
    for path in ("/", f"/works/{work.work}", f"/thumbs/{work.cid}", "/health", "/import", "/login",
                 "/static/gallery.js", "/works/not-a-cid"):
        _, _, headers = await get(served, path)
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp, path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path


async def test_search_by_words_negative_model_lora_seed_generator_and_date(
        gallery: tuple[Served, dict[str, Rescued]]) -> None:
    served, works = gallery

    async def found(query: str) -> set[str]:
        status, html, _ = await get(served, "/?" + query)
        assert status == 200, (query, html)
        return set(Page(html).works())

    comfy, a1111, hostile = (str(works[name].work) for name in ("comfyui_lora_multiple.png",
                                                                 "a1111_cropped.png", "hostile.png"))
    assert await found("q=duck") == {a1111}
    assert await found("q=mast+GIRL") == {comfy}  # prefixes of words, any case ("1girl" is another word)
    forge = {str(works["forge_neo.png"].work), str(works["broken.png"].work)}  # broken.png is a cut forge_neo
    assert await found("q=masterpiece") == {comfy, *forge}
    assert await found("q=masterpiece+duck") == set()  # every word must match
    assert await found("negative=bad+hands") == {comfy}
    assert await found("q=hands") == {comfy}  # words search the negative prompt too
    assert await found("model=REALISTIC_realisticVisionV20_v20") == {a1111}  # exact, any case
    assert await found("model=realistic") == set()
    assert await found("q=epiNoiseoffset") == {comfy}  # LoRA names are words too
    assert await found("lora=detail_tweaker") == {hostile}
    assert await found("seed=235284042") == {a1111}
    assert await found("generator=comfyui") == {comfy}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(await found(f"from={today}&to={today}")) == 5
    assert await found("to=2001-01-01") == set()
    # Whatever FTS5 syntax a user types is only ever text.
    for hostile_query in ('q=%22', 'q=NEAR(a+b)', 'q=prompt:duck', 'q=*', 'q=%22duck%22+OR+%22girl%22'):
        await found(hostile_query)
    status, html, _ = await get(served, "/?seed=twelve")
    assert status == 400 and "seed must be a whole number" in html


async def test_pages_follow_a_keyset_from_newest_to_oldest(served: Served, tmp_path: Path) -> None:
    for number in range(110):
        small_png(tmp_path / "many" / f"study{number:03}.png", number)
    works = await asyncio.to_thread(rescue, served.node, tmp_path / "many")
    seen: list[str] = []
    path: str | None = "/?q=study"
    pages = 0
    while path is not None:
        status, html, _ = await get(served, path)
        assert status == 200
        page = Page(html)
        seen += page.works()
        pages += 1
        older = [link for link in page.links if "before=" in link]
        path = unquote(older[0]).replace("&amp;", "&") if older else None
        if path is not None:
            assert "q=study" in path and "offset" not in path  # the filter rides along; no OFFSET paging
    assert pages == 3  # 48 + 48 + 14
    assert len(seen) == len(set(seen)) == 110
    recorded = {str(result.work): result for result in works.values()}
    assert set(seen) == set(recorded)
    # Newest first: the gallery's order is the index's record order, reversed.
    db = sqlite3.connect(served.node.home / "index.sqlite")
    order = [row[0] for row in db.execute("SELECT work FROM gallery ORDER BY id DESC")]
    db.close()
    assert seen == [work for work in order if work in recorded]


# --- a work's page

async def test_the_work_page_shows_how_it_was_made(gallery: tuple[Served, dict[str, Rescued]]) -> None:
    served, works = gallery
    comfy = works["comfyui_lora_multiple.png"]
    status, html, _ = await get(served, f"/works/{comfy.work}")
    assert status == 200
    page = Page(html)
    for text in ("masterpiece best quality girl", "bad hands", "513173432917412", "v1-5-pruned-emaonly.ckpt",
                 "epiNoiseoffset_v2.safetensors", "euler", str(comfy.work), str(comfy.cid),
                 "Signature valid, signed by this node", "No places yet", "artkeep place add"):
        assert text in page.text, text
    assert f"/ipfs/{comfy.work}" in page.links and f"/ipfs/{comfy.cid}" in page.links
    assert any(image["src"] == f"/works/{comfy.work}/image" and image["alt"] for image in page.images)
    assert "/?model=v1-5-pruned-emaonly.ckpt" in page.links  # "more with this model"
    # The ComfyUI workflow comes back as a JSON download, byte for byte what the PNG carried.
    async with served.session.get(f"{served.url}/works/{comfy.work}/files/workflow.json") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["Content-Disposition"] == 'attachment; filename="workflow.json"'
        workflow = await response.read()
    assert json.loads(workflow) == json.loads(png_text(COMFY, "workflow"))
    assert "nodes" in json.loads(workflow)
    async with served.session.get(f"{served.url}/works/{comfy.work}/files/params.json") as response:
        params = json.loads(await response.read())
    assert params["params"]["seed"] == 513173432917412 and params["generator"]["family"] == "comfyui"
    async with served.session.get(f"{served.url}/works/{comfy.work}/files/parameters.txt") as response:
        assert "Seed: 513173432917412" in await response.text()
    async with served.session.get(f"{served.url}/works/{comfy.work}/image") as response:
        assert response.headers["Content-Type"] == "image/png"
        assert "immutable" in response.headers["Cache-Control"]
        assert await response.read() == COMFY.read_bytes()
    status, _, _ = await get(served, f"/works/{comfy.work}/files/prompt.txt")
    assert status == 404


async def test_the_where_is_it_panel_lists_every_place_and_its_state(
        gallery: tuple[Served, dict[str, Rescued]]) -> None:
    served, works = gallery
    work = str(works["a1111_cropped.png"].work)
    node = served.node
    node.add_place(PlaceSpec("attic-kubo", "kubo", "http://127.0.0.1:9"))
    node.add_place(PlaceSpec("friend", "peer", "http://127.0.0.1:9"))
    now = time.time()
    node.index.add_copies([(work, "attic-kubo", 1000), (work, "friend", 1000)], now)
    node.index.update_copy(work, "attic-kubo", state="verified", verified=now, last_check=now, due=None)
    node.index.update_copy(work, "friend", state="corrupt", last_check=now, due=None,
                           last_error="block bafk… did not match")
    status, html, _ = await get(served, f"/works/{work}")
    page = Page(html)
    assert status == 200
    for text in ("attic-kubo", "verified: fetched back and re-hashed", "friend",
                 "corrupt: the place returned wrong bytes", "block bafk… did not match",
                 "1 of 2 wanted copies"):
        assert text in page.text, text


async def test_metadata_is_shown_as_text_never_as_markup(gallery: tuple[Served, dict[str, Rescued]]) -> None:
    served, works = gallery
    hostile = works["hostile.png"]
    for path in ("/?q=lighthouse", f"/works/{hostile.work}"):
        status, html, _ = await get(served, path)
        assert status == 200
        page = Page(html)
        for markup in ("<script>window.__xss", "<img src=x", "<b onmouseover"):
            assert markup not in html, (path, markup)
        assert all(script.get("src", "").startswith("/static/") for script in page.scripts)
        assert all(not key.startswith("on") for image in page.images for key in image)
    assert "<script>window.__xss = 1</script>" in Page(html).text  # the prompt, shown as the text it is


# --- thumbnails

async def test_thumbnails_are_made_once_and_cached_forever(
        gallery: tuple[Served, dict[str, Rescued]]) -> None:
    served, works = gallery
    image = works["forge_neo.png"].cid
    async with served.session.get(f"{served.url}/thumbs/{image}") as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/webp"
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        first = await response.read()
    thumbnail = Image.open(io.BytesIO(first))
    assert max(thumbnail.size) == 480 and thumbnail.format == "WEBP"
    cached = served.node._thumbnails.path_of(image)  # type: ignore[arg-type]
    assert cached.read_bytes() == first and str(cached).startswith(str(served.node.home / "cache"))
    made = cached.stat().st_mtime_ns
    async with served.session.get(f"{served.url}/thumbs/{image}") as response:
        assert await response.read() == first
    assert cached.stat().st_mtime_ns == made  # served from the cache, not made again


async def test_a_broken_image_gets_a_placeholder_never_an_error(
        gallery: tuple[Served, dict[str, Rescued]], tmp_path: Path) -> None:
    served, works = gallery
    bomb = (await asyncio.to_thread(rescue, served.node, _copy(BOMB, tmp_path / "bomb")))[BOMB.name]
    for image in (works["broken.png"].cid, bomb.cid):
        async with served.session.get(f"{served.url}/thumbs/{image}") as response:
            assert response.status == 200, image
            assert response.headers["Content-Type"] == "image/svg+xml"
            assert b"no preview" in await response.read()
    status, _, _ = await get(served, "/thumbs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    assert status == 404  # only images of works get thumbnails
    status, html, _ = await get(served, f"/works/{works['broken.png'].work}")
    assert status == 200 and "hatsune miku" in html  # its metadata is all still there


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width×height pixels and holds almost none: a bomb, as its header shows it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(8000, 7000), (20000, 20000)])  # over our limit; over Pillow's
def test_thumbnails_never_decode_an_image_over_the_pixel_limit(width: int, height: int) -> None:
    started = time.perf_counter()
    with pytest.raises(NoPreview, match=r"pixels"):  # our limit's message, or Pillow's bomb error
        render(png_header_only(width, height))
    assert time.perf_counter() - started < 1  # refused from the header, not after decoding


def _copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / source.name).write_bytes(source.read_bytes())
    return folder


# --- health

async def test_the_health_page_shows_copies_queue_audits_and_disk(
        gallery: tuple[Served, dict[str, Rescued]]) -> None:
    served, works = gallery
    status, html, _ = await get(served, "/health")
    assert status == 200
    assert "No places yet" in html and "No audits have run yet" in html
    work = str(works["comfyui_lora_multiple.png"].work)
    served.node.index.add_findings([FindingRow(work, "attic", "sampled", "corrupt", "bafkreibad", 3, 300, 0.1,
                                               "wrong bytes", time.time())])
    status, html, _ = await get(served, "/health")
    page = Page(html)
    assert "5 works" in " ".join(page.text.split()) and "attic" in page.text and "corrupt" in page.text
    assert f"/works/{work}" in page.links and "on disk in" in page.text


# --- login, sessions and CSRF

async def login(served: Served) -> aiohttp.ClientSession:
    """A fresh browser-like session, logged in through the form."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.get(served.url + "/login") as response:
        csrf = Page(await response.text()).hidden["csrf"]
    fields = {"csrf": csrf, "token": served.token, "next": "/import"}
    async with session.post(served.url + "/login", data=fields, allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/import"
        cookie = response.headers["Set-Cookie"]
        assert SESSION_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return session


async def test_a_private_gallery_asks_for_a_login(serve_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    served: Served = await serve_app(gallery_public=False)
    await asyncio.to_thread(rescue, served.node, _copy(A1111, tmp_path / "in"))
    status, _, headers = await get(served, "/?q=duck")
    assert status == 303 and headers["Location"] == "/login?next=/?q=duck"
    work = served.node.gallery_page(GalleryQuery()).cards[0]
    for path in (f"/thumbs/{work.image_cid}", f"/works/{work.work}/image"):
        status, _, _ = await get(served, path)
        assert status == 401, path
    session = await login(served)
    try:
        async with session.get(served.url + "/?q=duck") as response:
            assert response.status == 200 and "photo of a duck" in await response.text()
        async with session.get(f"{served.url}/thumbs/{work.image_cid}") as response:
            assert response.headers["Cache-Control"].startswith("private,")
        # Revoking the token ends every session made with it.
        for token in served.node.tokens():
            served.node.revoke_token(token.id)
        async with session.get(served.url + "/", allow_redirects=False) as response:
            assert response.status == 303
    finally:
        await session.close()


async def test_private_reads_make_the_gallery_private_too(serve_app) -> None:  # type: ignore[no-untyped-def]
    served: Served = await serve_app(serve_private_reads=True)
    status, _, headers = await get(served, "/")
    assert status == 303 and headers["Location"].startswith("/login")
    status, _, _ = await get(served, "/", headers=served.auth)
    assert status == 200  # an API token works too


async def test_login_refuses_a_wrong_token_and_a_forged_form(served: Served) -> None:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        async with session.get(served.url + "/login") as response:
            csrf = Page(await response.text()).hidden["csrf"]
        wrong = {"csrf": csrf, "token": "artkeep_nope"}
        async with session.post(served.url + "/login", data=wrong) as response:
            assert response.status == 401 and "not known here" in await response.text()
        # A form posted from another site carries no valid CSRF token (and no visitor cookie of ours).
        async with session.post(served.url + "/login", data={"csrf": "0" * 64, "token": served.token},
                                allow_redirects=False) as response:
            assert response.status == 403 and SESSION_COOKIE not in response.headers.get("Set-Cookie", "")
        async with served.session.post(served.url + "/login", data={"csrf": csrf, "token": served.token},
                                       allow_redirects=False) as response:
            assert response.status == 403  # the token belongs to another visitor's cookie
    finally:
        await session.close()


async def test_logout_needs_the_form_token_and_ends_the_session(served: Served) -> None:
    session = await login(served)
    try:
        async with session.post(served.url + "/logout", data={}, allow_redirects=False) as response:
            assert response.status == 403
        async with session.get(served.url + "/import") as response:
            page = Page(await response.text())
            assert "import-form" in await response.text()
        async with session.post(served.url + "/logout", data={"csrf": page.hidden["csrf"]},
                                allow_redirects=False) as response:
            assert response.status == 303
        async with session.get(served.url + "/import") as response:
            assert "needs a login" in await response.text()
    finally:
        await session.close()


def test_a_session_cookie_cannot_be_forged_or_stretched() -> None:
    key, other = session_key(b"\1" * 32), session_key(b"\2" * 32)
    value = session_value(key, "abcd1234", now=1000.0)
    assert session_token_id(key, value, now=1001.0) == "abcd1234"
    assert session_token_id(other, value, now=1001.0) is None  # another node's key
    token_id, expires, mac = value.split(".")
    assert session_token_id(key, f"{token_id}.{int(expires) + 10**6}.{mac}", now=1001.0) is None
    assert session_token_id(key, f"ffff0000.{expires}.{mac}", now=1001.0) is None
    assert session_token_id(key, value, now=float(expires) + 1) is None  # expired


# --- import from the browser

def form(csrf: str | None, files: list[tuple[str, bytes]]) -> aiohttp.FormData:
    data = aiohttp.FormData()
    if csrf is not None:
        data.add_field("csrf", csrf)
    for name, content in files:
        data.add_field("files", io.BytesIO(content), filename=name, content_type="application/octet-stream")
    return data


async def test_import_stores_uploads_and_reports_each_file(served: Served) -> None:
    session = await login(served)
    try:
        async with session.get(served.url + "/import") as response:
            csrf = Page(await response.text()).hidden["csrf"]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("inner/forge_neo.png", FORGE.read_bytes())
            zipped.writestr("inner/forge_neo.txt", "a caption the artist kept next to the image")
        upload = [("comfyui_lora_multiple.png", COMFY.read_bytes()),
                  ("../../etc/evil.png", A1111.read_bytes()),
                  ("batch.zip", archive.getvalue()), ("empty.png", b"")]
        async with session.post(served.url + "/import", data=form(csrf, upload)) as response:
            assert response.status == 200
            html = await response.text()
        page = Page(html)
        rows = re.findall(r'<tr class="(\w+)">\s*<td>([^<]+)</td>', html)
        report = {name: outcome for outcome, name in rows}
        assert report == {"comfyui_lora_multiple.png": "new", "evil.png": "new",  # "../../etc/" dropped
                          "batch.zip:inner/forge_neo.png": "new", "batch.zip:inner/forge_neo.txt": "sidecar",
                          "empty.png": "new"}
        assert "4 new, 1 sidecar" in page.text
        work_links = [link for link in page.links if link.startswith("/works/")]
        assert len(work_links) == 4  # three images and the sidecar's image
        assert served.node.count_works() == 3
        assert not leftovers(served.node)
        shown = served.node.gallery_page(GalleryQuery(text="hatsune")).cards
        assert [card.name for card in shown] == ["inner/forge_neo.png"]
        # The same files again: duplicates, stored once.
        async with session.post(served.url + "/import", data=form(csrf, upload[:1])) as response:
            assert "1 duplicate" in await response.text()
        assert served.node.count_works() == 3
    finally:
        await session.close()


async def test_import_refuses_without_login_or_form_token(served: Served) -> None:
    files = [("comfyui_lora_multiple.png", COMFY.read_bytes())]
    async with served.session.post(served.url + "/import", data=form(None, files)) as response:
        assert response.status == 401
    session = await login(served)
    try:
        async with session.post(served.url + "/import", data=form("0" * 64, files)) as response:
            assert response.status == 403
        async with session.post(served.url + "/import", data=form(None, files)) as response:
            assert response.status == 403
    finally:
        await session.close()
    assert served.node.count_works() == 0
    assert not leftovers(served.node)


async def test_import_with_an_api_token_answers_json(served: Served) -> None:
    files = [("a1111_cropped.png", A1111.read_bytes())]
    async with served.session.post(served.url + "/import", data=form(None, files),
                                   headers={**served.auth, "Accept": "application/json"}) as response:
        assert response.status == 200
        report = await response.json()
    assert report["files"][0]["outcome"] == "new" and report["files"][0]["work"].startswith("bafyrei")


async def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(serve_app) -> None:  # type: ignore[no-untyped-def]
    served: Served = await serve_app(serve_max_upload_bytes=100_000)
    files = [("forge_neo.png", FORGE.read_bytes())]
    async with served.session.post(served.url + "/import", data=form(None, files),
                                   headers=served.auth) as response:
        assert response.status == 413
    assert served.node.count_works() == 0
    assert not leftovers(served.node)


# --- works recorded before the gallery existed

async def test_works_recorded_before_the_gallery_are_listed_by_a_backfill(
        gallery: tuple[Served, dict[str, Rescued]]) -> None:
    served, works = gallery
    node = served.node
    # Forget the gallery rows, as an index from before the gallery migration had none.
    db = sqlite3.connect(node.home / "index.sqlite", isolation_level=None)
    db.execute("DELETE FROM gallery_loras")
    db.execute("INSERT INTO gallery_text (gallery_text) VALUES ('delete-all')")
    db.execute("DELETE FROM gallery")
    db.close()
    assert node.gallery_count() == 0
    _, html, _ = await get(served, "/")
    assert "5 older works are still being indexed" in " ".join(html.split())
    assert node.gallery_backfill(batch=2) == 2  # a run stopped after one batch ...
    while node.gallery_backfill(batch=2):  # ... is finished by the next
        pass
    assert node.gallery_backfill() == 0  # and running it again changes nothing
    assert node.gallery_count() == 5
    _, html, _ = await get(served, "/?q=duck")
    assert Page(html).works() == [str(works["a1111_cropped.png"].work)]
    _, html, _ = await get(served, "/")
    recorded = [str(works[name].work) for name in ("comfyui_lora_multiple.png", "a1111_cropped.png")]
    assert set(recorded) <= set(Page(html).works())


# --- the static export

def test_the_static_export_opens_from_disk_and_links_only_its_own_files(artkeep: ArtkeepCli,
                                                                        tmp_path: Path) -> None:
    folder = tmp_path / "art"
    for source in (COMFY, A1111):
        _copy(source, folder)
    hostile_png(folder / "hostile.png")
    broken_png(folder / "broken.png")
    imported = artkeep("import", folder, "--json")
    assert imported.returncode == 0, imported
    works = {Path(str(record["path"])).name: str(record["work"]) for record in imported.records()}
    site = tmp_path / "site"
    run = artkeep("export", "--site", site, "--json")
    assert run.returncode == 0, run
    assert run.records()[-1]["works"] == 4
    pages = sorted(site.rglob("*.html"))
    assert {page.name for page in pages} == {"index.html", *(f"{work}.html" for work in works.values())}
    for page_path in pages:
        html = page_path.read_text()
        assert "<script>window.__xss" not in html
        page = Page(html)
        targets = page.links + [image["src"] for image in page.images] + [s["src"] for s in page.scripts]
        for target in targets:
            if target.startswith(("ipfs://", "#")):  # a gateway link; a place on the same page
                continue
            assert not target.startswith(("/", "http:", "https:")), (page_path, target)  # relative only
            resolved = (page_path.parent / unquote(urlsplit(target).path)).resolve()
            assert resolved.is_file() and site.resolve() in resolved.parents, (page_path, target)
    comfy = works["comfyui_lora_multiple.png"]
    params = json.loads((site / "files" / comfy / "params.json").read_text())
    assert params["params"]["seed"] == 513173432917412
    workflow = json.loads((site / "files" / comfy / "workflow.json").read_text())
    assert workflow == json.loads(png_text(COMFY, "workflow"))
    # Each work's CAR brings the whole work back into another node.
    other = artkeep.at(tmp_path / "other")
    restored = other("import", site / "works" / f"{comfy}.car", "--json")
    assert restored.returncode == 0, restored
    assert other("show", comfy, "--json").records()[0]["params"]["seed"] == 513173432917412
    # A rerun keeps what is named by CID and rewrites the pages.
    car = site / "works" / f"{comfy}.car"
    made = car.stat().st_mtime_ns
    assert artkeep("export", "--site", site).returncode == 0
    assert car.stat().st_mtime_ns == made


def test_a_batch_of_works_recorded_together_gets_distinct_ids_in_order_and_each_work_once(
        tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    index.add_works([(f"work{i}", f"image{i}", f"{i}.png", "test", "a1111") for i in range(300)])
    created = int(index.work_row("work0").created * 1_000_000)  # type: ignore[union-attr]

    def entry(i: int) -> GalleryEntry:
        return GalleryEntry(f"work{i}", f"image{i}", f"{i}.png", "a1111", None, "m", str(i), 8, 8,
                            f"prompt {i}", "", (f"lora{i % 3}",))

    assert index.add_gallery_entries([entry(0)]) == 1
    # Work 0 again, work 1 twice, and 298 more, all from one record time: each listed once.
    assert index.add_gallery_entries([entry(0), entry(1), entry(1), *map(entry, range(2, 300))]) == 299
    cards = index.gallery_page(GalleryQuery(limit=400))
    assert len(cards) == 300
    assert [card.work for card in reversed(cards)] == [f"work{i}" for i in range(300)]  # newest first
    assert sorted(card.id for card in cards) == list(range(created, created + 300))
    assert index.add_gallery_entries(map(entry, range(300))) == 0
