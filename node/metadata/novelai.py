"""NovelAI → Params: PNG text chunks (Software=NovelAI, JSON in Comment), WebP EXIF, stealth alpha copy.

Pure. The same dictionary appears up to three times (text chunks, EXIF
UserComment, gzip JSON in the alpha LSBs); the first found wins and the stealth
copy is compared by the caller as an alternate.
"""

from __future__ import annotations

import re

from node.metadata.params import (
    Generator,
    JsonObject,
    JsonValue,
    Params,
    Parsed,
    as_float,
    as_int,
    as_text,
    clean_prompt,
    json_object,
    remaining,
)
from node.metadata.raw import Container

_SOURCE = re.compile(r"(.*\S)\s+([0-9A-Fa-f]{8})")
_FIELDS = ("prompt", "uc", "steps", "seed", "scale", "sampler", "noise_schedule", "width", "height")
_TEXT_KEYS = ("Title", "Description", "Software", "Source", "Generation time", "Comment")


def _caption(value: JsonValue) -> tuple[str | None, list[JsonValue]]:
    """v4 prompt structure → (base caption, character captions)."""
    caption = value.get("caption") if isinstance(value, dict) else None
    if not isinstance(caption, dict):
        return None, []
    characters = caption.get("char_captions")
    return as_text(caption.get("base_caption")), characters if isinstance(characters, list) else []


def parse_fields(fields: JsonObject) -> Params | None:
    """The NovelAI dictionary {Title, Description, Software, Source, Comment (JSON text), …}."""
    comment = fields.get("Comment")
    settings = comment if isinstance(comment, dict) else json_object(as_text(comment))
    if settings is None:
        return None
    base, characters = _caption(settings.get("v4_prompt"))
    negative_base, negative_characters = _caption(settings.get("v4_negative_prompt"))
    prompt = settings.get("prompt") or base or fields.get("Description")
    negative = settings.get("uc", negative_base)
    model = as_text(fields.get("Source"))
    model_hash = None
    if model is not None and (match := _SOURCE.fullmatch(model)):
        model, model_hash = match.group(1), match.group(2)
    other = remaining(settings, _FIELDS)
    if characters:
        other["character_prompts"] = characters
    if negative_characters:
        other["character_negative_prompts"] = negative_characters
    other.update(remaining(fields, ("Comment", "Description", "Source", "Software")))
    return Params(
        prompt=clean_prompt(prompt), negative_prompt=clean_prompt(negative),
        seed=as_int(settings.get("seed")), steps=as_int(settings.get("steps")),
        sampler=as_text(settings.get("sampler")),
        scheduler=as_text(settings.get("noise_schedule")), cfg_scale=as_float(settings.get("scale")),
        width=as_int(settings.get("width")), height=as_int(settings.get("height")),
        model=model, model_hash=model_hash, other_params=other,
    )


def _is_novelai(fields: JsonObject) -> bool:
    software = fields.get("Software")
    return isinstance(software, str) and software.startswith("NovelAI")


def candidate_fields(container: Container) -> list[tuple[str, JsonObject]]:
    """Every copy of the NovelAI dictionary in the file, with where it was found."""
    found: list[tuple[str, JsonObject]] = []
    chunks: JsonObject = {}
    for key in _TEXT_KEYS:
        text = container.text(key, "png:")
        if text is not None:
            chunks[key] = text
    if _is_novelai(chunks):
        found.append(("png", chunks))
    for entry in container.entries:
        where = entry.key == "UserComment" or entry.source.startswith("stealth:")
        if not where or not isinstance(entry.value, str):
            continue
        document = json_object(entry.value.lstrip("\x00"))
        if document is not None and (_is_novelai(document) or {"Comment", "Source"} <= document.keys()):
            found.append((entry.source, document))
    return found


def detect(container: Container) -> Parsed | None:
    """The first readable NovelAI dictionary; later copies are noted in other_params."""
    copies = candidate_fields(container)
    for index, (where, fields) in enumerate(copies):
        params = parse_fields(fields)
        if params is not None:
            params.other_params["copies"] = [place for place, _ in copies]
            if index:
                params.other_params["read_from"] = where
            return Parsed(Generator("novelai", "NovelAI"), params)
    return None
