"""ComfyUI graphs → Params: walk back from every sampler node to its prompts, model, LoRAs and size.

Pure. The API graph (`prompt`) is what ran, so values come from it; the UI graph
(`workflow`) is read only when no API graph exists, through a small table of core
nodes' widget order. Graphs are user-editable JSON: every walk has a visited set
and a depth limit, and a link to a missing node is a dead end, not an error.

Primary sampler rule (documented in docs/works.md): the first sampler, in graph
order, whose latent does not come from another sampler and whose noise is not
disabled; failing that the first sampler. Its values fill the top-level fields;
all samplers are listed in other_params["samplers"].
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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
)
from node.metadata.raw import Container

MAX_DEPTH = 64  # links followed from one sampler input; real chains are < 20
MAX_NODES = 20_000

_PREFIXES = ("prompt:", "Prompt:", "workflow:", "Workflow:")
_TEXT_INPUTS = ("text", "text_g", "text_l", "prompt", "string", "value", "text_positive", "text_negative")
_MODEL_NAMES = ("ckpt_name", "unet_name", "model_name", "gguf_name", "model_path")
_LATENT_INPUTS = ("latent_image", "samples", "latent", "pixels", "image")
_NO_NOISE = {"disable", False}

Graph = dict[str, JsonObject]


def _link(value: JsonValue) -> tuple[str, int] | None:
    """An API-graph link ["<node id>", <output slot>] (ids may be numbers or any string)."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    node_id, slot = value
    if isinstance(node_id, str | int) and isinstance(slot, int) and not isinstance(slot, bool):
        return str(node_id), slot
    return None


def _inputs(node: JsonObject) -> JsonObject:
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def _class(node: JsonObject) -> str:
    kind = node.get("class_type")
    return kind if isinstance(kind, str) else ""


def api_graph(value: JsonValue) -> Graph | None:
    """The node dict if this JSON is an API graph (at least one node with class_type and inputs)."""
    if not isinstance(value, dict):
        return None
    nodes = {str(key): node for key, node in value.items()
             if isinstance(node, dict) and isinstance(node.get("class_type"), str)}
    if not nodes or len(nodes) > MAX_NODES:
        return None
    return nodes


