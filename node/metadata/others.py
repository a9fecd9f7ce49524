"""The smaller writers → Params: Stability Matrix, Tensor.Art, Easy Diffusion, Draw Things, Midjourney,
C2PA-only files and plain EXIF (camera or editor fields that are not generation settings).

Pure. XMP is never given to an XML parser: the few properties read here are
cut out with bounded regular expressions and only the five predefined XML
entities and character references are expanded, so no DTD, entity or external
reference in a packet can do anything.
"""

from __future__ import annotations

import html
import re

from node.metadata import a1111, comfyui
from node.metadata.c2pa import summarize
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

MAX_XMP_CHARS = 4 << 20
_XMP_SOURCES = ("png:iTXt", "png:tEXt", "png:zTXt", "jpeg:APP1/XMP", "webp:XMP")
_SIZE = re.compile(r"\s*(\d{1,6})\s*[x×]\s*(\d{1,6})\s*")
_JOB_ID = re.compile(r"\s*Job ID:\s*([0-9A-Fa-f-]{32,36})\s*$")


# ---------------------------------------------------------------------- XMP

def xmp_packet(container: Container) -> str | None:
    for entry in container.entries:
        if not isinstance(entry.value, str) or not entry.source.startswith(_XMP_SOURCES):
            continue
        if entry.key in ("xmp", "XML:com.adobe.xmp") or entry.value.lstrip().startswith("<?xpacket"):
            return entry.value
    return None


def xmp_property(packet: str, name: str) -> str | None:
    """One simple property (attribute, element or first rdf:li) of an XMP packet, entities expanded."""
    if len(packet) > MAX_XMP_CHARS or "<!ENTITY" in packet or "<!DOCTYPE" in packet:
        return None
    qualified = re.escape(name)
    attribute = re.search(rf'\s{qualified}\s*=\s*"([^"]*)"', packet)
    if attribute:
        return html.unescape(attribute.group(1))
    element = re.search(rf"<{qualified}\b[^>]*?(?:/>|>(.*?)</{qualified}>)", packet, re.DOTALL)
    if element is None or element.group(1) is None:
        return None
    body = element.group(1)
    item = re.search(r"<rdf:li\b[^>]*>(.*?)</rdf:li>", body, re.DOTALL)
    return html.unescape(item.group(1) if item else body).strip()


# ---------------------------------------------------------- Stability Matrix

def detect_stability_matrix(container: Container) -> Parsed | None:
    """Stability Matrix: infotext in `parameters` next to `parameters-json`/`smproj` and a ComfyUI graph."""
    settings = json_object(container.text("parameters-json"))
    if settings is None and not container.find("smproj"):
        return None
    text = container.text("parameters")
    if text is not None and a1111.looks_like_infotext(text):
        params = a1111.parse_infotext(text)
    elif settings is not None:
        params = Params(
            prompt=clean_prompt(settings.get("PositivePrompt")),
            negative_prompt=clean_prompt(settings.get("NegativePrompt")),
            seed=as_int(settings.get("Seed")), steps=as_int(settings.get("Steps")),
            sampler=as_text(settings.get("Sampler")), cfg_scale=as_float(settings.get("CfgScale")),
            width=as_int(settings.get("Width")), height=as_int(settings.get("Height")),
            model=as_text(settings.get("ModelName")), model_hash=as_text(settings.get("ModelHash")),
        )
    else:
        return None
    return Parsed(Generator("a1111", "Stability Matrix"), params)


# ------------------------------------------------------------------ Tensor.Art

def detect_tensorart(container: Container) -> Parsed | None:
    """Tensor.Art: `generation_data` JSON (NUL-terminated) and the ComfyUI graph that really ran."""
    data = json_object(container.text("generation_data"))
    if data is None:
        return None
    graph = comfyui.detect(container)
    base = graph.params if graph is not None else Params()
    model = data.get("baseModel")
    model = model if isinstance(model, dict) else {}
    seed = as_int(data.get("seed"))
    other = {**base.other_params, **remaining(data, ("prompt", "negativePrompt", "seed", "steps", "cfgScale",
                                                     "width", "height", "baseModel", "ksamplerName",
                                                     "schedule"))}
    params = Params(
        prompt=clean_prompt(data.get("prompt")) or base.prompt,
        negative_prompt=clean_prompt(data.get("negativePrompt")) or base.negative_prompt,
        seed=base.seed if seed is None or seed < 0 else seed,  # "-1" = random: the graph has the real one
        steps=as_int(data.get("steps")) or base.steps,
        sampler=as_text(data.get("ksamplerName")) or base.sampler,
        scheduler=as_text(data.get("schedule")) or base.scheduler,
        cfg_scale=as_float(data.get("cfgScale")) or base.cfg_scale,
        width=as_int(data.get("width")) or base.width, height=as_int(data.get("height")) or base.height,
        model=as_text(model.get("modelFileName")) or base.model,
        model_hash=as_text(model.get("hash")) or base.model_hash, loras=base.loras, other_params=other,
    )
    return Parsed(Generator("comfyui", "Tensor.Art"), params)


