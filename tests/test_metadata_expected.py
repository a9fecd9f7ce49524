"""Every fixture image in ../shared/fixtures/images reads to what expected.json says, end to end.

Each expected field of each file is checked: generator family, the normalized
fields, LoRAs, the other_params keys listed, ComfyUI samplers and the C2PA summary.
Where expected.json lists an ambiguity, AMBIGUITY_CHOICES names the reading taken.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from node.errors import CodecError, ImageUnreadable
from node.metadata import extract

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "images"
EXPECTED: dict[str, Any] = (json.loads((IMAGES / "expected.json").read_text())["files"]
                            if IMAGES.exists() else {})

FIELDS = ("prompt", "negative_prompt", "seed", "steps", "sampler", "scheduler", "cfg_scale", "width",
          "height", "model", "model_hash")
# expected.json keys that are not Params fields land in other_params under the same name.
OTHER_KEYS = ("denoise", "flux_guidance", "model_version", "civitai_model_version_id")
C2PA_KEYS = ("present", "manifest_count", "active_claim_generator", "action", "digital_source_type",
             "signer_issuer", "signature_valid")  # "note" is prose; trust depends on the trust list

# The reading chosen where expected.json allows more than one, and why.
AMBIGUITY_CHOICES = {
    "a1111_from_comfyui_png_named_jpeg.jpeg":
        "model from the Hashes JSON key 'Model:flux1-dev-fp8' (the only place the name is), hash from "
        "Hashes.model; the infotext has no Model key.",
    "civitai.jpeg":
        "model = the checkpoint's Civitai resource name; version and modelVersionId go to other_params "
        "(model_version, civitai_model_version_id) so the AIR can be rebuilt.",
    "comfyui_sdxl_refiner.png":
        "primary sampler = first one whose latent is not from another sampler and whose noise is on: "
        "the base (node 10, seed 6767725640732); the refiner (add_noise off, seed 0) is only in samplers.",
    "comfyui_flux_dev.png":
        "cfg_scale None (BasicGuider has none); Flux guidance 3.5 kept apart as other_params.flux_guidance.",
    "invokeai_dream_legacy.png":
        "the [bracketed] part of the quoted prompt is the negative prompt; the prompt is the rest, stripped.",
    "novelai_legacy_cropped.png": "width/height None: the 2022 Comment JSON does not record them.",
    "fooocus_scheme_fooocus_cropped.png":
        "prompt = the user prompt; the style-expanded full_prompt list stays in other_params.",
    "stability_matrix.png":
        "family a1111 (tool Stability Matrix) from the authored infotext with '#テスト'; the executed "
        "ComfyUI graph, which dropped the '#' comment, is kept as an alternate in other_params.alternates.",
    "c2pa_firefly_gemini.png":
        "tool = the claim generator (Adobe_Firefly), model = com.adobe.modelId (gemini-flash), "
        "model_version = com.adobe.modelVersion: both the signer and the model are recorded.",
}


def close(actual: object, expected: object) -> bool:
    if isinstance(expected, float) and isinstance(actual, int | float):
        return math.isclose(actual, expected)
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(key in actual and close(actual[key], value) for key, value in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(map(close, actual, expected))
    return type(actual) is type(expected) and actual == expected


def test_every_fixture_is_listed() -> None:
    if not IMAGES.exists():
        pytest.skip("../shared/fixtures/images not present")
    on_disk = {path.name for path in IMAGES.iterdir() if path.name != "expected.json"}
    assert on_disk == set(EXPECTED)
    assert set(AMBIGUITY_CHOICES) == {name for name, entry in EXPECTED.items() if entry.get("ambiguities")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_reads_as_expected(name: str) -> None:
    entry = EXPECTED[name]
    expected = entry["expected"]
    data = (IMAGES / name).read_bytes()
    if entry["container"] is None:
        with pytest.raises(ImageUnreadable) as raised:
            extract(data)
        assert isinstance(raised.value, CodecError)
        assert "empty" in raised.value.message
        return

    result = extract(data)
    params: dict[str, Any] = result.params.to_json()
    other: dict[str, Any] = params["other_params"]
    assert result.generator.family == entry["generator_family"]
    for field in FIELDS:
        if field in expected:
            assert close(params[field], expected[field]), (field, params[field], expected[field])
    if "loras" in expected:
        assert close(params["loras"], expected["loras"]), params["loras"]
    for key, value in expected.get("other_params", {}).items():
        assert key in other and close(other[key], value), (key, other.get(key), value)
    for key in OTHER_KEYS:
        if key in expected:
            assert close(other.get(key), expected[key]), (key, other.get(key))
    if "samplers" in expected:
        assert close(other["samplers"], expected["samplers"]), other["samplers"]
    if "c2pa" in expected:
        summary = {key: value for key, value in expected["c2pa"].items() if key in C2PA_KEYS}
        assert close(other["c2pa"], summary), other["c2pa"]
        assert result.c2pa == other["c2pa"]
    if "other" in expected:  # a re-saved file: editor fields kept, never mistaken for a prompt
        assert other["software"] == expected["other"]["software"]
        assert other["image_description"] == expected["other"]["image_description"]
    if "error" in expected:
        assert result.container.problems, "a malformed file names what is wrong"
    assert result.container.format == entry["container"]
    # The record is plain, strict JSON and keeps every raw entry.
    record = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert set(record) == {"generator", "params", "raw"}
    assert len(record["raw"]["entries"]) == len(result.entries)


def test_fooocus_seed_above_2_to_the_53_stays_exact() -> None:
    if not IMAGES.exists():
        pytest.skip("../shared/fixtures/images not present")
    result = extract((IMAGES / "fooocus_scheme_fooocus_cropped.png").read_bytes())
    assert result.params.seed == 6952411511246973023
    assert '"seed": 6952411511246973023' in json.dumps(result.to_json())