class _Walk:
    """Link-following over one graph with a shared visit budget."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def source(self, value: JsonValue) -> tuple[JsonObject, int] | None:
        link = _link(value)
        if link is None or link[0] not in self.graph:
            return None
        return self.graph[link[0]], link[1]

    def literal(self, value: JsonValue, depth: int = 0) -> JsonValue:
        """A widget value, following a link to a primitive/string node when the input is converted."""
        seen = 0
        while (found := self.source(value)) is not None and seen < MAX_DEPTH:
            node, _slot = found
            seen += 1
            inputs = _inputs(node)
            value = next((inputs[name] for name in ("value", "seed", "noise_seed", "int", "float", "string",
                                                    "text", "number") if name in inputs), None)
        return None if _link(value) is not None else value

    def upstream(self, value: JsonValue, follow: tuple[str, ...]) -> Iterator[JsonObject]:
        """Nodes along a chain of `follow` inputs, nearest first; stops at cycles, dead ends, depth limit."""
        seen: set[int] = set()
        found = self.source(value)
        while found is not None and id(found[0]) not in seen and len(seen) < MAX_DEPTH:
            node = found[0]
            seen.add(id(node))
            yield node
            inputs = _inputs(node)
            found = next((link for name in follow if (link := self.source(inputs.get(name)))), None)

    def texts(self, value: JsonValue) -> tuple[list[str], float | None]:
        """Every prompt text a conditioning input comes from, and a Flux guidance on the way."""
        texts: list[str] = []
        guidance: float | None = None
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[JsonValue, int]] = [(value, 0)]
        while stack:
            link, depth = stack.pop()
            found = self.source(link)
            if found is None or depth > MAX_DEPTH or (id(found[0]), found[1]) in seen:
                continue
            node, slot = found
            seen.add((id(node), slot))
            inputs = _inputs(node)
            if _class(node) == "FluxGuidance" and guidance is None:
                guidance = as_float(inputs.get("guidance"))
            own = [text for name in _TEXT_INPUTS if name in inputs
                   and isinstance(text := self.literal(inputs[name]), str)]
            if own or "TextEncode" in _class(node):
                for text in own:
                    cleaned = clean_prompt(text)
                    if cleaned is not None and cleaned not in texts:
                        texts.append(cleaned)
                continue
            if "positive" in inputs and "negative" in inputs:  # ControlNet apply: outputs positive, negative
                stack.append((inputs["negative" if slot == 1 else "positive"], depth + 1))
                continue
            stack.extend((item, depth + 1) for name, item in reversed(list(inputs.items()))
                         if name.startswith(("conditioning", "cond")) or name in ("positive", "base_cond"))
        return texts, guidance

    def model(self, value: JsonValue) -> tuple[str | None, list[Lora]]:
        """The checkpoint/UNET a model input comes from, and the LoRAs applied on the way (nearest first)."""
        loras: list[Lora] = []
        for node in self.upstream(value, ("model", "unet", "base_model")):
            inputs = _inputs(node)
            name = as_text(self.literal(inputs.get("lora_name")))
            if name is not None:
                strength_model = as_float(self.literal(inputs.get("strength_model", inputs.get("strength"))))
                strength_clip = as_float(self.literal(inputs.get("strength_clip")))
                loras.append(Lora(name=name, weight=strength_model, strength_model=strength_model,
                                  strength_clip=strength_clip))
            for key in _MODEL_NAMES:
                model = as_text(self.literal(inputs.get(key)))
                if model is not None:
                    return model, loras
        return None, loras

    def latent(self, value: JsonValue) -> JsonObject:
        """Where a latent comes from: the size node, and every node it passed through on the way."""
        through: list[JsonValue] = []
        for node in self.upstream(value, _LATENT_INPUTS):
            inputs = _inputs(node)
            width = as_int(self.literal(inputs.get("width")))
            height = as_int(self.literal(inputs.get("height")))
            if width is not None and height is not None:
                out: JsonObject = {"latent_width": width, "latent_height": height,
                                   "latent_node": _class(node)}
                if through:
                    out["latent_comes_through"] = through
                return out
            through.append(_class(node))
        return {"latent_width": None, "latent_height": None, "latent_node": None}


def is_sampler(node: JsonObject) -> bool:
    """KSampler, KSamplerAdvanced, SamplerCustom(Advanced) and custom samplers built alike."""
    inputs = _inputs(node)
    return "latent_image" in inputs and any(name in inputs for name in ("seed", "noise_seed", "noise"))


def _sampler(walk: _Walk, node_id: str, node: JsonObject) -> tuple[JsonObject, list[Lora]]:
    inputs = _inputs(node)
    noise = walk.source(inputs.get("noise"))
    noise_inputs = _inputs(noise[0]) if noise else {}
    seed = walk.literal(inputs.get("seed", inputs.get("noise_seed", noise_inputs.get("noise_seed"))))
    picker = walk.source(inputs.get("sampler"))
    sigmas = walk.source(inputs.get("sigmas"))
    sigma_inputs = _inputs(sigmas[0]) if sigmas else {}
    guider = walk.source(inputs.get("guider"))
    guider_inputs = _inputs(guider[0]) if guider else {}

    sampler_name = walk.literal(inputs.get("sampler_name"))
    if sampler_name is None and picker is not None:
        sampler_name = walk.literal(_inputs(picker[0]).get("sampler_name")) or _class(picker[0])
    scheduler = walk.literal(inputs.get("scheduler", sigma_inputs.get("scheduler")))
    if scheduler is None and sigmas is not None:
        scheduler = _class(sigmas[0])
    conditioning = {**guider_inputs, **inputs}
    positive, guidance = walk.texts(conditioning.get("positive", conditioning.get("conditioning")))
    negative, _ = walk.texts(conditioning.get("negative"))
    model, loras = walk.model(inputs.get("model", guider_inputs.get("model")))
    out: JsonObject = {
        "node_id": node_id, "class_type": _class(node),
        "seed": as_int(seed),
        "steps": as_int(walk.literal(inputs.get("steps", sigma_inputs.get("steps")))),
        "sampler": as_text(sampler_name), "scheduler": as_text(scheduler),
        "cfg_scale": as_float(walk.literal(inputs.get("cfg", guider_inputs.get("cfg")))),
        "denoise": as_float(walk.literal(inputs.get("denoise", sigma_inputs.get("denoise")))),
        "positive": _json_list(positive), "negative": _json_list(negative),
        "model": model, "loras": [lora.to_json() for lora in loras],
    }
    if guidance is not None:
        out["flux_guidance"] = guidance
    if guider is not None:
        out["guider"] = _class(guider[0])
    add_noise = walk.literal(inputs.get("add_noise"))
    if add_noise is not None:
        out["add_noise"] = add_noise
    out.update(walk.latent(inputs.get("latent_image")))
    return out, loras


def _json_list(texts: list[str]) -> list[JsonValue]:
    return list(texts)


@dataclass(frozen=True, slots=True)
class GraphReading:
    """Every sampler of one graph and the index of the primary one (None when there are no samplers)."""

    samplers: list[JsonObject]
    primary: int | None
    loras: list[Lora]


def read_graph(graph: Graph) -> GraphReading:
    walk = _Walk(graph)
    samplers: list[JsonObject] = []
    loras_by_sampler: list[list[Lora]] = []
    for node_id, node in graph.items():
        if is_sampler(node):
            sampler, loras = _sampler(walk, node_id, node)
            samplers.append(sampler)
            loras_by_sampler.append(loras)
    starts = [i for i, sampler in enumerate(samplers)
              if "latent_comes_through" not in sampler and sampler.get("add_noise") not in _NO_NOISE]
    primary = starts[0] if starts else (0 if samplers else None)
    return GraphReading(samplers, primary, loras_by_sampler[primary] if primary is not None else [])


def params_from_graph(graph: Graph, other: JsonObject | None = None) -> Params:
    """The primary sampler's values as Params; every sampler in other_params["samplers"]."""
    reading = read_graph(graph)
    other_params: JsonObject = dict(other or {})
    if reading.primary is None:
        other_params["samplers"] = []
        return Params(other_params=other_params)
    first = reading.samplers[reading.primary]
    positive, negative = first["positive"], first["negative"]
    other_params["denoise"] = first["denoise"]
    if "flux_guidance" in first:
        other_params["flux_guidance"] = first["flux_guidance"]
    other_params["primary_sampler"] = first["node_id"]
    other_params["samplers"] = [*reading.samplers]
    return Params(
        prompt=_join(positive), negative_prompt=_join(negative),
        seed=as_int(first["seed"]), steps=as_int(first["steps"]), sampler=as_text(first["sampler"]),
        scheduler=as_text(first["scheduler"]), cfg_scale=as_float(first["cfg_scale"]),
        width=as_int(first["latent_width"]), height=as_int(first["latent_height"]),
        model=as_text(first["model"]), loras=tuple(reading.loras), other_params=other_params,
    )


