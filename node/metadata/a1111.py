"""AUTOMATIC1111 "infotext" (also Forge, reForge, SD.Next, Civitai, ComfyUI save nodes) → Params.

Pure text parsing. The text is: prompt lines, an optional "Negative prompt:" line
and the lines after it, then one "Steps: …" parameter line, then optional extra
lines (Dynamic Prompts' "Template:"). Values in the parameter line are plain,
double-quoted with JSON escapes, or bare JSON (Civitai, ComfyUI save nodes),
which A1111's own regex would cut at the first comma; here brackets are balanced.
"""

from __future__ import annotations

import re

from node.errors import MetadataJsonError
from node.metadata.params import (
    Generator,
    JsonObject,
    JsonValue,
    Lora,
    Params,
    Parsed,
    as_float,
    as_int,
    clean_prompt,
    decode_json_prefix,
)
from node.metadata.raw import Container

_STEPS_LINE = re.compile(r"^\s*Steps: *\d", re.MULTILINE)
_KEY = re.compile(r"\s*([A-Za-z0-9_][^:,\"\n]{0,80}?): *")
_SIZE = re.compile(r"\s*(\d{1,6})\s*[x×]\s*(\d{1,6})\s*")
_LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)
_FIELDS = {"Steps", "Sampler", "Schedule type", "CFG scale", "CFG Scale", "Seed", "Size", "Model hash",
           "Model"}
_NEGATIVE = "Negative prompt:"


def looks_like_infotext(text: str | None) -> bool:
    """True when the text has an A1111 parameter line ("Steps: <n>, …")."""
    return text is not None and _STEPS_LINE.search(text) is not None


