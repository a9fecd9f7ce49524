"""What the gallery pages show, built from work records and index rows, and the templates that show it.

No sockets and no store access: records, cards and replication views come
in, view objects and HTML go out, so the daemon (node.web.gallery) and the
static export (node.site) render the very same pages. Links differ between
the two (absolute paths on the daemon, relative file names in an export),
so every URL comes from a Links object. Every value from a record is
untrusted: templates autoescape everything and mark nothing safe.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import jinja2

from node import restore, signing
from node import work as work_records
from node.cid import Cid
from node.dagcbor import Value
from node.errors import SignatureInvalid
from node.replication import FindingView, Health, Whereabouts
from node.search import Card

STATIC_FILES = ("gallery.css", "gallery.js")
ALT_CHARS = 240  # alt text: the start of the prompt is what the image shows
# Raw entries that hold a workflow or graph: (file name offered, what to call it).
WORKFLOW_LABELS = {
    "workflow": "ComfyUI workflow (drop it on ComfyUI)", "prompt": "ComfyUI API graph",
    "invokeai_graph": "InvokeAI graph", "invokeai_workflow": "InvokeAI workflow",
    "invokeai_metadata": "InvokeAI metadata", "sui_image_params": "SwarmUI parameters",
    "Comment": "NovelAI settings",
}
PARAMS_FILE, INFOTEXT_FILE = "params.json", "parameters.txt"
STATE_WORDS = {
    "verified": "verified: fetched back and re-hashed", "claimed": "claimed: the place says it holds it",
    "pushed": "pushed: sent, not confirmed yet", "pending": "pending: waiting to be pushed",
    "failing": "failing: pushes or checks keep failing", "corrupt": "corrupt: the place returned wrong bytes",
}


class Links(Protocol):
    """Every URL a page shows: the daemon's absolute paths, or an export's relative file names."""

    live: bool  # a running daemon (search, health, import, login) rather than a static export

    def static(self, name: str) -> str: ...
    def home(self) -> str: ...
    def work(self, cid: str) -> str: ...
    def thumb(self, image_cid: str) -> str: ...
    def image(self, work: str, image_cid: str, media_type: str | None) -> str: ...
    def download(self, work: str, name: str) -> str: ...
    def raw(self, work: str, index: int) -> str | None: ...
    def gateway(self, cid: str) -> str: ...
    def car(self, work: str) -> str | None: ...
    def filtered(self, **params: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CardView:
    url: str
    thumb: str
    alt: str
    title: str
    caption: str
    size: str


@dataclass(frozen=True, slots=True)
class GalleryView:
    cards: list[CardView]
    total: int
    next_url: str | None
    first_url: str | None  # back to the newest works, when this is not the first page
    query: Mapping[str, str]  # the filters as the form shows them
    families: list[tuple[str, int]]
    filtered: bool
    advanced: bool  # a filter beyond the words is set, so the form opens it
    pending: int = 0  # works recorded before the gallery, still being indexed
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FieldView:
    label: str
    value: str
    filter_url: str | None = None


@dataclass(frozen=True, slots=True)
class LoraView:
    name: str
    weight: str
    hash: str
    filter_url: str | None


@dataclass(frozen=True, slots=True)
class RawView:
    index: int
    source: str
    key: str
    text: str | None  # shown inline when the record holds it as text
    size: int
    note: str  # what the entry is when it is not shown inline
    url: str | None


@dataclass(frozen=True, slots=True)
class DownloadView:
    label: str
    name: str
    url: str


@dataclass(frozen=True, slots=True)
class SignatureView:
    valid: bool
    signer: str | None  # the signer's peer ID
    ours: bool
    message: str


@dataclass(frozen=True, slots=True)
class CopyRowView:
    place: str
    kind: str
    state: str
    state_words: str
    last_check: str
    verified: str
    error: str | None


@dataclass(frozen=True, slots=True)
class WhereView:
    target: int
    verified_copies: int
    summary: str
    safe: bool
    copies: list[CopyRowView]
    detection: str | None


@dataclass(frozen=True, slots=True)
class WorkView:
    cid: str
    image_cid: str
    title: str
    image_url: str
    image_alt: str
    pixels: str
    file_size: str
    media_type: str
    generator: str
    prompt: str
    negative_prompt: str
    infotext: str
    fields: list[FieldView]
    loras: list[LoraView]
    other_params: str | None  # pretty JSON
    c2pa: str | None
    raw: list[RawView]
    downloads: list[DownloadView]
    provenance: list[FieldView]
    sidecars: list[FieldView]
    signature: SignatureView
    where: WhereView | None
    gateway_work: str
    gateway_image: str
    car_url: str | None


@dataclass(frozen=True, slots=True)
class HealthView:
    works: int
    listed: int
    health: Health
    findings: list[dict[str, str]]
    blocks: int
    stored: str
    places_hint: bool = field(default=False)


# --- gallery grid

def card_view(card: Card, links: Links) -> CardView:
    prompt = " ".join(card.prompt.split())
    alt = prompt[:ALT_CHARS] + ("…" if len(prompt) > ALT_CHARS else "") if prompt else f"image {card.name}"
    family = card.family if card.family != "none" else None
    caption = " · ".join(part for part in (card.model, family) if part)
    size = f"{card.width}×{card.height}" if card.width and card.height else ""
    return CardView(links.work(card.work), links.thumb(card.image_cid), alt, card.name or card.work,
                    caption, size)


# --- work page

def work_view(cid: str, record: Mapping[str, Value], links: Links, *, our_key: bytes,
              where: Whereabouts | None, downloads: Collection[str]) -> WorkView:
    """A work's page; `downloads` are the file names (download_names) it may offer."""
    image = _mapping(record.get("image"))
    generator = _mapping(record.get("generator"))
    params = restore.plain_params(_mapping(record.get("params")))
    provenance = _mapping(record.get("provenance"))
    image_cid = str(work_records.image_cid(record))
    media_type = _str(image.get("media_type"))
    title = _str(provenance.get("file_name")) or image_cid
    prompt = _str(params.get("prompt"))
    raw = [entry for entry in _list(record.get("raw")) if isinstance(entry, dict)]
    family, tool = _str(generator.get("family")) or "none", _str(generator.get("tool"))
    return WorkView(
        cid=cid, image_cid=image_cid, title=title,
        image_url=links.image(cid, image_cid, media_type or None),
        image_alt=(" ".join(prompt.split())[:ALT_CHARS] or f"image {title}"),
        pixels=f"{image.get('width')}×{image.get('height')}" if image.get("width") else "unknown",
        file_size=human_size(image.get("size")), media_type=media_type or "unknown",
        generator=f"{family} ({tool})" if tool else family,
        prompt=prompt, negative_prompt=_str(params.get("negative_prompt")),
        infotext=_infotext(raw, params),
        fields=_fields(params, links),
        loras=[LoraView(_str(lora.get("name")), _plain(lora.get("weight")), _str(lora.get("hash")),
                        links.filtered(lora=_str(lora.get("name"))) if lora.get("name") else None)
               for lora in _list(params.get("loras")) if isinstance(lora, dict)],
        other_params=_pretty(params.get("other_params")) if params.get("other_params") else None,
        c2pa=_pretty(record["c2pa"]) if record.get("c2pa") else None,
        raw=[_raw_view(index, entry, cid, links) for index, entry in enumerate(raw)],
        downloads=_downloads(cid, downloads, links),
        provenance=[FieldView("file name", title), FieldView("source", _str(provenance.get("source"))),
                    FieldView("recorded", _str(provenance.get("imported_at")))],
        sidecars=[FieldView(_str(side.get("name")), human_size(side.get("size")))
                  for side in _list(record.get("sidecars")) if isinstance(side, dict)],
        signature=signature_view(record, our_key),
        where=where_view(where) if where is not None else None,
        gateway_work=links.gateway(cid), gateway_image=links.gateway(image_cid), car_url=links.car(cid),
    )