def _join(texts: JsonValue) -> str | None:
    """Several prompts (area composition, SDXL text_g/text_l) become one text, a blank line apart."""
    if not isinstance(texts, list) or not texts:
        return None
    return "\n\n".join(str(text) for text in texts)


# ------------------------------------------------------------- UI workflow

# Widget names of core nodes in widgets_values order; "*" is the UI-only "control after generate".
_WIDGETS: dict[str, tuple[str, ...]] = {
    "KSampler": ("seed", "*", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": ("add_noise", "noise_seed", "*", "steps", "cfg", "sampler_name", "scheduler",
                         "start_at_step", "end_at_step", "return_with_leftover_noise"),
    "SamplerCustom": ("add_noise", "noise_seed", "*", "cfg"),
    "RandomNoise": ("noise_seed", "*"),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "CFGGuider": ("cfg",),
    "FluxGuidance": ("guidance",),
    "CLIPTextEncode": ("text",),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "EmptyHunyuanLatentVideo": ("width", "height", "length", "batch_size"),
}
_CONTROL = {"fixed", "randomize", "increment", "decrement"}
_MUTED, _BYPASSED = 2, 4


def ui_to_api(workflow: JsonObject) -> Graph | None:
    """A LiteGraph UI workflow as an API graph, for the core nodes whose widget order is known.

    Muted nodes are dropped; links out of bypassed nodes and Reroutes are followed to
    the node feeding them, as the front-end does before it queues a job.
    """
    nodes = workflow.get("nodes")
    links = workflow.get("links")
    if not isinstance(nodes, list) or not isinstance(links, list) or len(nodes) > MAX_NODES:
        return None
    by_id = {str(node.get("id")): node for node in nodes if isinstance(node, dict)}
    link_from: dict[int, tuple[str, int]] = {}
    for link in links:
        if (isinstance(link, list) and len(link) >= 5 and isinstance(link[0], int)
                and isinstance(link[2], int)):
            link_from[link[0]] = (str(link[1]), link[2])

    def resolve(link_id: JsonValue) -> list[JsonValue] | None:
        for _ in range(MAX_DEPTH):
            if not isinstance(link_id, int) or link_id not in link_from:
                return None
            node_id, slot = link_from[link_id]
            node = by_id.get(node_id)
            if node is None or node.get("mode") == _MUTED:
                return None
            if node.get("mode") != _BYPASSED and node.get("type") != "Reroute":
                return [node_id, slot]
            link_id = _first_link(node)
        return None

    graph: Graph = {}
    for node_id, node in by_id.items():
        kind = node.get("type")
        if not isinstance(kind, str) or node.get("mode") in (_MUTED, _BYPASSED) or kind == "Reroute":
            continue
        inputs: JsonObject = _widgets(kind, node.get("widgets_values"))
        for slot in _slots(node):
            name = slot.get("name")
            source = resolve(slot.get("link"))
            if isinstance(name, str) and source is not None:
                inputs[name] = source
        graph[node_id] = {"class_type": kind, "inputs": inputs}
    return graph or None