def parse_infotext(text: str) -> Params:
    """Split infotext into prompt, negative prompt and the parameter line, and map what is known."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    steps_at = max((i for i, line in enumerate(lines) if _STEPS_LINE.match(line)), default=len(lines))
    head, param_line, tail = lines[:steps_at], "\n".join(lines[steps_at:steps_at + 1]), lines[steps_at + 1:]
    negative_at = next((i for i, line in enumerate(head) if line.lstrip().startswith(_NEGATIVE)), None)
    if negative_at is None:
        prompt, negative = "\n".join(head), None
    else:
        first = head[negative_at].lstrip()[len(_NEGATIVE):]
        prompt, negative = "\n".join(head[:negative_at]), "\n".join([first, *head[negative_at + 1:]])
    values = parse_param_line(param_line)
    for line in tail:  # "Template: …", "Negative Template: …" (Dynamic Prompts) and alike
        key, sep, value = line.partition(":")
        if sep and key.strip():
            values.setdefault(key.strip(), value.strip())
    return _params(clean_prompt(prompt), clean_prompt(negative), values)


def parse_param_line(line: str) -> JsonObject:
    """`Key: value, Key: "quoted, value", Key: {"bare": "json"}` → an ordered dict; later duplicates lose."""
    values: JsonObject = {}
    pos = 0
    while pos < len(line):
        match = _KEY.match(line, pos)
        if match is None:  # not a key: skip to the next comma
            comma = line.find(",", pos)
            pos = len(line) if comma < 0 else comma + 1
            continue
        key, pos = match.group(1).strip(), match.end()
        value, pos = _value_at(line, pos)
        values.setdefault(key, value)
        while pos < len(line) and line[pos] in ", ":
            pos += 1
    return values


def _value_at(line: str, pos: int) -> tuple[JsonValue, int]:
    if pos < len(line) and line[pos] in "\"[{":
        try:
            return decode_json_prefix(line, pos)
        except MetadataJsonError:
            pass  # not JSON after all: take it as plain text up to the next comma
    comma = line.find(",", pos)
    end = len(line) if comma < 0 else comma
    return line[pos:end].strip(), end


def _params(prompt: str | None, negative: str | None, values: JsonObject) -> Params:
    width = height = None
    size = values.get("Size")
    if isinstance(size, str) and (match := _SIZE.fullmatch(size)):
        width, height = int(match.group(1)), int(match.group(2))
    model = _text(values.get("Model"))
    model_hash = _text(values.get("Model hash"))
    other = {key: value for key, value in values.items() if key not in _FIELDS}
    hashes = values.get("Hashes")
    if isinstance(hashes, dict):
        if model_hash is None:
            model_hash = _text(hashes.get("model"))
        if model is None:  # ComfyUI save nodes: {"Model:<name>": hash}, the only place the name appears
            model = next((key[len("Model:"):] for key in hashes if key.startswith("Model:")), None)
    resources = values.get("Civitai resources")
    if model is None and isinstance(resources, list):
        checkpoint = next((item for item in resources
                           if isinstance(item, dict) and item.get("type") == "checkpoint"), None)
        if checkpoint is not None:
            model = _text(checkpoint.get("modelName"))
            if "modelVersionName" in checkpoint:
                other["model_version"] = checkpoint["modelVersionName"]
            if "modelVersionId" in checkpoint:
                other["civitai_model_version_id"] = checkpoint["modelVersionId"]
    return Params(
        prompt=prompt, negative_prompt=negative, seed=as_int(values.get("Seed")),
        steps=as_int(values.get("Steps")), sampler=_text(values.get("Sampler")),
        scheduler=_text(values.get("Schedule type")),
        cfg_scale=as_float(values.get("CFG scale", values.get("CFG Scale"))),
        width=width, height=height, model=model, model_hash=model_hash,
        loras=prompt_loras(prompt or "", values.get("Lora hashes")), other_params=other,
    )


def _text(value: JsonValue) -> str | None:
    return value if isinstance(value, str) and value else None


def prompt_loras(prompt: str, hashes: JsonValue = None) -> tuple[Lora, ...]:
    """LoRAs named by <lora:name:weight> / <lyco:…> tags, with hashes from "Lora hashes: name: hash, …"."""
    by_name: dict[str, str] = {}
    if isinstance(hashes, str):
        for item in hashes.split(","):
            name, sep, digest = item.rpartition(":")
            if sep:
                by_name[name.strip()] = digest.strip()
    loras = []
    for match in _LORA_TAG.finditer(prompt):
        name = match.group(2).strip()
        weight = as_float(match.group(3)) if match.group(3) else 1.0
        loras.append(Lora(name=name, weight=weight, hash=by_name.get(name)))
    return tuple(loras)


def tool_of(values: JsonObject) -> str:
    """Which infotext writer, from the keys it leaves (Version, App, Civitai keys)."""
    version = values.get("Version")
    if values.get("App") == "SD.Next":
        return "SD.Next"
    if "Civitai resources" in values or "Civitai metadata" in values:
        return "Civitai"
    if version == "ComfyUI":
        return "ComfyUI"
    if version == "neo":
        return "Forge neo"
    if isinstance(version, str) and version.startswith("f"):
        return "Forge"
    return "AUTOMATIC1111"


_INFOTEXT_KEYS = ("parameters", "UserComment", "Comment", "comment", "Description")


def infotext_of(container: Container) -> str | None:
    """The first entry that holds infotext: PNG `parameters`, EXIF UserComment, JPEG COM, stealth LSBs."""
    for entry in container.entries:
        where = entry.key in _INFOTEXT_KEYS or entry.source.startswith("stealth:")
        if (where and isinstance(entry.value, str) and looks_like_infotext(entry.value)
                and not entry.value.lstrip().startswith("{")):
            return entry.value
    return None


def detect(container: Container) -> Parsed | None:
    """A1111-family infotext anywhere it is usually stored."""
    text = infotext_of(container)
    if text is None:
        return None
    params = parse_infotext(text)
    return Parsed(Generator("a1111", tool_of(params.other_params)), params)