# -------------------------------------------------------------- Easy Diffusion

_ED_KEYS = {  # normalized field: (current key, key of old versions)
    "prompt": ("prompt", "Prompt"), "negative_prompt": ("negative_prompt", "Negative Prompt"),
    "seed": ("seed", "Seed"), "steps": ("num_inference_steps", "Steps"),
    "sampler": ("sampler_name", "Sampler"), "cfg_scale": ("guidance_scale", "Guidance Scale"),
    "width": ("width", "Width"), "height": ("height", "Height"),
    "model": ("use_stable_diffusion_model", "Stable Diffusion model"),
}
_ED_MARKERS = ("num_inference_steps", "use_stable_diffusion_model", "Stable Diffusion model")


def parse_easy_diffusion(fields: JsonObject) -> Params:
    def pick(name: str) -> JsonValue:
        current, old = _ED_KEYS[name]
        return fields.get(current, fields.get(old))

    used = [key for pair in _ED_KEYS.values() for key in pair]
    return Params(
        prompt=clean_prompt(pick("prompt")), negative_prompt=clean_prompt(pick("negative_prompt")),
        seed=as_int(pick("seed")), steps=as_int(pick("steps")), sampler=as_text(pick("sampler")),
        cfg_scale=as_float(pick("cfg_scale")), width=as_int(pick("width")), height=as_int(pick("height")),
        model=as_text(pick("model")), other_params=remaining(fields, used),
    )


def is_easy_diffusion(fields: JsonObject) -> bool:
    return any(marker in fields for marker in _ED_MARKERS)


def detect_easy_diffusion(container: Container) -> Parsed | None:
    """Easy Diffusion: one PNG text chunk per field, or the same keys as JSON in UserComment."""
    chunks: JsonObject = {entry.key: entry.value for entry in container.entries
                          if entry.source.startswith("png:") and isinstance(entry.value, str)}
    fields = chunks if is_easy_diffusion(chunks) else json_object(container.text("UserComment", "exif"))
    if fields is None or not is_easy_diffusion(fields):
        return None
    return Parsed(Generator("easydiffusion", "Easy Diffusion"), parse_easy_diffusion(fields))


# ----------------------------------------------------------------- Draw Things

def parse_draw_things(settings: JsonObject, description: str | None) -> Params:
    width = height = None
    size = settings.get("size")
    if isinstance(size, str) and (match := _SIZE.fullmatch(size)):
        width, height = int(match.group(1)), int(match.group(2))
    items = settings.get("lora")
    loras = tuple(Lora(name=name, weight=as_float(item.get("weight")))
                  for item in (items if isinstance(items, list) else [])
                  if isinstance(item, dict) and isinstance(name := item.get("model"), str))
    other = remaining(settings, ("c", "uc", "seed", "steps", "sampler", "scale", "size", "model", "lora"))
    if description is not None:
        other["description"] = description
    return Params(
        prompt=clean_prompt(settings.get("c")), negative_prompt=clean_prompt(settings.get("uc")),
        seed=as_int(settings.get("seed")), steps=as_int(settings.get("steps")),
        sampler=as_text(settings.get("sampler")), cfg_scale=as_float(settings.get("scale")),
        width=width, height=height, model=as_text(settings.get("model")), loras=loras, other_params=other,
    )


def detect_draw_things(container: Container) -> Parsed | None:
    """Draw Things: XMP CreatorTool "Draw Things", settings JSON in exif:UserComment."""
    packet = xmp_packet(container)
    if packet is None or "Draw Things" not in (xmp_property(packet, "xmp:CreatorTool") or ""):
        return None
    settings = json_object(xmp_property(packet, "exif:UserComment")) or {}
    params = parse_draw_things(settings, xmp_property(packet, "dc:description"))
    return Parsed(Generator("drawthings", "Draw Things"), params)


# ------------------------------------------------------------------ Midjourney

