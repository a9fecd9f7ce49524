"""InvokeAI → Params: `invokeai_metadata` (3.x and later), `sd-metadata` (2.x) and `Dream` (1.x).

Pure. InvokeAI calls its sampler "scheduler"; here it goes to Params.sampler.
The executed graph (`invokeai_graph`) and node-editor workflow stay in the raw
entries; other_params only says they are there.
"""

from __future__ import annotations

import re
import shlex

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

_CORE_FIELDS = ("positive_prompt", "negative_prompt", "seed", "steps", "scheduler", "cfg_scale", "width",
                "height", "model", "loras")
_NEGATIVE_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
# Dream switches: the normalized field they fill, or the name kept in other_params.
_DREAM_FIELDS = {"-s": "steps", "-S": "seed", "-W": "width", "-H": "height", "-C": "cfg_scale",
                 "-A": "sampler", "-m": "model"}
_DREAM_NAMES = {"-G": "-G (GFPGAN strength)", "-cf": "-cf (CodeFormer fidelity)",
                "-U": "-U (upscale factor, strength)", "-f": "-f (img2img strength)", "-I": "-I (init image)",
                "-V": "-V (variation amount)", "-v": "-v (variations)", "-n": "-n (iterations)"}


def _model_ref(model: JsonValue) -> tuple[str | None, str | None, JsonObject]:
    """(name, hash, extra) from a 3.x {model_name, base_model} or ≥4 {key, hash, name, base} reference."""
    if isinstance(model, str):
        return model, None, {}
    if not isinstance(model, dict):
        return None, None, {}
    name = as_text(model.get("name", model.get("model_name")))
    base = model.get("base", model.get("base_model"))
    return name, as_text(model.get("hash")), ({"model_base": base} if base is not None else {})


def _loras(items: JsonValue) -> tuple[Lora, ...]:
    loras = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        name, digest, _ = _model_ref(item.get("model", item.get("lora")))
        if name is not None:
            loras.append(Lora(name=name, weight=as_float(item.get("weight")), hash=digest))
    return tuple(loras)


def parse_core_metadata(metadata: JsonObject) -> Params:
    """`invokeai_metadata` (3.x–6.x core metadata JSON)."""
    model, model_hash, other = _model_ref(metadata.get("model"))
    other = {**remaining(metadata, _CORE_FIELDS), **other}
    return Params(
        prompt=clean_prompt(metadata.get("positive_prompt")),
        negative_prompt=clean_prompt(metadata.get("negative_prompt")),
        seed=as_int(metadata.get("seed")), steps=as_int(metadata.get("steps")),
        sampler=as_text(metadata.get("scheduler")), cfg_scale=as_float(metadata.get("cfg_scale")),
        width=as_int(metadata.get("width")), height=as_int(metadata.get("height")),
        model=model, model_hash=model_hash, loras=_loras(metadata.get("loras")), other_params=other,
    )


def split_negative(prompt: str) -> tuple[str, str | None]:
    """Legacy InvokeAI writes the negative prompt inside the prompt in [square brackets]."""
    negatives = [part.strip() for part in _NEGATIVE_BRACKETS.findall(prompt)]
    if not negatives:
        return prompt.strip(), None
    return _NEGATIVE_BRACKETS.sub("", prompt).strip(), ", ".join(negatives)


def parse_sd_metadata(metadata: JsonObject) -> Params:
    """`sd-metadata` (2.x): settings under "image", the prompt as [{prompt, weight}] or text."""
    image = metadata.get("image")
    image = image if isinstance(image, dict) else {}
    prompt_value = image.get("prompt")
    if isinstance(prompt_value, list):
        parts = [part.get("prompt") for part in prompt_value if isinstance(part, dict)]
        prompt_value = " ".join(part for part in parts if isinstance(part, str))
    prompt, negative = split_negative(prompt_value) if isinstance(prompt_value, str) else (None, None)
    other = {**remaining(metadata, ("image", "model_weights", "model_hash")),
             **remaining(image, ("prompt", "seed", "steps", "sampler", "cfg_scale", "width", "height"))}
    return Params(
        prompt=clean_prompt(prompt), negative_prompt=clean_prompt(negative), seed=as_int(image.get("seed")),
        steps=as_int(image.get("steps")), sampler=as_text(image.get("sampler")),
        cfg_scale=as_float(image.get("cfg_scale")), width=as_int(image.get("width")),
        height=as_int(image.get("height")), model=as_text(metadata.get("model_weights")),
        model_hash=as_text(metadata.get("model_hash")), other_params=other,
    )


def parse_dream(text: str) -> Params | None:
    """`Dream`: "<prompt [negative]>" -s 50 -S 2980747362 -W 512 -H 768 -C 5 -A k_lms -G 0.9 …"""
    try:
        words = shlex.split(text)
    except ValueError:  # unbalanced quotes
        return None
    if not words:
        return None
    prompt, negative = split_negative(words[0])
    fields: dict[str, str] = {}
    other: JsonObject = {}
    index = 1
    while index < len(words):
        switch = words[index]
        values = []
        index += 1
        while index < len(words) and not re.fullmatch(r"-[A-Za-z]\w*", words[index]):
            values.append(words[index])
            index += 1
        value = " ".join(values)
        if switch in _DREAM_FIELDS:
            fields[_DREAM_FIELDS[switch]] = value
        else:
            other[_DREAM_NAMES.get(switch, switch)] = value
    return Params(
        prompt=clean_prompt(prompt), negative_prompt=clean_prompt(negative), seed=as_int(fields.get("seed")),
        steps=as_int(fields.get("steps")), sampler=fields.get("sampler"),
        cfg_scale=as_float(fields.get("cfg_scale")), width=as_int(fields.get("width")),
        height=as_int(fields.get("height")), model=fields.get("model"), other_params=other,
    )


def detect(container: Container) -> Parsed | None:
    """InvokeAI's PNG text chunks, newest format first."""
    metadata = json_object(container.text("invokeai_metadata"))
    if metadata is not None:
        params = parse_core_metadata(metadata)
        for key in ("invokeai_graph", "invokeai_workflow"):
            if container.find(key):
                params.other_params[f"has_{key.removeprefix('invokeai_')}"] = True
        version = as_text(metadata.get("app_version"))
        return Parsed(Generator("invokeai", f"InvokeAI {version}" if version else "InvokeAI"), params)
    legacy = json_object(container.text("sd-metadata"))
    if legacy is not None:
        version = as_text(legacy.get("app_version"))
        return Parsed(Generator("invokeai", f"InvokeAI {version}" if version else "InvokeAI 2.x"),
                      parse_sd_metadata(legacy))
    dream = container.text("Dream")
    parsed = parse_dream(dream) if dream is not None else None
    if parsed is not None:
        return Parsed(Generator("invokeai", "InvokeAI 1.x (dream.py)"), parsed)
    return None
