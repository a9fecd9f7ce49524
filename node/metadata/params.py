"""The normalized generation settings every generator parser produces, and the helpers they share.

Pure: values in, values out. Nothing here reads files or guesses a format; a
parser decides what its generator wrote and maps it here. Seeds are Python
ints of any size and never pass through a float; every JSON document is read
with load_json, which refuses what would be read differently elsewhere.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from node.errors import MetadataJsonError

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = dict[str, JsonValue]

MAX_JSON_CHARS = 64 << 20  # the container readers keep at most 64 MiB per entry
MAX_JSON_DEPTH = 256  # real graphs nest < 20 deep; CPython's own parser overflows at a few thousand

FAMILIES = ("a1111", "comfyui", "invokeai", "novelai", "fooocus", "swarmui", "easydiffusion",
            "drawthings", "midjourney", "c2pa", "none", "malformed")


@dataclass(frozen=True, slots=True)
class Generator:
    """Which family of tools wrote the metadata (a FAMILIES value) and, when known, the tool itself."""

    family: str
    tool: str | None = None

    def to_json(self) -> JsonObject:
        return {"family": self.family, "tool": self.tool}


@dataclass(frozen=True, slots=True)
class Lora:
    """One LoRA (or LyCORIS) applied to the model; weight is the model strength."""

    name: str
    weight: float | None = None
    hash: str | None = None
    strength_model: float | None = None  # ComfyUI LoraLoader only
    strength_clip: float | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {"name": self.name, "weight": self.weight, "hash": self.hash}
        if self.strength_model is not None or self.strength_clip is not None:
            out["strength_model"] = self.strength_model
            out["strength_clip"] = self.strength_clip
        return out


@dataclass(frozen=True, slots=True)
class Params:
    """Generation settings in one shape for every tool; None means the file does not say."""

    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    sampler: str | None = None  # the tool's own words, not mapped across tools
    scheduler: str | None = None
    cfg_scale: float | None = None
    width: int | None = None  # the generation size recorded in the metadata, not the pixels
    height: int | None = None
    model: str | None = None
    model_hash: str | None = None  # in the tool's scheme: AutoV2, SHA-256, blake3:…, 0x…, NovelAI 8-hex
    loras: tuple[Lora, ...] = ()
    other_params: JsonObject = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {
            "prompt": self.prompt, "negative_prompt": self.negative_prompt, "seed": self.seed,
            "steps": self.steps, "sampler": self.sampler, "scheduler": self.scheduler,
            "cfg_scale": self.cfg_scale, "width": self.width, "height": self.height,
            "model": self.model, "model_hash": self.model_hash,
            "loras": [lora.to_json() for lora in self.loras],
            "other_params": self.other_params,
        }


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one generator parser read from a file: who wrote it and the settings."""

    generator: Generator
    params: Params


# ---------------------------------------------------------------- strict JSON

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]", re.ASCII)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MetadataJsonError(f"JSON object has the key {key!r} twice; readers disagree on which wins")
        out[key] = value
    return out


def _reject_constant(name: str) -> float:
    raise MetadataJsonError(f"JSON holds {name}, which strict JSON does not allow")


def _null_constant(name: str) -> None:
    return None


_DECODE_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
_DECODE_NULLING = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_null_constant)