def parse_midjourney(description: str) -> Params:
    """`<prompt> --ar 2:1 --v 6 --seed 1 Job ID: <uuid>`: flags after the prompt become other_params."""
    other: JsonObject = {}
    job = _JOB_ID.search(description)
    if job:
        other["job_id"] = job.group(1)
        description = description[:job.start()]
    prompt, _, flags = description.partition(" --")
    words = ("--" + flags).split() if flags else []
    name: str | None = None
    for word in words:
        if word.startswith("--") and len(word) > 2:
            name = word[2:]
            other[name] = ""
        elif name is not None:
            other[name] = f"{other[name]} {word}".strip()
    seed = other.pop("seed", None)
    return Params(prompt=clean_prompt(prompt), negative_prompt=as_text(other.get("no")), seed=as_int(seed),
                  other_params=other)


def detect_midjourney(container: Container) -> Parsed | None:
    """Midjourney web downloads: a description ending in "Job ID: <uuid>" (PNG Description or XMP)."""
    packet = xmp_packet(container)
    candidates = [container.text("Description", "png:"),
                  xmp_property(packet, "dc:description") if packet else None]
    for text in candidates:
        if text is not None and _JOB_ID.search(text):
            params = parse_midjourney(text)
            author = container.text("Author", "png:")
            if author is not None:
                params.other_params["author"] = author
            return Parsed(Generator("midjourney", "Midjourney"), params)
    return None


# ------------------------------------------------------------------------ C2PA

def c2pa_summary(container: Container) -> JsonObject | None:
    """The C2PA summary for the work record, from the validated manifest store the container read."""
    store = container.text("manifest_store", "c2pa")
    if store is None:
        return None
    summary = summarize(store)
    return {
        "present": True, "manifest_count": summary.manifest_count,
        "active_claim_generator": summary.claim_generator, "action": summary.action,
        "digital_source_type": summary.digital_source_type, "signer_issuer": summary.signer_issuer,
        "validation_state": summary.validation_state, "signature_valid": summary.signature_valid,
        "failures": list(summary.failures),
    }


def _model_hints(store: JsonObject) -> JsonObject:
    """Model id/version an AI tool left in the active manifest's actions (Adobe parameters, softwareAgent)."""
    manifests = store.get("manifests")
    active = manifests.get(str(store.get("active_manifest"))) if isinstance(manifests, dict) else None
    assertions = active.get("assertions") if isinstance(active, dict) else None
    hints: JsonObject = {}
    for assertion in assertions if isinstance(assertions, list) else []:
        data = assertion.get("data") if isinstance(assertion, dict) else None
        actions = data.get("actions") if isinstance(data, dict) else None
        for action in actions if isinstance(actions, list) else []:
            if not isinstance(action, dict):
                continue
            parameters = action.get("parameters")
            if isinstance(parameters, dict):
                hints.setdefault("model", parameters.get("com.adobe.modelId"))
                hints.setdefault("model_version", parameters.get("com.adobe.modelVersion"))
            agent = action.get("softwareAgent")
            trained = "trainedAlgorithmic" in str(action.get("digitalSourceType", ""))
            if trained and agent is not None:
                hints.setdefault("software_agent", agent)
    return {key: value for key, value in hints.items() if value is not None}


def detect_c2pa(container: Container) -> Parsed | None:
    """A file whose only provenance is C2PA: who signed it and what it says about its origin."""
    summary = c2pa_summary(container)
    if summary is None:
        return None
    hints = _model_hints(json_object(container.text("manifest_store", "c2pa")) or {})
    agent = hints.get("software_agent")
    model = as_text(hints.pop("model", None))
    if model is None and isinstance(agent, dict):
        model = as_text(agent.get("name"))
    return Parsed(Generator("c2pa", as_text(summary["active_claim_generator"])),
                  Params(model=model, other_params=hints))


# ------------------------------------------------------------------ plain EXIF

_PLAIN_EXIF = {"Software": "software", "ImageDescription": "image_description", "Artist": "artist",
               "Make": "make", "Model": "camera_model", "DateTime": "date_time",
               "UserComment": "user_comment"}


def repair_mojibake(text: str) -> str:
    """UTF-8 bytes that a reader took for Latin-1 ("GIMPã\x81§…"): decoded again when that is clean UTF-8."""
    if not text.isascii() and all(ord(char) < 256 for char in text):
        try:
            return text.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            return text
    return text


def plain_exif(container: Container) -> JsonObject:
    """Editor and camera fields worth keeping for a file without generation metadata (never a prompt)."""
    fields: JsonObject = {}
    for entry in container.entries:
        name = _PLAIN_EXIF.get(entry.key)
        if entry.source == "exif" and isinstance(entry.value, str) and name and name not in fields:
            fields[name] = repair_mojibake(entry.value.strip("\x00 "))
    return fields
