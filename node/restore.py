"""What `artkeep restore` writes for a work: the image, its settings, its workflow, its sidecars.

Pure: a decoded work record and a function that returns a stored file's
bytes in; (file name, bytes) pairs out. Names come from the record but are
reduced to a safe base name, so a record can never write outside the
target folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

from node.cid import Cid
from node.dagcbor import Value

ReadFile = Callable[[Cid], bytes]
# Raw entries that hold a generator's workflow or graph, and the file each becomes.
WORKFLOW_FILES = {
    "workflow": "workflow.json", "prompt": "prompt.json", "invokeai_graph": "invokeai_graph.json",
    "invokeai_workflow": "invokeai_workflow.json", "invokeai_metadata": "invokeai_metadata.json",
    "sui_image_params": "swarmui_params.json", "Comment": "comment.json",
}


def safe_name(name: str, fallback: str) -> str:
    """The last path segment of name, without control characters; fallback if nothing usable is left."""
    base = PurePosixPath(name.replace("\\", "/")).name
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '/\\:*?"<>|')
    return base if base not in ("", ".", "..") else fallback


def files(record: Mapping[str, Value], read_file: ReadFile) -> Iterator[tuple[str, bytes]]:
    """Every file to write, image first."""
    image = record["image"]
    assert isinstance(image, dict) and isinstance(image["cid"], Cid)
    provenance = record.get("provenance")
    original = provenance.get("file_name") if isinstance(provenance, dict) else None
    image_name = safe_name(str(original or ""), f"{image['cid']}.{str(image.get('format') or 'bin').lower()}")
    yield image_name, read_file(image["cid"])
    params = record.get("params")
    params = params if isinstance(params, dict) else {}
    yield "params.json", _json({"generator": record.get("generator"), "params": plain_params(params)})
    raw_text: dict[str, str] = {}
    for entry in record.get("raw") or []:  # type: ignore[union-attr]
        if not isinstance(entry, dict):
            continue
        key = str(entry.get("key"))
        text = _entry_text(entry, read_file)
        if text is not None:
            raw_text.setdefault(key, text)
    for key, file_name in WORKFLOW_FILES.items():
        text = raw_text.get(key)
        if text is not None and is_json(text):
            yield file_name, text.encode("utf-8")
    infotext = raw_text.get("parameters")
    if infotext is None or "Steps:" not in infotext:
        infotext = a1111_infotext(params)
    yield "parameters.txt", infotext.encode("utf-8")
    for sidecar in record.get("sidecars") or []:  # type: ignore[union-attr]
        if isinstance(sidecar, dict) and isinstance(sidecar.get("file"), Cid):
            yield safe_name(str(sidecar.get("name")), "sidecar"), read_file(sidecar["file"])  # type: ignore[arg-type]


def _entry_text(entry: Mapping[str, Value], read_file: ReadFile) -> str | None:
    if isinstance(entry.get("text"), str):
        return str(entry["text"])
    if isinstance(entry.get("file"), Cid) and entry.get("encoding") == "utf-8":
        return read_file(entry["file"]).decode("utf-8")  # type: ignore[arg-type]
    return None


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _json(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def plain_params(params: Mapping[str, Value]) -> dict[str, Any]:
    """Params as JSON: a seed kept as a decimal string (past 64 bits) becomes an integer again."""
    out = dict(params)
    seed = out.get("seed")
    if isinstance(seed, str) and seed.lstrip("-").isdigit():
        out["seed"] = int(seed)
    return out


def a1111_infotext(params: Mapping[str, Any]) -> str:
    """The settings in AUTOMATIC1111's infotext form, which its PNG Info tab reads back."""
    lines = [str(params.get("prompt") or "")]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields: list[tuple[str, Any]] = [
        ("Steps", params.get("steps")), ("Sampler", params.get("sampler")),
        ("Schedule type", params.get("scheduler")), ("CFG scale", params.get("cfg_scale")),
        ("Seed", params.get("seed")),
        ("Size", f"{params['width']}x{params['height']}" if params.get("width") and params.get("height")
         else None),
        ("Model hash", params.get("model_hash")), ("Model", params.get("model")),
    ]
    loras = params.get("loras")
    if isinstance(loras, list) and loras:
        names = ", ".join(f"{lora.get('name')}: {lora.get('weight') if lora.get('weight') is not None else 1}"
                          for lora in loras if isinstance(lora, dict))
        fields.append(("Lora weights", f'"{names}"'))
    lines.append(", ".join(f"{name}: {value}" for name, value in fields if value not in (None, "")))
    return "\n".join(lines) + "\n"
