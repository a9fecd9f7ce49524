"""`artkeep export --site DIR`: a static copy of the gallery that opens from disk or from any IPFS gateway.

I/O edge. Renders the daemon's own templates (node.web.gallery_views) with
relative links only, so the folder works as file:// and under a gateway's
/ipfs/<cid>/ alike, and leaving artkeep never loses a work's context:

    DIR/index.html, page-2.html, …   the grid, newest first
    DIR/works/WORK.html              every parameter, the raw metadata, the signature
    DIR/works/WORK.car               the work's whole DAG: record, image, workflow files, sidecars
    DIR/files/WORK/params.json       the downloads: params.json, parameters.txt, workflow JSON
    DIR/images/IMAGE.png             the image, byte for byte
    DIR/thumbs/IMAGE.webp            the thumbnail (.svg: a placeholder)
    DIR/static/gallery.css, gallery.js

Files named by CID are written once and skipped on a rerun; pages are
rewritten. Every file is written to a temp file and renamed into place.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2

from node import cid as cids
from node import search
from node.errors import NodeError, PathError
from node.node import Node
from node.web import gallery_views as views

PAGE_SIZE = 96
SITE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; "
            "form-action 'none'")
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True, slots=True)
class SiteExport:
    folder: Path
    works: int
    pages: int
    failed: list[tuple[str, str]]  # (work, why) for works left out


class SiteLinks:
    """Relative links from a page `depth` folders below the site's root."""

    live = False

    def __init__(self, depth: int, thumbs: dict[str, str]) -> None:
        self._up = "../" * depth
        self._thumbs = thumbs  # image CID → its file under thumbs/ (a thumbnail or a placeholder)

    def static(self, name: str) -> str:
        return f"{self._up}static/{name}"

    def home(self) -> str:
        return f"{self._up}index.html"

    def work(self, cid: str) -> str:
        return f"{self._up}works/{cid}.html"

    def thumb(self, image_cid: str) -> str:
        return f"{self._up}thumbs/{self._thumbs.get(image_cid, image_cid + '.webp')}"

    def image(self, work: str, image_cid: str, media_type: str | None) -> str:
        return f"{self._up}images/{image_cid}.{EXTENSIONS.get(media_type or '', 'bin')}"

    def download(self, work: str, name: str) -> str:
        return f"{self._up}files/{work}/{name}"

    def raw(self, work: str, index: int) -> str | None:
        return None  # large raw entries live in the work's CAR

    def gateway(self, cid: str) -> str:
        return f"ipfs://{cid}"

    def car(self, work: str) -> str | None:
        return f"{self._up}works/{work}.car"

    def filtered(self, **params: str) -> str | None:
        return None  # no search without the daemon


def export_site(node: Node, folder: Path) -> SiteExport:
    """Write the static gallery of every work into folder (created if needed)."""
    while node.gallery_backfill():
        pass
    env = views.environment()
    exported = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    thumbs: dict[str, str] = {}
    our_key = node.public_key()
    failed: list[tuple[str, str]] = []
    works = pages = 0
    for name, data in views.static_files().items():
        _write(folder / "static" / name, data, replace=True)  # a newer artkeep may bring newer ones
    page_links = SiteLinks(0, thumbs)
    total = node.gallery_count()
    for number, page in enumerate(_pages(node), start=1):
        shown = []
        for card in page.cards:
            try:
                _export_work(node, folder, card, thumbs, our_key, env, exported)
            except NodeError as exc:
                failed.append((card.work, exc.message))
                continue
            shown.append(card)
        works += len(shown)
        view = views.GalleryView(
            cards=[views.card_view(card, page_links) for card in shown], total=total,
            next_url=_page_name(number + 1) if page.next_before is not None else None,
            first_url=_page_name(1) if number > 1 else None, query={}, families=[], filtered=False,
            advanced=False)
        html = env.get_template("gallery.html").render(links=page_links, viewer=None, section="gallery",
                                                       csp=SITE_CSP, exported=exported, view=view)
        _write(folder / _page_name(number), html.encode(), replace=True)
        pages = number
    return SiteExport(folder, works, pages, failed)


def _pages(node: Node) -> Iterator[search.Page]:
    """Every page of the gallery, newest first; one (empty) page when there are no works."""
    before: int | None = None
    while True:
        page = node.gallery_page(search.GalleryQuery(before=before, limit=PAGE_SIZE))
        yield page
        if page.next_before is None:
            return
        before = page.next_before


def _page_name(number: int) -> str:
    return "index.html" if number == 1 else f"page-{number}.html"


def _export_work(node: Node, folder: Path, card: search.Card, thumbs: dict[str, str], our_key: bytes,
                 env: jinja2.Environment, exported: str) -> None:
    work = cids.parse(card.work)
    record = node.work(work)
    image = cids.parse(card.image_cid)
    links = SiteLinks(1, thumbs)
    thumbnail = node.thumbnail(image)
    thumb_name = f"{card.image_cid}.{'webp' if thumbnail.media_type == 'image/webp' else 'svg'}"
    thumbs[card.image_cid] = thumb_name
    _write(folder / "thumbs" / thumb_name, thumbnail.data)
    info = record.get("image")
    media_type = info.get("media_type") if isinstance(info, dict) else None
    image_path = folder / links.image(card.work, card.image_cid, str(media_type)).removeprefix("../")
    if not image_path.exists():
        _write(image_path, b"".join(node.cat(card.image_cid)))
    car = folder / "works" / f"{card.work}.car"
    if not car.exists():
        _write_with(car, lambda write: node.export_car(work, write))

    def read_file(cid: cids.Cid) -> bytes:
        return b"".join(node.cat(str(cid)))

    written = set()
    for name in sorted(views.download_names(record)):
        data = views.work_file(record, name, read_file)
        if data is not None:
            _write(folder / "files" / card.work / name, data, replace=True)
            written.add(name)
    view = views.work_view(card.work, record, links, our_key=our_key, where=None, downloads=written)
    html = env.get_template("work.html").render(links=links, viewer=None, section="", csp=SITE_CSP,
                                                exported=exported, work=view)
    _write(folder / "works" / f"{card.work}.html", html.encode(), replace=True)


def _write(path: Path, data: bytes, *, replace: bool = False) -> None:
    if not replace and path.exists():
        return
    _write_with(path, lambda write: write(data))


def _write_with(path: Path, produce: Callable[[Callable[[bytes], object]], object]) -> None:
    """Temp file in the target folder, fsync, rename: a file of the site is whole or absent."""
    temp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            produce(handle.write)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise PathError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