def _fields(params: Mapping[str, Any], links: Links) -> list[FieldView]:
    size = f"{params['width']}×{params['height']}" if params.get("width") and params.get("height") else ""
    model = _str(params.get("model"))
    seed = _plain(params.get("seed"))
    rows = [
        FieldView("seed", seed, links.filtered(seed=seed) if seed else None),
        FieldView("steps", _plain(params.get("steps"))),
        FieldView("sampler", _str(params.get("sampler"))),
        FieldView("scheduler", _str(params.get("scheduler"))),
        FieldView("CFG scale", _plain(params.get("cfg_scale"))),
        FieldView("size", size),
        FieldView("model", model, links.filtered(model=model) if model else None),
        FieldView("model hash", _str(params.get("model_hash"))),
    ]
    return [row for row in rows if row.value]


def _infotext(raw: Sequence[Mapping[str, Value]], params: Mapping[str, Any]) -> str:
    """The original A1111 infotext when the image had one, else one built from the fields."""
    for entry in raw:
        text = entry.get("text")
        if entry.get("key") == "parameters" and isinstance(text, str) and "Steps:" in text:
            return text
    return restore.a1111_infotext(params)


def _raw_view(index: int, entry: Mapping[str, Value], work: str, links: Links) -> RawView:
    source, key = _str(entry.get("source")), _str(entry.get("key"))
    if isinstance(entry.get("text"), str):
        text = str(entry["text"])
        return RawView(index, source, key, text, len(text.encode()), "", None)
    if isinstance(entry.get("bytes"), bytes):
        size = len(entry["bytes"])  # type: ignore[arg-type]
        return RawView(index, source, key, None, size, f"{human_size(size)} of binary data",
                       links.raw(work, index))
    stored = entry.get("size")
    size = stored if isinstance(stored, int) else 0
    kind = "text" if entry.get("encoding") == "utf-8" else "binary data"
    return RawView(index, source, key, None, size, f"{human_size(size)} of {kind}, stored as its own file",
                   links.raw(work, index))


