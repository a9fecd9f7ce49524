"""Generation metadata of AI images: container readers → raw entries → one normalized schema.

    extract(data, sidecars=..., stealth=True) -> Extraction
        .generator  Generator(family, tool)
        .params     Params (prompt, negative_prompt, seed, steps, sampler, scheduler, cfg_scale,
                    width, height, model, model_hash, loras, other_params)
        .container  every raw entry, in file order
        .to_json()  {"generator", "params", "raw"}

Pure throughout: bytes in, values out. docs/works.md describes the schema.
"""

from node.metadata.extract import Extraction, extract
from node.metadata.params import Generator, Lora, Params, Parsed, load_json

__all__ = ["Extraction", "Generator", "Lora", "Params", "Parsed", "extract", "load_json"]
