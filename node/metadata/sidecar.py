"""Sidecar files next to an image (same stem): .txt, .caption, .json, .yaml → entries and Params.

Pure: the caller reads the files and passes their bytes. YAML is read only in
its flat `key: value` form (what Easy Diffusion writes for simple settings),
by our own few lines: no YAML library is a dependency of artkeep, and a full
YAML loader is not something to run on untrusted files. Anything else in a
.yaml file stays raw and unparsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from node.metadata import a1111, others
from node.metadata.params import Generator, JsonObject, Params, Parsed, clean_prompt, json_object
from node.metadata.raw import Container, RawEntry

SOURCE = "sidecar"
SUFFIXES = (".txt", ".caption", ".json", ".yaml", ".yml")
_YAML_LINE = re.compile(r"([A-Za-z_][\w .-]{0,80}):(?:[ \t]+(.*))?")
_YAML_SPECIAL = ("&", "*", "!", "|", ">", "[", "{", "%", "@", "`")


def suffix_of(name: str) -> str:
    """".txt" for "image.txt", ".TXT" or ".txt"; the whole name lower-cased when it has no dot."""
    dot = name.rfind(".")
    return (name[dot:] if dot >= 0 else name).lower()


def entries(sidecars: Mapping[str, bytes]) -> tuple[RawEntry, ...]:
    """One entry per sidecar, keyed by suffix; text when it is UTF-8 (a BOM dropped), else the bytes."""
    out = []
    for name, data in sidecars.items():
        try:
            value: str | bytes = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            value = data
        out.append(RawEntry(SOURCE, suffix_of(name), value))
    return tuple(out)


def flat_yaml(text: str) -> JsonObject | None:
    """A YAML document that is only `key: scalar` lines (comments and blank lines allowed), else None."""
    fields: JsonObject = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip() or line.lstrip().startswith("#") or line.strip() in ("---", "..."):
            continue
        match = _YAML_LINE.fullmatch(line.rstrip())
        if match is None or line[0].isspace():
            return None
        value = (match.group(2) or "").strip()
        if value.startswith(_YAML_SPECIAL):
            return None
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        fields[match.group(1).strip()] = None if value in ("", "~", "null") else value
    return fields or None


def detect(container: Container) -> Parsed | None:
    """Settings from sidecar entries: infotext, Easy Diffusion JSON/YAML, or a caption as the prompt."""
    texts = {entry.key: entry.value for entry in container.entries
             if entry.source == SOURCE and isinstance(entry.value, str)}
    for key in (".json", ".yaml", ".yml"):
        text = texts.get(key)
        fields = json_object(text) if key == ".json" else flat_yaml(text) if text is not None else None
        if fields is not None and others.is_easy_diffusion(fields):
            return Parsed(Generator("easydiffusion", f"Easy Diffusion (sidecar {key})"),
                          others.parse_easy_diffusion(fields))
    text = texts.get(".txt")
    if text is not None and a1111.looks_like_infotext(text):
        params = a1111.parse_infotext(text)
        return Parsed(Generator("a1111", f"{a1111.tool_of(params.other_params)} (sidecar .txt)"), params)
    for key in (".caption", ".txt"):
        caption = clean_prompt(texts.get(key))
        if caption:
            return Parsed(Generator("none", f"caption (sidecar {key})"), Params(prompt=caption))
    return None
