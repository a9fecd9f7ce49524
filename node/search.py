"""Gallery search: what one gallery row holds, and the SQL that finds a page of rows.

Pure: a decoded work record in, the searchable facts out; a GalleryQuery in,
SQL text and parameters out (the index runs them). Text filters become an
SQLite FTS5 expression in which every word the user typed is a quoted
phrase, so no input can inject FTS5 syntax; everything else is a bound
parameter. Paging is by keyset: rows are ordered by `id` (the work's record
time in microseconds, unique), and the next page starts below the last id
shown, so page 5,000 costs what page 1 costs.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass

from node.dagcbor import Value
from node.errors import InputError

PAGE_SIZE = 48
MAX_PAGE_SIZE = 200
MAX_QUERY_WORDS = 32  # more words than any real search; keeps an FTS5 expression small
MAX_FILTER_CHARS = 512
_WORD = re.compile(r"\w", re.UNICODE)
_DAY_US = 86_400 * 1_000_000
# The FTS5 columns, in the order gallery_text declares them.
TEXT_COLUMNS = ("prompt", "negative_prompt", "model", "loras")
CARD_COLUMNS = ("g.id, g.work, g.image_cid, g.name, g.family, g.tool, g.model, g.seed, g.width, g.height,"
                " g.prompt")


@dataclass(frozen=True, slots=True)
class GalleryEntry:
    """The searchable facts of one work, as the gallery tables hold them."""

    work: str
    image_cid: str
    name: str
    family: str
    tool: str | None
    model: str | None
    seed: str | None  # decimal: seeds can pass 64 bits
    width: int | None  # pixels
    height: int | None
    prompt: str
    negative_prompt: str
    loras: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Card:
    """One work as the gallery grid shows it."""

    id: int
    work: str
    image_cid: str
    name: str
    family: str
    tool: str | None
    model: str | None
    seed: str | None
    width: int | None
    height: int | None
    prompt: str


@dataclass(frozen=True, slots=True)
class GalleryQuery:
    """What the user searched for; empty strings and None mean no filter."""

    text: str = ""  # words in the prompt, negative prompt, model or LoRA names
    negative: str = ""  # words in the negative prompt only
    model: str = ""  # the exact model name (case-insensitive)
    lora: str = ""  # the exact LoRA name (case-insensitive)
    seed: str = ""  # the exact seed, decimal
    generator: str = ""  # the generator family
    since: str = ""  # YYYY-MM-DD, first day recorded (UTC), inclusive
    until: str = ""  # YYYY-MM-DD, last day recorded (UTC), inclusive
    before: int | None = None  # keyset: only rows with a smaller id
    limit: int = PAGE_SIZE

    @property
    def filtered(self) -> bool:
        return any((self.text, self.negative, self.model, self.lora, self.seed, self.generator, self.since,
                    self.until))

    def params(self, before: int | None = None) -> dict[str, str]:
        """The query as URL parameters (non-empty only), with another keyset cursor."""
        values = {"q": self.text, "negative": self.negative, "model": self.model, "lora": self.lora,
                  "seed": self.seed, "generator": self.generator, "from": self.since, "to": self.until}
        out = {key: value for key, value in values.items() if value}
        if before is not None:
            out["before"] = str(before)
        return out


def parse_query(params: Mapping[str, str], *, limit: int = PAGE_SIZE) -> GalleryQuery:
    """A GalleryQuery from URL parameters; InputError names the first bad one."""
    def text(name: str) -> str:
        value = params.get(name, "").strip()
        if len(value) > MAX_FILTER_CHARS:
            raise InputError(f"{name!r} is longer than {MAX_FILTER_CHARS} characters")
        return value

    seed = text("seed")
    if seed and not re.fullmatch(r"-?\d+", seed):
        raise InputError(f"seed must be a whole number, not {seed!r}")
    since, until = text("from"), text("to")
    for name, day in (("from", since), ("to", until)):
        if day:
            _day_start_us(day, name)
    before_text = text("before")
    if before_text and not before_text.isdigit():
        raise InputError(f"before must be a row number from a gallery link, not {before_text!r}")
    return GalleryQuery(text=text("q"), negative=text("negative"), model=text("model"), lora=text("lora"),
                        seed=str(int(seed)) if seed else "", generator=text("generator"), since=since,
                        until=until, before=int(before_text) if before_text else None,
                        limit=max(1, min(limit, MAX_PAGE_SIZE)))


def _day_start_us(day: str, name: str) -> int:
    try:
        start = datetime.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise InputError(f"{name} must be a date as YYYY-MM-DD, not {day!r}") from None
    return int(start.timestamp()) * 1_000_000


def fts_expression(words: str, column: str | None = None) -> str | None:
    """An FTS5 MATCH expression that finds rows holding every word (each a prefix); None if no word.

    Each word becomes a quoted phrase ("blue_hair" is the phrase "blue hair"
    to the tokenizer), so quotes, parentheses, NEAR or column syntax typed by
    a user are only ever text.
    """
    terms = [word for word in words.split() if _WORD.search(word)][:MAX_QUERY_WORDS]
    if not terms:
        return None
    phrases = " AND ".join('"' + term.replace('"', '""') + '"*' for term in terms)
    if column is None:
        return phrases
    if column not in TEXT_COLUMNS:
        raise ValueError(f"not a gallery text column: {column}")
    return f"{column} : ({phrases})"


def page_sql(query: GalleryQuery) -> tuple[str, tuple[object, ...]]:
    """SELECT of the query's page: limit + 1 cards, newest first (the extra one says a next page exists)."""
    words = (fts_expression(query.text), fts_expression(query.negative, "negative_prompt"))
    matches = [expr for expr in words if expr is not None]
    clauses: list[str] = []
    params: list[object] = []
    if matches:
        source = "gallery_text t JOIN gallery g ON g.id = t.rowid"
        key = "t.rowid"  # FTS5 walks its own rowids in order, so the LIMIT stops the scan early
        clauses.append("gallery_text MATCH ?")
        params.append(" AND ".join(f"({expr})" for expr in matches))
    else:
        source, key = "gallery g", "g.id"
    for column, value in (("g.model", query.model), ("g.seed", query.seed), ("g.family", query.generator)):
        if value:
            clauses.append(f"{column} = ?" + (" COLLATE NOCASE" if column == "g.model" else ""))
            params.append(value)
    if query.lora:
        clauses.append("g.id IN (SELECT id FROM gallery_loras WHERE name = ?)")
        params.append(query.lora)
    if query.since:
        clauses.append(f"{key} >= ?")
        params.append(_day_start_us(query.since, "from"))
    if query.until:
        clauses.append(f"{key} < ?")
        params.append(_day_start_us(query.until, "to") + _DAY_US)
    if query.before is not None:
        clauses.append(f"{key} < ?")
        params.append(query.before)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return (f"SELECT {CARD_COLUMNS} FROM {source}{where} ORDER BY {key} DESC LIMIT ?",
            (*params, query.limit + 1))