def load_json(text: str | bytes, *, nan: str = "null", max_chars: int = MAX_JSON_CHARS,
              max_depth: int = MAX_JSON_DEPTH) -> JsonValue:
    """One JSON document, strictly: raise MetadataJsonError instead of guessing.

    Trailing NULs and whitespace are dropped (Tensor.Art ends its JSON with a NUL).
    NaN/Infinity/-Infinity (written by Python's json.dumps, e.g. ComfyUI) become None
    with nan="null", or are refused with nan="reject". Duplicate keys, nesting deeper than
    max_depth, integers too long for int() and lone UTF-16 surrogates are refused.
    Integers stay exact Python ints of any size.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MetadataJsonError(f"JSON is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if len(text) > max_chars:
        raise MetadataJsonError(f"JSON of {len(text)} characters is over the {max_chars} limit")
    value, end = decode_json_prefix(text.rstrip("\x00 \t\r\n"), 0, nan=nan, max_depth=max_depth)
    if end != len(text.rstrip("\x00 \t\r\n")):
        raise MetadataJsonError(f"JSON document ends at character {end}; text follows it")
    return value


def decode_json_prefix(text: str, start: int, *, nan: str = "null",
                       max_depth: int = MAX_JSON_DEPTH) -> tuple[JsonValue, int]:
    """The JSON value starting at text[start] (after whitespace) and the index just past it."""
    decoder = _DECODE_STRICT if nan == "reject" else _DECODE_NULLING
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    try:
        value, end = decoder.raw_decode(text, start)
    except RecursionError:
        raise MetadataJsonError("JSON nests too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise MetadataJsonError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    except ValueError as exc:  # an integer longer than int() accepts
        raise MetadataJsonError(f"JSON value out of range: {exc}") from None
    # Each level opens a bracket, so a text with few brackets cannot nest deeply; most need no walk.
    brackets = text.count("[", start, end) + text.count("{", start, end)
    if brackets > max_depth and nesting_depth(value) > max_depth:
        raise MetadataJsonError(f"JSON nests deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(text, start, end):
        value = _replace_surrogates(value)
    return value, end


def nesting_depth(value: object) -> int:
    """How deep the lists and dicts of a decoded JSON value nest (a scalar is 0), one level at a time.

    Exact type checks, not isinstance: the decoder makes only plain dicts and
    lists, and this runs over every node of a workflow of thousands.
    """
    depth = 0
    level: list[dict[Any, Any] | list[Any]] = [value] if type(value) is dict or type(value) is list else []
    while level:
        depth += 1
        below: list[dict[Any, Any] | list[Any]] = []
        for container in level:
            for child in container.values() if type(container) is dict else container:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
    return depth


def _replace_surrogates(value: JsonValue) -> JsonValue:
    """Lone surrogates from \\uD8xx escapes cannot be stored as UTF-8: replace them with U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
    if isinstance(value, list):
        return [_replace_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_SURROGATE.sub("\ufffd", key): _replace_surrogates(item) for key, item in value.items()}
    return value


def try_json(text: str | None, *, nan: str = "null") -> JsonValue | None:
    """load_json for a detector: None when the text is absent or not acceptable JSON."""
    if text is None or not text.lstrip().startswith(("{", "[")):
        return None
    try:
        return load_json(text, nan=nan)
    except MetadataJsonError:
        return None


def json_object(text: str | None) -> JsonObject | None:
    """try_json, but only a JSON object counts."""
    value = try_json(text)
    return value if isinstance(value, dict) else None


# ------------------------------------------------------- value normalization

_INT_TEXT = re.compile(r"\s*[+-]?\d{1,400}\s*", re.ASCII)
_FLOAT_TEXT = re.compile(r"\s*[+-]?(\d{1,400}(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?\s*", re.ASCII)


def as_int(value: object) -> int | None:
    """An integer setting from JSON or text: exact for digit strings, integral floats accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value):
        return as_int(float(value))
    return None


def as_float(value: object) -> float | None:
    """A real-valued setting (CFG, weights); NaN and infinities count as absent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value):
        return as_float(float(value))
    return None


def as_text(value: object) -> str | None:
    """A text setting: strings as they are, numbers in their usual spelling, anything else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def clean_prompt(value: object) -> str | None:
    """A prompt as the fixtures compare it: CRLF/CR → LF, surrounding whitespace stripped."""
    if not isinstance(value, str):
        return None
    return value.replace("\r\n", "\n").replace("\r", "\n").strip()


def json_safe(value: object) -> JsonValue:
    """Any parsed value as plain JSON: tuples become lists, non-finite floats None, other objects text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return str(value)


def remaining(source: Mapping[str, JsonValue], used: Iterable[str]) -> JsonObject:
    """The keys of a generator's settings that have no normalized field, in their order."""
    skip = set(used)
    return {key: value for key, value in source.items() if key not in skip}
