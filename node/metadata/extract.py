"""extract(): image bytes (and sidecars) → the container's raw entries plus one normalized Params.

Pure. The container readers collect every entry; the generator detectors run
in order of specificity over them (notes §4.5). Several may match one file
(SwarmUI + ComfyUI, Stability Matrix + ComfyUI, NovelAI text + stealth): the
first is primary, the others are kept as alternates. Sidecars count only when
nothing embedded in the file matched.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Mapping

from node.errors import ImageUnreadable
from node.metadata import a1111, comfyui, fooocus, invokeai, novelai, others, sidecar, swarmui
from node.metadata.container import read_container
from node.metadata.params import Generator, JsonObject, JsonValue, Params, Parsed
from node.metadata.raw import Container, RawEntry

Detector = Callable[[Container], Parsed | None]

# Most specific first: a marker only one tool writes beats a format many tools share.
DETECTORS: tuple[Detector, ...] = (
    swarmui.detect,
    fooocus.detect,
    novelai.detect,
    invokeai.detect,
    others.detect_stability_matrix,
    others.detect_tensorart,
    others.detect_easy_diffusion,
    comfyui.detect,
    a1111.detect,
    others.detect_draw_things,
    others.detect_midjourney,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Extraction:
    """Everything read from one image: its container, who made it, the settings, and every raw entry."""

    container: Container  # the file's entries followed by the sidecars' ("sidecar" source)
    generator: Generator
    params: Params
    alternates: tuple[Parsed, ...] = ()  # other readings of the same file, also in params.other_params
    c2pa: JsonObject | None = None  # C2PA summary, also in params.other_params["c2pa"]

    @property
    def entries(self) -> tuple[RawEntry, ...]:
        return self.container.entries

    def to_json(self) -> JsonObject:
        """{"generator", "params", "raw"}: plain JSON, with the raw entries losslessly (bytes as base64)."""
        return {"generator": self.generator.to_json(), "params": self.params.to_json(),
                "raw": raw_json(self.container)}


def raw_json(container: Container) -> JsonObject:
    """The container facts and every entry in order: {"source", "key", "text"} or {…, "base64"}."""
    entries: list[JsonValue] = []
    for entry in container.entries:
        item: JsonObject = {"source": entry.source, "key": entry.key}
        if isinstance(entry.value, str):
            item["text"] = entry.value
        else:
            item["base64"] = base64.b64encode(entry.value).decode("ascii")
        entries.append(item)
    return {"format": container.format, "width": container.width, "height": container.height,
            "frames": container.frames, "entries": entries, "problems": list(container.problems)}


def detect_all(container: Container, detectors: tuple[Detector, ...] = DETECTORS) -> list[Parsed]:
    """Every detector's reading of the container, most specific first."""
    return [parsed for detector in detectors if (parsed := detector(container)) is not None]


def extract(data: bytes, *, sidecars: Mapping[str, bytes] | None = None, stealth: bool = True) -> Extraction:
    """Read an image's metadata and normalize it; raise ImageUnreadable for a file that is no image we read.

    stealth=True also looks for stealth pnginfo in the pixels of PNG/WebP files (a
    full decode: tens of milliseconds for a 1-megapixel image).
    """
    container = read_container(data, stealth=stealth)
    if container.format is None:
        raise ImageUnreadable(f"cannot read metadata: {'; '.join(container.problems) or 'unknown format'}")
    readings = detect_all(container)
    if sidecars:
        beside = Container(format=None, entries=sidecar.entries(sidecars))
        readings += [*detect_all(beside, (*DETECTORS, sidecar.detect))]
        container = dataclasses.replace(container, entries=container.entries + beside.entries)
    c2pa = others.c2pa_summary(container)
    if not readings and c2pa is not None:
        readings = [parsed for parsed in (others.detect_c2pa(container),) if parsed is not None]
    if readings:
        primary, alternates = readings[0], _distinct(readings[0], readings[1:])
    else:
        family = "malformed" if container.problems else "none"
        primary, alternates = Parsed(Generator(family), Params(other_params=others.plain_exif(container))), []
    other = dict(primary.params.other_params)
    if alternates:
        other["alternates"] = [{"generator": parsed.generator.to_json(), "params": parsed.params.to_json()}
                               for parsed in alternates]
    if c2pa is not None:
        other["c2pa"] = c2pa
    params = dataclasses.replace(primary.params, other_params=other)
    return Extraction(container, primary.generator, params, tuple(alternates), c2pa)


def _distinct(primary: Parsed, rest: list[Parsed]) -> list[Parsed]:
    """Alternates that say something the primary does not (a second parser of the same text is dropped)."""
    kept: list[Parsed] = []
    for parsed in rest:
        if parsed.params != primary.params and all(parsed.params != other.params for other in kept):
            kept.append(parsed)
    return kept