def entry_of(work: str, record: Mapping[str, Value]) -> GalleryEntry:
    """The gallery facts of a decoded work record; missing or odd fields become None or ''."""
    image = record.get("image")
    image = image if isinstance(image, dict) else {}
    generator = record.get("generator")
    generator = generator if isinstance(generator, dict) else {}
    params = record.get("params")
    params = params if isinstance(params, dict) else {}
    provenance = record.get("provenance")
    provenance = provenance if isinstance(provenance, dict) else {}
    seed = params.get("seed")
    loras = params.get("loras")
    lora_names = tuple(dict.fromkeys(
        str(lora["name"]) for lora in (loras if isinstance(loras, list) else [])
        if isinstance(lora, dict) and isinstance(lora.get("name"), str) and lora["name"]))
    return GalleryEntry(
        work=work,
        image_cid=str(image.get("cid", "")),
        name=_text(provenance.get("file_name")) or "",
        family=_text(generator.get("family")) or "none",
        tool=_text(generator.get("tool")),
        model=_text(params.get("model")),
        seed=str(seed) if isinstance(seed, int | str) and not isinstance(seed, bool) and str(seed) else None,
        width=_int(image.get("width")),
        height=_int(image.get("height")),
        prompt=_text(params.get("prompt")) or "",
        negative_prompt=_text(params.get("negative_prompt")) or "",
        loras=lora_names,
    )


def _text(value: Value) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Page:
    cards: list[Card]
    next_before: int | None  # the keyset cursor of the next page; None on the last page


def page_of(rows: list[Card], limit: int) -> Page:
    """A page from the limit + 1 rows page_sql returns."""
    if len(rows) > limit:
        return Page(rows[:limit], rows[limit - 1].id)
    return Page(rows, None)
