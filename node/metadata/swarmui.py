"""SwarmUI `sui_image_params` JSON (PNG `parameters`, JPEG/WebP UserComment) → Params.

Pure. SwarmUI runs ComfyUI underneath and often leaves a ComfyUI `prompt` graph
too; the caller keeps that as an alternate. The model hash comes from
`sui_models` ("0x" + SHA-256), LoRAs from the parallel `loras`/`loraweights` lists.
"""

from __future__ import annotations

from node.metadata.params import (
    Generator,
    JsonObject,
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

_FIELDS = ("prompt", "negativeprompt", "seed", "steps", "cfgscale", "sampler", "scheduler", "width", "height",
           "model", "loras", "loraweights")


def parse_swarm(document: JsonObject) -> Params:
    settings = document.get("sui_image_params")
    settings = settings if isinstance(settings, dict) else {}
    models = document.get("sui_models")
    hashes = {item.get("param"): as_text(item.get("hash"))
              for item in (models if isinstance(models, list) else []) if isinstance(item, dict)}
    names = settings.get("loras")
    weights = settings.get("loraweights")
    loras = []
    for index, name in enumerate(names if isinstance(names, list) else []):
        weight = weights[index] if isinstance(weights, list) and index < len(weights) else None
        if isinstance(name, str):
            loras.append(Lora(name=name, weight=as_float(weight)))
    other = remaining(settings, _FIELDS)
    other.update(remaining(document, ("sui_image_params",)))
    return Params(
        prompt=clean_prompt(settings.get("prompt")),
        negative_prompt=clean_prompt(settings.get("negativeprompt")),
        seed=as_int(settings.get("seed")), steps=as_int(settings.get("steps")),
        sampler=as_text(settings.get("sampler")), scheduler=as_text(settings.get("scheduler")),
        cfg_scale=as_float(settings.get("cfgscale")), width=as_int(settings.get("width")),
        height=as_int(settings.get("height")), model=as_text(settings.get("model")),
        model_hash=hashes.get("model"), loras=tuple(loras), other_params=other,
    )


def detect(container: Container) -> Parsed | None:
    """The first entry holding a JSON object with `sui_image_params`."""
    for entry in container.entries:
        if isinstance(entry.value, str) and "sui_image_params" in entry.value:
            document = json_object(entry.value.lstrip("\x00"))
            if document is not None and isinstance(document.get("sui_image_params"), dict):
                params = parse_swarm(document)
                version = as_text(params.other_params.get("swarm_version"))
                return Parsed(Generator("swarmui", f"SwarmUI {version}" if version else "SwarmUI"), params)
    return None
