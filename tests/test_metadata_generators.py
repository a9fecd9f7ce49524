"""The generator parsers read hand-built containers right, and garbage never crashes them.

Containers are built from RawEntry values here (no image bytes) except where a
test is about extract() end to end; those write a tiny PNG with Pillow.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from node.errors import CodecError, ImageUnreadable, MetadataJsonError
from node.metadata import (
    a1111,
    comfyui,
    extract,
    fooocus,
    invokeai,
    load_json,
    novelai,
    others,
    sidecar,
    swarmui,
)
from node.metadata.container import read_container
from node.metadata.extract import detect_all
from node.metadata.params import MAX_JSON_DEPTH, Generator, Parsed, as_float, as_int, nesting_depth
from node.metadata.raw import Container, RawEntry

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "images"


def container(*entries: tuple[str, str, str | bytes]) -> Container:
    return Container(format="PNG", entries=tuple(RawEntry(*entry) for entry in entries))


def plain(value: object) -> Any:
    """A JSON value as loosely typed data for assertions (and proof that it is plain JSON)."""
    return json.loads(json.dumps(value, allow_nan=False))


def png_with(**chunks: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", (2, 2)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


# ------------------------------------------------------------- strict JSON

def test_json_integers_stay_exact_at_any_size() -> None:
    assert load_json('{"seed": 6952411511246973023}') == {"seed": 6952411511246973023}
    assert load_json("[123456789012345678901234567890]") == [123456789012345678901234567890]


def test_json_with_an_integer_beyond_what_int_accepts_is_refused_not_crashed() -> None:
    with pytest.raises(MetadataJsonError, match="out of range"):
        load_json("[" + "9" * 5000 + "]")


@pytest.mark.parametrize("depth", [300, 100_000])
def test_deeply_nested_json_is_refused_without_recursion_error(depth: int) -> None:
    with pytest.raises(MetadataJsonError, match="nest"):
        load_json("[" * depth + "]" * depth)
    with pytest.raises(MetadataJsonError):
        load_json('{"a":' * depth + "1" + "}" * depth)


def test_json_depth_limit_is_exact_whether_or_not_the_brackets_are_counted() -> None:
    assert nesting_depth(load_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)) == MAX_JSON_DEPTH
    with pytest.raises(MetadataJsonError, match="nest"):
        load_json("{\"a\": " + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}")
    wide = "[" + ",".join(["[{}]"] * 1000) + "]"  # 2,001 brackets, 3 levels: walked, and accepted
    assert nesting_depth(load_json(wide)) == 3
    strings = '["' + "[" * 1000 + '"]'  # brackets inside a string only make the check walk
    assert load_json(strings) == ["[" * 1000]


def test_nan_and_infinity_become_null_or_are_refused() -> None:
    assert load_json('{"cfg": NaN, "x": [Infinity, -Infinity]}') == {"cfg": None, "x": [None, None]}
    with pytest.raises(MetadataJsonError, match="NaN"):
        load_json('{"cfg": NaN}', nan="reject")


def test_trailing_nuls_are_dropped_but_other_trailing_text_is_refused() -> None:
    assert load_json('{"seed": "-1"}\x00\x00') == {"seed": "-1"}
    with pytest.raises(MetadataJsonError, match="text follows"):
        load_json('{"a": 1} {"b": 2}')


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(MetadataJsonError, match="twice"):
        load_json('{"seed": 1, "seed": 2}')


def test_json_bytes_must_be_utf8_and_lone_surrogates_are_replaced() -> None:
    with pytest.raises(MetadataJsonError, match="UTF-8"):
        load_json(b'{"prompt": "\xff"}')
    assert load_json('{"p": "a\\ud800b", "\\udfff": 1}') == {"p": "a\ufffdb", "\ufffd": 1}


def test_json_errors_belong_to_the_codec_error_tree() -> None:
    with pytest.raises(CodecError):
        load_json("{not json")
    with pytest.raises(MetadataJsonError, match="limit"):
        load_json("[1]", max_chars=2)


def test_numbers_are_read_without_passing_seeds_through_float() -> None:
    assert as_int("6952411511246973023") == 6952411511246973023
    assert as_int(" -1 ") == -1
    assert as_int(5.0) == 5 and as_int(5.5) is None and as_int(True) is None and as_int("five") is None
    assert as_float("5.5") == 5.5 and as_float(float("nan")) is None and as_float("inf") is None


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_any_text_either_loads_or_raises_metadata_json_error(text: str) -> None:
    with contextlib.suppress(MetadataJsonError):
        load_json(text)


# --------------------------------------------------------------------- A1111

INFOTEXT = (
    "a <lora:detail:0.6> cat, <lyco:style:1.2>\n<lora:bare>\r\nNegative prompt: dog\nsecond line\n"
    'Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 18446744073709551617, '
    'Size: 832x1216, Model hash: abc123, Model: m, Lora hashes: "detail: 1111, style: 2222", '
    'Hires upscale: 1.5, ADetailer model: face_yolov8n.pt, Civitai metadata: {"a": [1, {"b": "x, y"}]}, '
    'Broken: {not json, Version: v1.10.1\n'
    "Template: a __animal__\nNegative Template: dog"
)


def test_infotext_splits_prompt_negative_and_the_last_steps_line() -> None:
    params = a1111.parse_infotext(INFOTEXT)
    assert params.prompt == "a <lora:detail:0.6> cat, <lyco:style:1.2>\n<lora:bare>"
    assert params.negative_prompt == "dog\nsecond line"
    assert (params.steps, params.sampler, params.scheduler) == (30, "DPM++ 2M", "Karras")
    assert params.cfg_scale == 7.0
    assert params.seed == 18446744073709551617
    assert (params.width, params.height, params.model, params.model_hash) == (832, 1216, "m", "abc123")


def test_infotext_quoted_and_bare_json_values_keep_their_commas() -> None:
    other = a1111.parse_infotext(INFOTEXT).other_params
    assert other["Lora hashes"] == "detail: 1111, style: 2222"
    assert other["Civitai metadata"] == {"a": [1, {"b": "x, y"}]}
    assert other["Hires upscale"] == "1.5" and other["ADetailer model"] == "face_yolov8n.pt"
    assert other["Broken"] == "{not json"  # unbalanced JSON falls back to plain text
    assert other["Version"] == "v1.10.1"
    assert other["Template"] == "a __animal__" and other["Negative Template"] == "dog"


def test_infotext_lora_tags_with_weights_and_hashes() -> None:
    loras = [lora.to_json() for lora in a1111.parse_infotext(INFOTEXT).loras]
    assert loras == [{"name": "detail", "weight": 0.6, "hash": "1111"},
                     {"name": "style", "weight": 1.2, "hash": "2222"},
                     {"name": "bare", "weight": 1.0, "hash": None}]


def test_infotext_without_negative_line_has_no_negative_and_empty_negative_is_empty() -> None:
    assert a1111.parse_infotext("cat\nSteps: 1, Seed: 2").negative_prompt is None
    assert a1111.parse_infotext("cat\nNegative prompt: \nSteps: 1").negative_prompt == ""


def test_parameters_text_without_steps_line_is_not_taken_for_a1111() -> None:
    assert a1111.detect(container(("png:tEXt", "parameters", "just a caption"))) is None
    assert a1111.detect(container(("png:tEXt", "parameters", b"\xff\xfeSteps: 3"))) is None


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab:, "{}[]\\\nStepsNegative prompt<lora>0123.')), max_size=300))
def test_infotext_parser_never_crashes_on_garbage(text: str) -> None:
    a1111.parse_infotext("Steps: 1, " + text)
    a1111.parse_infotext(text)


# ------------------------------------------------------------------- ComfyUI

def ksampler_graph(**override: object) -> dict[str, Any]:
    graph: dict[str, Any] = {
        "s": {"class_type": "KSampler", "inputs": {
            "seed": ["seed_node", 0], "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": ["lora", 0], "positive": ["pos", 0], "negative": ["neg", 0],
            "latent_image": ["latent", 0]}},
        "seed_node": {"class_type": "PrimitiveInt", "inputs": {"value": 2 ** 64 + 1}},
        "lora": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "x.safetensors",
                                                                  "strength_model": 0.5, "model": [4, 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": ["str", 0], "clip": ["4", 1]}},
        "str": {"class_type": "PrimitiveString", "inputs": {"value": "a cat\r\n"}},
        "neg": {"class_type": "ConditioningCombine", "inputs": {
            "conditioning_1": ["n1", 0], "conditioning_2": ["n2", 0]}},
        "n1": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "n2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "ugly", "text_l": "ugly"}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 480}},
    }
    graph.update(override)
    return graph


def comfy(graph: object) -> Parsed | None:
    return comfyui.detect(container(("png:tEXt", "prompt", json.dumps(graph))))


def test_comfyui_walks_links_through_string_ids_primitives_and_combines() -> None:
    parsed = comfy(ksampler_graph())
    assert parsed is not None
    params = parsed.params
    assert params.seed == 2 ** 64 + 1 and params.prompt == "a cat"
    assert params.negative_prompt == "blurry\n\nugly"
    assert (params.model, params.width, params.height) == ("base.safetensors", 640, 480)
    assert [lora.to_json() for lora in params.loras] == [
        {"name": "x.safetensors", "weight": 0.5, "hash": None, "strength_model": 0.5, "strength_clip": None}]


def test_comfyui_graph_cycles_end_the_walk() -> None:
    graph = ksampler_graph(
        lora={"class_type": "LoraLoader", "inputs": {"lora_name": "loop", "model": ["lora", 0]}},
        neg={"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["neg", 0]}},
        latent={"class_type": "LatentUpscaleBy", "inputs": {"samples": ["s", 0]}},
    )
    parsed = comfy(graph)
    assert parsed is not None
    assert parsed.params.model is None and [lora.name for lora in parsed.params.loras] == ["loop"]
    assert parsed.params.negative_prompt is None and parsed.params.width is None


def test_comfyui_dangling_links_and_junk_inputs_are_dead_ends() -> None:
    graph = ksampler_graph(
        pos={"class_type": "CLIPTextEncode", "inputs": {"text": ["missing", 0]}},
        lora={"class_type": "LoraLoader", "inputs": {"model": ["nowhere", 7], "lora_name": 12}},
        latent="not a node",
    )
    graph["s"]["inputs"]["negative"] = [None, "x"]
    parsed = comfy(graph)
    assert parsed is not None
    assert (parsed.params.prompt, parsed.params.negative_prompt, parsed.params.model) == (None, None, None)
    assert parsed.params.seed == 2 ** 64 + 1


def test_comfyui_long_chains_stop_at_the_depth_limit() -> None:
    chain = {f"m{i}": {"class_type": "ModelSamplingSD3", "inputs": {"model": [f"m{i + 1}", 0]}}
             for i in range(comfyui.MAX_DEPTH * 3)}
    chain[f"m{comfyui.MAX_DEPTH * 3}"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "far"}}
    graph = ksampler_graph(**chain)
    graph["s"]["inputs"]["model"] = ["m0", 0]
    parsed = comfy(graph)
    assert parsed is not None and parsed.params.model is None


def test_comfyui_flux_style_sampler_custom_advanced() -> None:
    graph = {
        "13": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["25", 0], "guider": ["22", 0], "sampler": ["16", 0], "sigmas": ["17", 0],
            "latent_image": ["27", 0]}},
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "17": {"class_type": "SDTurboScheduler", "inputs": {"steps": 4, "model": ["12", 0]}},
        "22": {"class_type": "CFGGuider", "inputs": {"model": ["12", 0], "cfg": 1.5, "positive": ["26", 0],
                                                     "negative": ["6", 0]}},
        "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "fox"}},
        "12": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux.safetensors"}},
        "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 32}},
    }
    parsed = comfy(graph)
    assert parsed is not None
    params = parsed.params
    assert (params.seed, params.steps, params.sampler) == (7, 4, "euler")
    assert params.scheduler == "SDTurboScheduler"
    assert (params.cfg_scale, params.model, params.prompt) == (1.5, "flux.safetensors", "fox")
    assert params.other_params["flux_guidance"] == 3.5
    sampler = plain(params.other_params["samplers"])[0]
    assert sampler["guider"] == "CFGGuider" and sampler["negative"] == ["fox"]


@pytest.mark.parametrize("text", ["prompt:[1, 2]", '{"a": {"class_type": 3}}', "{" * 5000, "Prompt: NaN", ""])
def test_comfyui_garbage_is_not_a_graph(text: str) -> None:
    assert comfyui.detect(container(("exif", "Model", text))) is None


def test_comfyui_graph_without_samplers_is_still_comfyui_with_no_settings() -> None:
    parsed = comfy({"1": {"class_type": "SaveImage", "inputs": {}}})
    assert parsed is not None and parsed.params.prompt is None
    assert parsed.params.other_params["samplers"] == []


def test_comfyui_ui_workflow_alone_is_read_for_core_nodes_with_bypass_and_mute() -> None:
    workflow = {
        "nodes": [
            {"id": 1, "type": "KSampler", "mode": 0,
             "widgets_values": [5, "randomize", 12, 6.5, "euler", "karras", 1],
             "inputs": [{"name": "model", "link": 1}, {"name": "positive", "link": 2},
                        {"name": "negative", "link": 3}, {"name": "latent_image", "link": 4}]},
            {"id": 2, "type": "LoraLoader", "mode": 4, "widgets_values": ["off.safetensors", 1, 1],
             "inputs": [{"name": "model", "link": 5}]},
            {"id": 3, "type": "CheckpointLoaderSimple", "mode": 0, "widgets_values": ["ck.safetensors"]},
            {"id": 4, "type": "CLIPTextEncode", "mode": 0, "widgets_values": ["hello"]},
            {"id": 5, "type": "CLIPTextEncode", "mode": 2, "widgets_values": ["muted"]},
            {"id": 6, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "link": 7}]},
            {"id": 7, "type": "EmptyLatentImage", "mode": 0, "widgets_values": [512, 768, 1]},
        ],
        "links": [[1, 2, 0, 1, 0, "MODEL"], [5, 3, 0, 2, 0, "MODEL"], [2, 4, 0, 1, 1, "CONDITIONING"],
                  [3, 5, 0, 1, 2, "CONDITIONING"], [4, 6, 0, 1, 3, "LATENT"], [7, 7, 0, 6, 0, "LATENT"]],
    }
    parsed = comfyui.detect(container(("png:tEXt", "workflow", json.dumps(workflow))))
    assert parsed is not None
    params = parsed.params
    assert (params.seed, params.steps, params.cfg_scale, params.sampler, params.scheduler) == (
        5, 12, 6.5, "euler", "karras")
    assert (params.prompt, params.negative_prompt, params.model) == ("hello", None, "ck.safetensors")
    assert params.loras == () and (params.width, params.height) == (512, 768)
    assert "workflow" in str(params.other_params["read_from"])


COMFY_FIXTURES = ["comfyui_flux_dev.png", "comfyui_lora_multiple.png", "comfyui_sdxl_refiner.png",
                  "comfyui_wan_t2v_animated.webp", "comfyui_save_image_extended.webp"]


@pytest.mark.parametrize("name", COMFY_FIXTURES)
def test_comfyui_ui_workflow_of_each_fixture_reads_like_its_api_graph(name: str) -> None:
    if not IMAGES.exists():
        pytest.skip("../shared/fixtures/images not present")
    graphs = comfyui.find_graphs(read_container((IMAGES / name).read_bytes()))
    assert graphs.api is not None and graphs.workflow is not None
    from_api = comfyui.params_from_graph(graphs.api).to_json()
    ui_graph = comfyui.ui_to_api(graphs.workflow)
    assert ui_graph is not None
    from_ui = comfyui.params_from_graph(ui_graph).to_json()
    differ = {key for key in from_api if key != "other_params" and from_api[key] != from_ui[key]}
    # The UI keeps the authored "/* テスト */" comment that the front-end strips before queueing.
    assert differ == ({"prompt"} if name == "comfyui_save_image_extended.webp" else set())


# ------------------------------------------------------------ other families

def test_invokeai_legacy_formats() -> None:
    text = '"a cat [dog, blur]" -s 10 -S 42 -W 64 -H 32 -C 7.5 -A ddim -x 1 2'
    dream = container(("png:tEXt", "Dream", text))
    parsed = invokeai.detect(dream)
    assert parsed is not None
    assert (parsed.params.prompt, parsed.params.negative_prompt) == ("a cat", "dog, blur")
    assert parsed.params.seed == 42
    assert parsed.params.other_params == {"-x": "1 2"}
    assert invokeai.detect(container(("png:tEXt", "Dream", '"unbalanced -s 10'))) is None
    sd = {"model_weights": "sd-1.5", "model_hash": "ff" * 32, "app_version": "2.3.0",
          "image": {"prompt": [{"prompt": "owl [ugly]", "weight": 1}], "seed": 9, "steps": 5,
                    "sampler": "k_lms",
                    "cfg_scale": 7, "width": 512, "height": 512, "type": "txt2img"}}
    parsed = invokeai.detect(container(("png:tEXt", "sd-metadata", json.dumps(sd))))
    assert parsed is not None and parsed.generator.tool == "InvokeAI 2.3.0"
    assert (parsed.params.prompt, parsed.params.negative_prompt) == ("owl", "ugly")
    assert parsed.params.model == "sd-1.5"


def test_invokeai_3x_model_refs_and_loras() -> None:
    metadata = {"positive_prompt": "p", "model": {"model_name": "m3", "base_model": "sd-1"},
                "scheduler": "ddim",
                "loras": [{"lora": {"model_name": "l3"}, "weight": 0.7},
                          {"model": {"name": "l4", "hash": "blake3:00"}, "weight": 1}]}
    parsed = invokeai.detect(container(("png:iTXt", "invokeai_metadata", json.dumps(metadata))))
    assert parsed is not None
    assert (parsed.params.model, parsed.params.sampler) == ("m3", "ddim")
    assert [(lora.name, lora.weight, lora.hash) for lora in parsed.params.loras] == [
        ("l3", 0.7, None), ("l4", 1.0, "blake3:00")]


def test_novelai_needs_a_readable_comment() -> None:
    base = [("png:tEXt", "Software", "NovelAI"), ("png:tEXt", "Source", "NovelAI Diffusion V4 ABCDEF12")]
    assert novelai.detect(container(*base, ("png:tEXt", "Comment", "{broken"))) is None
    characters = [{"char_caption": "girl"}]
    comment = {"v4_prompt": {"caption": {"base_caption": "base", "char_captions": characters}},
               "v4_negative_prompt": {"caption": {"base_caption": "neg"}}, "seed": 1}
    parsed = novelai.detect(container(*base, ("png:tEXt", "Comment", json.dumps(comment))))
    assert parsed is not None
    assert (parsed.params.prompt, parsed.params.negative_prompt) == ("base", "neg")
    assert (parsed.params.model, parsed.params.model_hash) == ("NovelAI Diffusion V4", "ABCDEF12")
    assert parsed.params.other_params["character_prompts"] == [{"char_caption": "girl"}]


def test_novelai_webp_exif_copy() -> None:
    fields = {"Software": "NovelAI", "Source": "NovelAI Diffusion V4.5 C02D4F98",
              "Comment": json.dumps({"prompt": "fox", "uc": "bad", "seed": 3, "scale": 5})}
    parsed = novelai.detect(container(("exif", "UserComment", json.dumps(fields))))
    assert parsed is not None and parsed.params.prompt == "fox"
    assert parsed.params.other_params["copies"] == ["exif"]


def test_fooocus_schemes_and_ruined_fooocus() -> None:
    settings = {"prompt": "x", "seed": "6952411511246973023", "resolution": "(768, 1280)",
                "loras": [["a.safetensors", 0.5], "b.safetensors : 0.25", "c"], "guidance_scale": 4}
    parsed = fooocus.detect(container(("png:tEXt", "parameters", json.dumps(settings)),
                                      ("png:tEXt", "fooocus_scheme", "fooocus")))
    assert parsed is not None and parsed.params.seed == 6952411511246973023
    assert [(lora.name, lora.weight) for lora in parsed.params.loras] == [
        ("a.safetensors", 0.5), ("b.safetensors", 0.25), ("c", None)]
    infotext = fooocus.detect(container(("exif", "UserComment", "cat\nSteps: 3, Version: Fooocus v2.5.0"),
                                        ("exif", "Software", "Fooocus v2.5.0"),
                                        ("exif", "MakerNote", "a1111")))
    assert infotext is not None and infotext.generator == Generator("fooocus", "Fooocus v2.5.0")
    ruined = fooocus.detect(container(("png:tEXt", "parameters", json.dumps(
        {"software": "RuinedFooocus", "Prompt": "p", "Negative": "n", "seed": 5, "cfg": 8}))))
    assert ruined is not None and (ruined.params.prompt, ruined.params.cfg_scale) == ("p", 8.0)
    assert fooocus.detect(container(("png:tEXt", "parameters", "{}"))) is None


def test_swarmui_loras_and_model_hash() -> None:
    document = {"sui_image_params": {"prompt": "p", "loras": ["l1", "l2"], "loraweights": ["0.5"],
                                     "swarm_version": "0.9"},
                "sui_models": [{"name": "m.safetensors", "param": "model", "hash": "0xab"}]}
    parsed = swarmui.detect(container(("png:tEXt", "parameters", json.dumps(document))))
    assert parsed is not None and parsed.generator.tool == "SwarmUI 0.9"
    assert [(lora.name, lora.weight) for lora in parsed.params.loras] == [("l1", 0.5), ("l2", None)]
    assert parsed.params.model_hash == "0xab"


def test_easy_diffusion_text_chunks() -> None:
    parsed = others.detect_easy_diffusion(container(
        ("png:tEXt", "prompt", "a lake"), ("png:tEXt", "negative_prompt", "fog"), ("png:tEXt", "seed", "12"),
        ("png:tEXt", "num_inference_steps", "25"),
        ("png:tEXt", "use_stable_diffusion_model", r"C:\m\sd.ckpt")))
    assert parsed is not None and parsed.generator.family == "easydiffusion"
    assert (parsed.params.prompt, parsed.params.seed, parsed.params.steps) == ("a lake", 12, 25)
    # ComfyUI's `prompt` chunk is JSON, Easy Diffusion's is text: one must not be read as the other.
    assert comfyui.detect(container(("png:tEXt", "prompt", "a lake"))) is None


XMP = """<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>
<rdf:Description xmp:CreatorTool="Draw Things" exif:UserComment="{&quot;c&quot;:&quot;a &amp; b&quot;,
&quot;seed&quot;:3,&quot;size&quot;:&quot;512x768&quot;,&quot;lora&quot;:[{&quot;model&quot;:&quot;l.ckpt&quot;,
&quot;weight&quot;:0.6}]}"><dc:description><rdf:Alt><rdf:li xml:lang="x-default">a &amp; b
Job ID: 0a1b2c3d-0000-1111-2222-333344445555</rdf:li></rdf:Alt></dc:description></rdf:Description>
</rdf:RDF></x:xmpmeta>"""


def test_draw_things_xmp_is_read_without_an_xml_parser() -> None:
    parsed = others.detect_draw_things(container(("png:iTXt", "XML:com.adobe.xmp", XMP)))
    assert parsed is not None
    assert (parsed.params.prompt, parsed.params.seed, parsed.params.width) == ("a & b", 3, 512)
    assert [lora.name for lora in parsed.params.loras] == ["l.ckpt"]
    hostile = '<!DOCTYPE x [<!ENTITY e "boom">]>' + XMP
    assert others.detect_draw_things(container(("png:iTXt", "XML:com.adobe.xmp", hostile))) is None


def test_midjourney_description_flags() -> None:
    text = "a castle --ar 16:9 --v 6.1 --seed 42 --no people, cars Job ID: 0a1b2c3d-0000-1111-2222-33334444"
    parsed = others.detect_midjourney(container(("png:tEXt", "Description", text),
                                                ("png:tEXt", "Author", "me")))
    assert parsed is not None
    assert (parsed.params.prompt, parsed.params.seed, parsed.params.negative_prompt) == (
        "a castle", 42, "people, cars")
    assert parsed.params.other_params["ar"] == "16:9" and parsed.params.other_params["author"] == "me"


def test_tensorart_takes_the_real_seed_from_the_graph_when_its_own_is_random() -> None:
    data = json.dumps({"prompt": "own prompt", "seed": "-1", "baseModel": {"modelFileName": "t.safetensors",
                                                                          "hash": "h"}}) + "\x00"
    parsed = others.detect_tensorart(container(("png:tEXt", "generation_data", data),
                                               ("png:tEXt", "prompt", json.dumps(ksampler_graph()))))
    assert parsed is not None and parsed.generator.tool == "Tensor.Art"
    assert (parsed.params.prompt, parsed.params.seed, parsed.params.model) == (
        "own prompt", 2 ** 64 + 1, "t.safetensors")


def test_invalid_utf8_bytes_values_are_skipped_by_every_detector() -> None:
    junk = b"\xff\xfe\x00{Steps: 1"
    keys = ["parameters", "prompt", "workflow", "Comment", "UserComment", "invokeai_metadata", "Dream",
            "generation_data", "parameters-json", "XML:com.adobe.xmp", "Description", "fooocus_scheme"]
    assert detect_all(container(*[("png:iTXt", key, junk) for key in keys])) == []


# ------------------------------------------------------------------ sidecars

def test_sidecar_flat_yaml_only() -> None:
    assert sidecar.flat_yaml("prompt: 'a: b'\nseed: 3 # note\nnum_inference_steps: ~\n") == {
        "prompt": "a: b", "seed": "3", "num_inference_steps": None}
    for text in ("prompt: |\n  multi\n", "a: &x 1\nb: *x\n", "- item\n", "a: !!python/object x\n", "a: [1]"):
        assert sidecar.flat_yaml(text) is None, text


def test_sidecars_count_only_when_the_file_says_nothing() -> None:
    image = png_with()
    txt = b"\xef\xbb\xbfcat\r\nNegative prompt: dog\r\nSteps: 9, Seed: 4\r\n"
    result = extract(image, sidecars={"0001-4.txt": txt, "0001-4.bin": b"\xff\x00"}, stealth=False)
    assert result.generator.family == "a1111" and result.generator.tool == "AUTOMATIC1111 (sidecar .txt)"
    assert (result.params.prompt, result.params.negative_prompt, result.params.seed) == ("cat", "dog", 4)
    raw = plain(result.to_json())["raw"]
    assert raw["entries"][-1] == {"source": "sidecar", "key": ".bin", "base64": "/wA="}
    yaml = b"prompt: a lake\nnum_inference_steps: 20\n"
    result = extract(image, sidecars={"x.yaml": yaml}, stealth=False)
    assert result.generator.family == "easydiffusion" and result.params.steps == 20
    result = extract(image, sidecars={".caption": b"  a photo of a lake \n"}, stealth=False)
    assert (result.generator.family, result.params.prompt) == ("none", "a photo of a lake")
    embedded = png_with(parameters="owl\nSteps: 3")
    result = extract(embedded, sidecars={".txt": b"cat\nSteps: 9"}, stealth=False)
    assert result.params.prompt == "owl"
    assert plain(result.params.other_params["alternates"])[0]["params"]["prompt"] == "cat"


# ------------------------------------------------------------------- extract

def test_swarmui_png_keeps_its_comfyui_graph_as_an_alternate() -> None:
    document = {"sui_image_params": {"prompt": "p", "seed": 1}}
    image = png_with(parameters=json.dumps(document), prompt=json.dumps(ksampler_graph()))
    result = extract(image, stealth=False)
    assert result.generator.family == "swarmui"
    assert [parsed.generator.family for parsed in result.alternates] == ["comfyui"]
    alternates = plain(result.params.other_params["alternates"])
    assert alternates[0]["generator"] == {"family": "comfyui", "tool": "ComfyUI"}


def test_unreadable_files_raise_a_codec_error_naming_the_reason() -> None:
    with pytest.raises(ImageUnreadable, match="empty"):
        extract(b"")
    with pytest.raises(ImageUnreadable, match="not a PNG"):
        extract(b"GIF89a....")


def test_a_file_without_metadata_is_family_none() -> None:
    result = extract(png_with(), stealth=False)
    assert result.generator.to_json() == {"family": "none", "tool": None}
    assert result.params.to_json()["prompt"] is None
    assert plain(result.to_json())["raw"]["entries"] == []