def _downloads(work: str, names: Collection[str], links: Links) -> list[DownloadView]:
    found = [DownloadView(WORKFLOW_LABELS[key], name, links.download(work, name))
             for key, name in restore.WORKFLOW_FILES.items() if name in names]
    found.append(DownloadView("Parameters as JSON", PARAMS_FILE, links.download(work, PARAMS_FILE)))
    found.append(DownloadView("A1111 parameters (PNG Info text)", INFOTEXT_FILE,
                              links.download(work, INFOTEXT_FILE)))
    return found


def download_names(record: Mapping[str, Value]) -> set[str]:
    """Names work_file may answer for this record (a workflow entry that is not JSON answers None)."""
    raw = [entry for entry in _list(record.get("raw")) if isinstance(entry, dict)]
    return {restore.WORKFLOW_FILES[key] for key in restore.WORKFLOW_FILES
            if any(entry.get("key") == key and ("text" in entry or entry.get("encoding") == "utf-8")
                   for entry in raw)} | {PARAMS_FILE, INFOTEXT_FILE}


def work_file(record: Mapping[str, Value], name: str, read_file: Callable[[Cid], bytes]) -> bytes | None:
    """The bytes of one download (params.json, parameters.txt, a workflow's JSON); None if there is none."""
    params = restore.plain_params(_mapping(record.get("params")))
    raw = [entry for entry in _list(record.get("raw")) if isinstance(entry, dict)]
    if name == PARAMS_FILE:
        return (json.dumps({"generator": record.get("generator"), "params": params}, ensure_ascii=False,
                           indent=2, default=str) + "\n").encode()
    if name == INFOTEXT_FILE:
        text = _infotext(raw, params)
        return (text if text.endswith("\n") else text + "\n").encode()
    keys = [key for key, file_name in restore.WORKFLOW_FILES.items() if file_name == name]
    for entry in raw:
        if keys and entry.get("key") == keys[0]:
            found = raw_text(entry, read_file)
            if found is not None and restore.is_json(found):
                return found.encode()
    return None


def raw_text(entry: Mapping[str, Value], read_file: Callable[[Cid], bytes]) -> str | None:
    """A raw entry's text, reading it from its own file if it was stored apart; None for binary data."""
    if isinstance(entry.get("text"), str):
        return str(entry["text"])
    file_cid = entry.get("file")
    if isinstance(file_cid, Cid) and entry.get("encoding") == "utf-8":
        return read_file(file_cid).decode("utf-8", "replace")
    return None


def raw_entry(record: Mapping[str, Value], index: int) -> Mapping[str, Value] | None:
    raw = [entry for entry in _list(record.get("raw")) if isinstance(entry, dict)]
    return raw[index] if 0 <= index < len(raw) else None


def signature_view(record: Mapping[str, Value], our_key: bytes) -> SignatureView:
    try:
        signer = work_records.verify_signature(dict(record))
    except SignatureInvalid as exc:
        return SignatureView(False, None, False, exc.message)
    ours = signer == our_key
    peer = signing.peer_id(signer)
    return SignatureView(True, peer, ours,
                         "valid, signed by this node" if ours else "valid, signed by another node")


def where_view(where: Whereabouts) -> WhereView:
    copies = [CopyRowView(copy.place, copy.kind, copy.state, STATE_WORDS.get(copy.state, copy.state),
                          when(copy.last_check), when(copy.verified), copy.error)
              for copy in where.places]
    safe = where.verified_copies >= where.target
    if not copies:
        summary = "no copies beyond this node yet"
    else:
        summary = f"{where.verified_copies} of {where.target} wanted copies verified"
    return WhereView(where.target, where.verified_copies, summary, safe, copies, where.detection)


# --- health page

def health_view(works: int, listed: int, health: Health, findings: Sequence[FindingView], blocks: int,
                stored: int) -> HealthView:
    rows = [{"at": when(finding.at), "cid": finding.cid, "place": finding.place or "this node",
             "level": finding.level, "result": finding.result, "block": finding.block or ""}
            for finding in findings]
    return HealthView(works, listed, health, rows, blocks, human_size(stored), places_hint=health.places == 0)


# --- formatting

def when(unix_time: float | None) -> str:
    if unix_time is None:
        return "never"
    return datetime.datetime.fromtimestamp(unix_time, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def human_size(size: object) -> str:
    if not isinstance(size, int) or isinstance(size, bool):
        return "unknown size"
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"


def _pretty(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def _plain(value: object) -> str:
    return "" if value is None else str(value)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


# --- templates and static files

def environment() -> jinja2.Environment:
    """The gallery's templates: autoescaped always, and strict about undefined names."""
    return jinja2.Environment(loader=jinja2.PackageLoader("node.web", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def static_files() -> dict[str, bytes]:
    folder = resources.files("node.web") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


def static_version(data: bytes) -> str:
    """A short content hash, so a static URL can be cached forever and still change with its file."""
    return hashlib.sha256(data).hexdigest()[:12]
