"""Fooocus (scheme "fooocus" JSON or "a1111" infotext) and RuinedFooocus JSON → Params.

Pure. The key `parameters` alone never means A1111: Fooocus names its scheme in
`fooocus_scheme` (PNG) or the EXIF MakerNote (JPEG/WebP); RuinedFooocus writes
JSON with "software": "RuinedFooocus". Fooocus stores the seed as a string that
can exceed 2^53; it is read as an exact int.
"""

from __future__ import annotations

import re

from node.metadata.a1111 import parse_infotext
from node.metadata.params import (
    Generator,
    JsonObject,
    JsonValue,
    Lora,
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

_RESOLUTION = re.compile(r"\(\s*(\d{1,6})\s*,\s*(\d{1,6})\s*\)")
_FOOOCUS_FIELDS = ("prompt", "negative_prompt", "steps", "seed", "guidance_scale", "sampler", "scheduler",
                   "resolution", "base_model", "base_model_hash", "loras")
_RUINED_FIELDS = ("Prompt", "Negative", "steps", "cfg", "width", "height", "seed", "sampler_name",
                  "scheduler", "base_model_name", "base_model_hash", "loras")


def _loras(items: JsonValue) -> tuple[Lora, ...]:
    """[[name, weight], …], [[name, weight, hash], …] or ["name : weight", …]."""
    loras = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, list) and item and isinstance(item[0], str):
            loras.append(Lora(name=item[0], weight=as_float(item[1]) if len(item) > 1 else None,
                              hash=as_text(item[2]) if len(item) > 2 else None))
        elif isinstance(item, str) and item.strip():
            name, sep, weight = item.rpartition(":")
            loras.append(Lora(name=(name if sep else item).strip(), weight=as_float(weight) if sep else None))
    return tuple(loras)


def parse_fooocus_json(settings: JsonObject) -> Params:
    width = height = None
    resolution = settings.get("resolution")
    if isinstance(resolution, str) and (match := _RESOLUTION.fullmatch(resolution.strip())):
        width, height = int(match.group(1)), int(match.group(2))
    return Params(
        prompt=clean_prompt(settings.get("prompt")),
        negative_prompt=clean_prompt(settings.get("negative_prompt")),
        seed=as_int(settings.get("seed")), steps=as_int(settings.get("steps")),
        sampler=as_text(settings.get("sampler")), scheduler=as_text(settings.get("scheduler")),
        cfg_scale=as_float(settings.get("guidance_scale")), width=width, height=height,
        model=as_text(settings.get("base_model")), model_hash=as_text(settings.get("base_model_hash")),
        loras=_loras(settings.get("loras")), other_params=remaining(settings, _FOOOCUS_FIELDS),
    )


def parse_ruined_json(settings: JsonObject) -> Params:
    return Params(
        prompt=clean_prompt(settings.get("Prompt")), negative_prompt=clean_prompt(settings.get("Negative")),
        seed=as_int(settings.get("seed")), steps=as_int(settings.get("steps")),
        sampler=as_text(settings.get("sampler_name")), scheduler=as_text(settings.get("scheduler")),
        cfg_scale=as_float(settings.get("cfg")), width=as_int(settings.get("width")),
        height=as_int(settings.get("height")), model=as_text(settings.get("base_model_name")),
        model_hash=as_text(settings.get("base_model_hash")), loras=_loras(settings.get("loras")),
        other_params=remaining(settings, _RUINED_FIELDS),
    )


def _scheme(container: Container) -> str | None:
    scheme = container.text("fooocus_scheme")
    if scheme is None:
        software = container.text("Software", "exif") or ""
        note = container.text("MakerNote", "exif")
        if note in ("fooocus", "a1111") and "ooocus" in software:
            scheme = note
    return scheme.strip() if scheme is not None else None


def detect(container: Container) -> Parsed | None:
    """Fooocus by its scheme marker; RuinedFooocus by its software field."""
    text = container.text("parameters") or container.text("UserComment", "exif")
    scheme = _scheme(container)
    tool = as_text(container.text("Software", "exif")) or "Fooocus"
    if scheme == "fooocus":
        settings = json_object(text)
        if settings is not None:
            version = as_text(settings.get("version"))
            return Parsed(Generator("fooocus", version or tool), parse_fooocus_json(settings))
    if scheme == "a1111" and text is not None:
        params = parse_infotext(text)
        version = as_text(params.other_params.get("Version"))
        return Parsed(Generator("fooocus", version or tool), params)
    settings = json_object(text)
    if settings is not None and settings.get("software") == "RuinedFooocus":
        return Parsed(Generator("fooocus", "RuinedFooocus"), parse_ruined_json(settings))
    return None