def _slots(node: JsonObject) -> list[JsonObject]:
    slots = node.get("inputs")
    return [slot for slot in slots if isinstance(slot, dict)] if isinstance(slots, list) else []


def _first_link(node: JsonObject) -> JsonValue:
    return next((slot["link"] for slot in _slots(node) if slot.get("link") is not None), None)


def _widgets(kind: str, values: JsonValue) -> JsonObject:
    if isinstance(values, dict):
        return dict(values)
    if kind == "PrimitiveNode" and isinstance(values, list) and values:
        return {"value": values[0]}  # the UI-only node that feeds a converted widget
    names = _WIDGETS.get(kind)
    if names is None or not isinstance(values, list):
        return {}
    out: JsonObject = {}
    position = 0
    for name in names:
        if position >= len(values):
            break
        if name == "*":
            if values[position] in _CONTROL or isinstance(values[position], bool):  # old files: true
                position += 1
            continue
        out[name] = values[position]
        position += 1
    return out


# ------------------------------------------------------------------ detection

@dataclass(frozen=True, slots=True)
class Graphs:
    """The ComfyUI JSON documents found in a file."""

    api: Graph | None
    workflow: JsonObject | None
    extra: JsonObject  # top-level keys next to the nodes (Civitai "extra", "extraMetadata")
    location: str | None


def find_graphs(container: Container) -> Graphs:
    """The API graph and UI workflow wherever a core or custom save node put them."""
    api: Graph | None = None
    workflow: JsonObject | None = None
    extra: JsonObject = {}
    location: str | None = None
    for entry in container.entries:
        if not isinstance(entry.value, str) or entry.key in ("parameters-json", "smproj"):
            continue
        text = entry.value.lstrip("\x00 ")
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
        if not text.lstrip().startswith("{"):
            continue
        document = json_object(text)
        if document is None:
            continue
        parts = [document.get("prompt"), document.get("workflow")] if "workflow" in document else [document]
        for part in parts:
            if not isinstance(part, dict):
                continue
            graph = api_graph(part)
            if graph is not None and api is None:
                api, location = graph, f"{entry.source} {entry.key}"
                extra = {key: value for key, value in part.items() if key not in graph}
            elif graph is None and isinstance(part.get("nodes"), list) and workflow is None:
                workflow = part
    return Graphs(api, workflow, extra, location)


def detect(container: Container) -> Parsed | None:
    """A ComfyUI API graph (preferred) or UI workflow anywhere in the file."""
    graphs = find_graphs(container)
    other: JsonObject = {}
    graph = graphs.api
    if graph is None and graphs.workflow is not None:
        graph = ui_to_api(graphs.workflow)
        other["read_from"] = "workflow (UI graph; values of core nodes only)"
    if graph is None:
        return None
    if graphs.workflow is not None:
        other["has_workflow"] = True
    tool = "ComfyUI"
    extra = json_object(as_text(graphs.extra.get("extraMetadata")))
    if extra is not None:  # Civitai on-site generator: its own summary next to the graph
        tool = "Civitai (ComfyUI)"
        other["civitai_extra_metadata"] = extra
    params = params_from_graph(graph, other)
    return Parsed(Generator("comfyui", tool), params)
