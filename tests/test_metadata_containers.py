"""Container readers: each fixture's format, size, frames and entries; damage is a problem, never a crash."""

from __future__ import annotations

import http.server
import io
import json
import random
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import SHARED
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from node.metadata import c2pa as c2pa_reader
from node.metadata.container import read_container
from node.metadata.exif import read_exif
from node.metadata.limits import MAX_ENTRIES, Reading
from node.metadata.png_column import first_column
from node.metadata.raw import Container
from node.metadata.stealth import first_column_is_clear

IMAGES = SHARED / "fixtures" / "images"
EXPECTED = json.loads((IMAGES / "expected.json").read_text())["files"]
EXTENSION_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

# Per fixture: the entries its metadata_sources name, as (source prefix, key, a piece of the value).
SOURCES: dict[str, list[tuple[str, str, str]]] = {
    "a1111_cropped.png": [("png:tEXt", "parameters", "Steps: 15, Sampler: UniPC")],
    "a1111_cropped.jpg": [("exif", "UserComment", "photo of a duck\nNegative prompt: monochrome")],
    "a1111_stealth_pngcomp.png": [("stealth:alpha", "stealth_pngcomp", "a circle\nNegative prompt: a")],
    "forge_neo.png": [("png:iTXt", "parameters", "Version: neo")],
    "a1111_webui.webp": [("exif", "UserComment", "Steps: ")],
    "a1111_from_comfyui_png_named_jpeg.jpeg": [("png:tEXt", "parameters", "\nNegative prompt: \n")],
    "civitai.jpeg": [("exif", "UserComment", "Civitai resources: [{"),
                     ("exif", "Software", "56c0ca36-7be1-4bce-a593-949f3ae4322e"), ("exif", "Artist", "ai")],
    "comfyui_lora_multiple.png": [("png:tEXt", "prompt", '"LoraLoader"'), ("png:tEXt", "workflow", "nodes")],
    "comfyui_sdxl_refiner.png": [("png:tEXt", "prompt", "KSamplerAdvanced"),
                                 ("png:tEXt", "workflow", "nodes")],
    "comfyui_flux_dev.png": [("png:tEXt", "prompt", "SamplerCustomAdvanced"),
                             ("png:tEXt", "workflow", "nodes")],
    "comfyui_wan_t2v_animated.webp": [("exif", "Model", 'prompt:{"'), ("exif", "Make", 'workflow:{"')],
    "comfyui_save_image_extended.webp": [("exif", "Make", 'Prompt: {"'),
                                         ("exif", "ImageDescription", 'Workflow: {"')],
    "comfyui_saveimageplus.jpg": [("exif", "UserComment", '{"prompt": {')],
    "invokeai_dream_legacy.png": [("png:tEXt", "Dream", '"professional full body photo')],
    "invokeai_v5.png": [("png:iTXt", "invokeai_metadata", '"generation_mode"'),
                        ("png:iTXt", "invokeai_graph", '"nodes"')],
    "novelai_legacy_cropped.png": [("png:tEXt", key, piece) for key, piece in (
        ("Title", "AI generated image"), ("Description", "cat, space"), ("Software", "NovelAI"),
        ("Source", "Stable Diffusion 1D44365E"), ("Comment", '"sampler": "k_euler_ancestral"'))],
    "novelai_v45_curated.png": [("png:", key, piece) for key, piece in (
        ("Title", "NovelAI generated image"), ("Description", "#テスト"), ("Software", "NovelAI"),
        ("Source", "NovelAI Diffusion V4.5"), ("Generation time", "e-05"), ("Comment", '"v4_prompt"'))]
        + [("stealth:alpha", "stealth_pngcomp", "signed_hash")],
    "fooocus_scheme_fooocus_cropped.png": [("png:tEXt", "parameters", '"seed": "6952411511246973023"'),
                                           ("png:tEXt", "fooocus_scheme", "fooocus")],
    "swarmui.jpg": [("exif", "UserComment", '"sui_image_params"')],
    "stability_matrix.png": [("png:tEXt", "parameters", "#テスト\r\n"), ("png:tEXt", "parameters-json", "{"),
                             ("png:tEXt", "smproj", "{"), ("png:tEXt", "prompt", "{")],
    "c2pa_firefly_gemini.png": [("png:iTXt", "XML:com.adobe.xmp", "trainedAlgorithmicMedia"),
                                ("png:zTXt", "Raw profile type iptc", "IPTC profile"),
                                ("c2pa", "manifest_store", '"active_manifest"')],
    "c2pa_test_C.jpg": [("c2pa", "manifest_store", '"active_manifest"')],
    "no_metadata_pose_input.png": [],
    "gimp_resaved.webp": [("exif", "ImageDescription", "GIMPで再保存しただけ"),
                          ("exif", "Software", "GIMP 3.0.6"), ("exif", "DateTime", "2026:")],
    "empty_file.png": [],
    "png_decompression_dos.png": [("png:zTXt", name, "") for name in ("big1", "big2", "big3")],
}
JUMBF = {"c2pa_firefly_gemini.png": "png:caBX", "c2pa_test_C.jpg": "jpeg:APP11/JUMBF"}


def read_fixture(name: str, *, stealth: bool = True) -> Container:
    return read_container((IMAGES / name).read_bytes(), stealth=stealth)


def test_every_fixture_has_its_expected_sources_listed() -> None:
    assert set(SOURCES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_container_facts_match_expected(name: str) -> None:
    expected = EXPECTED[name]
    container = read_fixture(name)
    assert container.format == expected["container"]
    size = expected["pixel_size"] or expected.get("pixel_size_from_IHDR")
    assert (container.width, container.height) == (tuple(size) if size else (None, None))
    assert container.frames == expected.get("frames", 1)
    if expected["generator_family"] != "malformed":
        assert container.problems == ()
    if expected["extension_matches_container"] is not None:
        honest = EXTENSION_FORMAT[Path(name).suffix.lower()] == container.format
        assert honest == expected["extension_matches_container"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_metadata_sources_appear_as_entries(name: str) -> None:
    container = read_fixture(name)
    for prefix, key, piece in SOURCES[name]:
        values = [entry.value for entry in container.find(key, prefix)]
        assert values, f"{name}: no {prefix} {key!r} in {[(e.source, e.key) for e in container.entries]}"
        if piece:
            assert any(isinstance(value, str) and piece in value for value in values), (name, key, values)
    if name in JUMBF:
        assert isinstance(container.find("jumbf", JUMBF[name])[0].value, bytes)
    if not SOURCES[name]:
        assert container.entries == ()


def test_utf16_user_comment_reads_in_either_byte_order() -> None:
    png_text = read_fixture("a1111_cropped.png").text("parameters")
    assert read_fixture("a1111_cropped.jpg").text("UserComment") == png_text  # MM header, UTF-16BE
    civitai = read_fixture("civitai.jpeg").text("UserComment")  # II header but UTF-16BE text
    assert civitai is not None and civitai.startswith("general, masterpiece")
    swarm = read_fixture("swarmui.jpg").text("UserComment")  # II header, UTF-16LE
    assert swarm is not None and "sui_image_params" in json.loads(swarm)


@pytest.mark.parametrize("name", ["c2pa_firefly_gemini.png", "c2pa_test_C.jpg"])
def test_c2pa_summary_matches_expected(name: str) -> None:
    expected = EXPECTED[name]["expected"]["c2pa"]
    container = read_fixture(name, stealth=False)
    assert container.text("manifest_count", "c2pa") == str(expected["manifest_count"])
    assert container.text("claim_generator", "c2pa") == expected["active_claim_generator"]
    assert container.text("action", "c2pa") == expected["action"]
    assert container.text("digital_source_type", "c2pa") == expected["digital_source_type"]
    assert container.text("signer_issuer", "c2pa") == expected["signer_issuer"]
    assert container.text("signature_valid", "c2pa") == str(expected["signature_valid"]).lower()
    store = container.text("manifest_store", "c2pa")
    assert store is not None
    assert c2pa_reader.summarize(store).signature_valid is expected["signature_valid"]


class Recorder(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Recorder.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def loopback_url() -> Iterator[str]:
    Recorder.requests = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/manifest.c2pa"
    finally:
        server.shutdown()
        server.server_close()


def jpeg_with_remote_manifest(url: str) -> bytes:
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description rdf:about="" xmlns:dcterms="http://purl.org/dc/terms/"'
           f' dcterms:provenance="{url}"/></rdf:RDF></x:xmpmeta>').encode()
    return with_segments(tiny_jpeg(), segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp))


def test_c2pa_remote_manifest_is_reported_never_fetched(loopback_url: str) -> None:
    import c2pa

    data = jpeg_with_remote_manifest(loopback_url)
    container = read_container(data)
    assert any(f"remote at {loopback_url}; not fetched" in problem for problem in container.problems)
    assert Recorder.requests == []
    # The same file with the SDK's default settings does fetch: the settings are what keep us offline.
    with pytest.raises(c2pa.C2paError):
        c2pa.Reader("image/jpeg", io.BytesIO(data), None, c2pa.Context())
    assert Recorder.requests == ["/manifest.c2pa"]


# --- crafted files ---------------------------------------------------------------------------------------

def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def tiny_png(*before_idat: bytes, after_idat: tuple[bytes, ...] = (),
             size: tuple[int, int] = (1, 1)) -> bytes:
    ihdr = struct.pack(">IIBBBBB", *size, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + bytes(size[0]) for _ in range(size[1])))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + b"".join(before_idat) + chunk(b"IDAT", pixels)
            + b"".join(after_idat) + chunk(b"IEND", b""))


def tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, "JPEG")
    return out.getvalue()


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def with_segments(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1}


Tag = tuple[int, int, bytes]  # tag, TIFF type, value bytes


def tiff(order: str, ifd0: list[Tag], exif_ifd: list[Tag] | None = None) -> bytes:
    """A TIFF/EXIF block: IFD0 (with a pointer to the Exif IFD when there is one), the Exif IFD, then data."""
    e = "<" if order == "II" else ">"
    count0 = len(ifd0) + (1 if exif_ifd else 0)
    exif_at = 8 + 2 + 12 * count0 + 4
    data_at = exif_at + (2 + 12 * len(exif_ifd) + 4 if exif_ifd else 0)
    data = bytearray()

    def ifd(entries: list[Tag]) -> bytes:
        out = struct.pack(e + "H", len(entries))
        for tag, kind, value in entries:
            field = value.ljust(4, b"\x00") if len(value) <= 4 else struct.pack(e + "I", data_at + len(data))
            if len(value) > 4:
                data.extend(value)
            out += struct.pack(e + "HHI", tag, kind, len(value) // TYPE_SIZE[kind]) + field
        return out + b"\x00\x00\x00\x00"

    pointer = [(0x8769, 4, struct.pack(e + "I", exif_at))] if exif_ifd else []
    body = ifd(ifd0 + pointer) + (ifd(exif_ifd) if exif_ifd else b"")
    return (b"II*\x00" if order == "II" else b"MM\x00*") + struct.pack(e + "I", 8) + body + bytes(data)


def exif_entries(blob: bytes) -> tuple[dict[str, str | bytes], list[str]]:
    reading = Reading()
    read_exif(blob, reading, "test")
    return {entry.key: entry.value for entry in reading.entries}, reading.problems


# --- PNG ---------------------------------------------------------------------------------------------------

def test_png_keeps_every_text_chunk_in_file_order_even_after_idat() -> None:
    data = tiny_png(chunk(b"tEXt", b"prompt\x00{\"1\": {}}"), chunk(b"tEXt", b"prompt\x00{\"2\": {}}"),
                    after_idat=(chunk(b"zTXt", b"parameters\x00\x00" + zlib.compress(b"late text")),))
    container = read_container(data)
    assert [(e.source, e.key, e.value) for e in container.entries] == [
        ("png:tEXt", "prompt", '{"1": {}}'), ("png:tEXt", "prompt", '{"2": {}}'),
        ("png:zTXt", "parameters", "late text")]
    assert container.problems == ()


def test_png_text_decoding_utf8_latin1_and_invalid_itxt() -> None:
    data = tiny_png(
        chunk(b"tEXt", "a\x00caf\u00e9 テスト".encode()),  # UTF-8 inside tEXt, as Stability Matrix writes
        chunk(b"tEXt", b"b\x00caf\xe9"),  # real Latin-1
        chunk(b"iTXt", b"c\x00\x01\x00ja\x00c\x00" + zlib.compress("日本語".encode())),
        chunk(b"iTXt", b"d\x00\x00\x00\x00\x00\xff\xfe broken"),
    )
    container = read_container(data)
    values = [entry.value for entry in container.entries]
    assert values == ["café テスト", "café", "日本語", b"\xff\xfe broken"]
    assert any("'d' is not valid UTF-8" in problem for problem in container.problems)


def test_png_bad_crc_is_a_problem_and_reading_goes_on() -> None:
    data = bytearray((IMAGES / "a1111_cropped.png").read_bytes())
    at = data.index(b"tEXt")
    (length,) = struct.unpack_from(">I", data, at - 4)
    data[at + 4 + length] ^= 0xFF  # first CRC byte of the text chunk
    container = read_container(bytes(data))
    assert container.text("parameters", "png:tEXt")
    assert any("tEXt" in problem and "CRC mismatch" in problem for problem in container.problems)


def test_png_chunk_claiming_800_mb_stops_the_walk_with_a_problem() -> None:
    lying = struct.pack(">I", 800_000_000) + b"tEXt" + b"parameters\x00short"
    data = tiny_png(chunk(b"tEXt", b"first\x00kept"))
    data = data[:data.index(b"IDAT") - 4] + lying
    started = time.perf_counter()
    container = read_container(data)
    assert time.perf_counter() - started < 0.5
    assert (container.format, container.width, container.height) == ("PNG", 1, 1)
    assert container.text("first") == "kept"
    assert any("declares 800000000 bytes" in problem for problem in container.problems)


def test_png_decompression_bomb_keeps_compressed_bytes_within_bounded_time() -> None:
    started = time.perf_counter()
    container = read_fixture("png_decompression_dos.png", stealth=False)
    assert time.perf_counter() - started < 1.0
    assert [len(entry.value) for entry in container.entries] == [2056, 2056, 2056]
    assert all(isinstance(entry.value, bytes) for entry in container.entries)
    assert sum("decompression bomb" in problem for problem in container.problems) == 3


def test_inflate_respects_the_per_file_budget() -> None:
    reading = Reading()
    reading.inflate_left = 10
    assert reading.inflate("x", zlib.compress(b"0123456789abc")) is None
    assert "still allowed for this file" in reading.problems[0]
    assert reading.inflate("y", zlib.compress(b"0123456789")) == b"0123456789"
    assert reading.inflate_left == 0


def test_png_entry_count_is_capped_with_a_problem() -> None:
    data = tiny_png(*(chunk(b"tEXt", b"k\x00v") for _ in range(MAX_ENTRIES + 10)))
    container = read_container(data)
    assert len(container.entries) == MAX_ENTRIES
    assert any(problem.startswith("10 further entries skipped") for problem in container.problems)


def test_png_exif_and_c2pa_chunks() -> None:
    comment = b"UNICODE\x00" + "hi ✓".encode("utf-16-le")
    blob = tiff("II", [(0x010F, 2, b"workflow:{}\x00")], [(0x9286, 7, comment)])
    container = read_container(tiny_png(chunk(b"eXIf", blob), chunk(b"caBX", b"not jumbf")))
    assert container.text("Make", "exif") == "workflow:{}"
    assert container.text("UserComment", "exif") == "hi ✓"
    assert container.find("jumbf", "png:caBX")[0].value == b"not jumbf"
    assert any(problem.startswith("C2PA manifest store not readable") for problem in container.problems)


def test_apng_frames_come_from_actl() -> None:
    container = read_container(tiny_png(chunk(b"acTL", struct.pack(">II", 7, 0))))
    assert container.frames == 7


# --- EXIF --------------------------------------------------------------------------------------------------

def test_exif_user_comment_prefixes_and_field_cleanup() -> None:
    for order in ("II", "MM"):
        entries, problems = exif_entries(tiff(order, [
            (0x010E, 2, b"\x00\x00\x00\x00prompt text\x00"),  # NovelAI: leading NULs before UTF-8
            (0x0131, 2, "GIMP ✓\x00".encode()),
            (0x9C9C, 1, "xp comment\x00".encode("utf-16-le")),
            (0x0112, 3, struct.pack("<H" if order == "II" else ">H", 1)),
        ], [
            (0x9286, 7, b"ASCII\x00\x00\x00{\"a\": 1}\x00"),
            (0x927C, 7, b"fooocus"),
            (0xA420, 7, b"\x00\x01\x02binary"),
        ]))
        assert problems == []
        assert entries == {"ImageDescription": "prompt text", "Software": "GIMP ✓", "XPComment": "xp comment",
                           "Orientation": "1", "UserComment": '{"a": 1}', "MakerNote": "fooocus",
                           "ImageUniqueID": b"\x00\x01\x02binary"}


@pytest.mark.parametrize(("order", "codec"), [("II", "utf-16-le"), ("II", "utf-16-be"), ("MM", "utf-16-le"),
                                             ("MM", "utf-16-be")])
def test_exif_unicode_user_comment_byte_order_follows_the_text(order: str, codec: str) -> None:
    text = "masterpiece, 1girl\nSteps: 20, Seed: 1"
    comment = b"UNICODE\x00" + text.encode(codec) + b"\x00\x00"
    entries, _ = exif_entries(tiff(order, [], [(0x9286, 7, comment)]))
    assert entries["UserComment"] == text


def test_exif_jis_and_undefined_user_comments() -> None:
    comment = b"JIS\x00\x00\x00\x00\x00" + "テスト".encode("iso2022_jp")
    jis, _ = exif_entries(tiff("MM", [], [(0x9286, 7, comment)]))
    assert jis["UserComment"] == "テスト"
    undefined, _ = exif_entries(tiff("II", [], [(0x9286, 7, bytes(8) + b"plain")]))
    assert undefined["UserComment"] == "plain"


def test_exif_loops_and_lying_offsets_are_problems_not_hangs() -> None:
    looped = bytearray(tiff("II", [(0x010F, 2, b"make\x00")]))
    looped += struct.pack("<HHI", 0, 0, 0)
    struct.pack_into("<HHII", looped, 8 + 2, 0x8769, 4, 1, 8)  # Exif IFD pointer back at IFD0
    entries, problems = exif_entries(bytes(looped))
    assert any("repeats" in problem for problem in problems)
    lying = bytearray(tiff("MM", [(0x010E, 2, b"a long description")]))
    struct.pack_into(">I", lying, 8 + 2 + 8, 10_000_000)
    entries, problems = exif_entries(bytes(lying))
    assert entries == {} and "outside" in problems[0]
    entries, problems = exif_entries(b"MM\x00*\x00\x00\xff\xff")
    assert entries == {} and "outside" in problems[0]
    entries, problems = exif_entries(b"Exif\x00\x00junk")
    assert problems == ["test: EXIF without a TIFF header; kept as bytes"]


# --- JPEG --------------------------------------------------------------------------------------------------

def test_jpeg_segments_xmp_extended_xmp_comment_and_split_jumbf() -> None:
    guid = b"0" * 32
    extended = "<x:xmpmeta>" + "é" * 100 + "</x:xmpmeta>"
    raw = extended.encode()
    parts = [raw[:50], raw[50:]]
    header = b"http://ns.adobe.com/xmp/extension/\x00" + guid
    ext = [segment(0xE1, header + struct.pack(">II", len(raw), offset) + part)
           for offset, part in ((0, parts[0]), (50, parts[1]))]
    box = struct.pack(">I", 8 + 20) + b"jumb" + b"A" * 10 + b"B" * 10
    app11 = [segment(0xEB, b"JP" + struct.pack(">HI", 1, 1) + box[:18]),
             segment(0xEB, b"JP" + struct.pack(">HI", 1, 2) + box[:8] + box[18:])]
    data = with_segments(tiny_jpeg(), segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x/>"), ext[1], ext[0],
                         segment(0xFE, "a comment ✓".encode()), app11[1], app11[0])
    container = read_container(data)
    assert (container.format, container.width, container.height) == ("JPEG", 8, 8)
    assert container.text("xmp", "jpeg:APP1/XMP") == "<x/>"
    assert container.text("xmp_extended", "jpeg:APP1/XMP") == extended
    assert container.text("comment", "jpeg:COM") == "a comment ✓"
    assert container.find("jumbf", "jpeg:APP11/JUMBF")[0].value == box


def test_jpeg_exif_in_app1() -> None:
    blob = b"Exif\x00\x00" + tiff("MM", [(0x0110, 2, b'prompt:{"3": {}}\x00')])
    container = read_container(with_segments(tiny_jpeg(), segment(0xE1, blob)))
    assert container.text("Model", "exif") == 'prompt:{"3": {}}'


def test_jpeg_segment_longer_than_the_file_is_a_problem() -> None:
    data = tiny_jpeg()[:2] + b"\xff\xe1\xff\xf0Exif\x00\x00MM"
    container = read_container(data)
    assert container.format == "JPEG" and container.width is None
    assert any("declares 65520 bytes" in problem for problem in container.problems)


# --- WebP --------------------------------------------------------------------------------------------------

def test_webp_lossless_size_exif_and_xmp() -> None:
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "Workflow: {}"
    image = Image.new("RGBA", (5, 3), (1, 2, 3, 255))
    image.save(out, "WEBP", lossless=True, exif=exif.tobytes(), xmp=b"<x/>")
    container = read_container(out.getvalue())
    assert (container.format, container.width, container.height, container.frames) == ("WEBP", 5, 3, 1)
    assert container.text("ImageDescription", "exif") == "Workflow: {}"
    assert container.text("xmp", "webp:XMP") == "<x/>"


def test_webp_chunk_past_the_end_is_a_problem() -> None:
    data = b"RIFF" + struct.pack("<I", 4 + 8 + 100) + b"WEBP" + b"EXIF" + struct.pack("<I", 100) + b"MM"
    container = read_container(data)
    assert container.format == "WEBP"
    assert any("'EXIF'" in problem and "declares 100 bytes" in problem for problem in container.problems)


# --- garbage in general ------------------------------------------------------------------------------------

def test_zero_bytes_and_unknown_formats_are_named_not_raised() -> None:
    assert read_container(b"") == Container(format=None, problems=("empty file (0 bytes)",))
    gif = read_container(b"GIF89a\x01\x00\x01\x00")
    assert gif.format is None and "not a PNG, JPEG or WebP" in gif.problems[0]


def test_format_comes_from_magic_bytes_whatever_the_name() -> None:
    assert read_fixture("a1111_from_comfyui_png_named_jpeg.jpeg", stealth=False).format == "PNG"


@pytest.mark.parametrize("name", ["a1111_cropped.png", "a1111_cropped.jpg", "civitai.jpeg",
                                  "a1111_webui.webp", "comfyui_wan_t2v_animated.webp", "c2pa_test_C.jpg",
                                  "novelai_legacy_cropped.png"])
def test_truncated_files_give_problems_at_every_cut(name: str) -> None:
    data = (IMAGES / name).read_bytes()
    head = min(len(data), 60_000)  # metadata lives in the first bytes; later cuts only lose pixels
    for cut in sorted({*range(0, head, max(1, head // 150)), len(data) - 1}):
        container = read_container(data[:cut], stealth=cut < 2000)
        assert container.problems, (name, cut)


# --- stealth -----------------------------------------------------------------------------------------------

def stealth_png(signature: bytes, payload: bytes, *, rgb: bool = False, declared_bits: int | None = None,
                size: tuple[int, int] = (40, 30)) -> bytes:
    """A PNG whose alpha (or RGB) LSBs carry signature, 32-bit bit count and payload, column by column."""
    bits = "".join(f"{byte:08b}" for byte in signature)
    bits += f"{len(payload) * 8 if declared_bits is None else declared_bits:032b}"
    bits += "".join(f"{byte:08b}" for byte in payload)
    width, height = size
    bands = 3 if rgb else 1
    values = bytes(0x80 | int(bit) for bit in bits.ljust(width * height * bands, "0"))
    plane = Image.frombytes("RGB" if rgb else "L", (height, width), values)
    plane = plane.transpose(Image.Transpose.TRANSPOSE)
    if rgb:
        image = plane
    else:
        image = Image.new("RGB", size, (90, 100, 110))
        image.putalpha(plane)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


# The header spans columns / only RGB's signature fits the first / the whole header fits the first.
@pytest.mark.parametrize("size", [(40, 30), (20, 45), (64, 200)])
@pytest.mark.parametrize(("signature", "rgb", "source"), [
    (b"stealth_pnginfo", False, "stealth:alpha"), (b"stealth_pngcomp", False, "stealth:alpha"),
    (b"stealth_rgbinfo", True, "stealth:rgb"), (b"stealth_rgbcomp", True, "stealth:rgb")])
def test_stealth_payloads_in_alpha_and_rgb(signature: bytes, rgb: bool, source: str,
                                           size: tuple[int, int]) -> None:
    text = "a cat\nNegative prompt: dog\nSteps: 20, Seed: 7"
    payload = text.encode()
    if signature.endswith(b"comp"):
        payload = zlib.compress(payload, wbits=31)
    data = stealth_png(signature, payload, rgb=rgb, size=size)
    assert not first_column_is_clear(data, size[1])
    assert read_container(data).entries == ()  # only decoded when asked
    container = read_container(data, stealth=True)
    assert container.text(signature.decode(), source) == text
    assert container.problems == ()


def filtered_png(pixels: list[bytes], width: int, channels: int, filters: list[int], *,
                 idat_pieces: int = 1) -> bytes:
    """An 8-bit RGB or RGBA PNG with each row's filter chosen, IDAT split in pieces (our own encoder)."""
    def paeth(a: int, b: int, c: int) -> int:
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        return a if pa <= pb and pa <= pc else b if pb <= pc else c

    stream = bytearray()
    above = bytes(width * channels)
    for row, kind in zip(pixels, filters, strict=True):
        out = bytearray([kind])
        for i, value in enumerate(row):
            a = row[i - channels] if i >= channels else 0
            b, c = above[i], above[i - channels] if i >= channels else 0
            predictor = (0, a, b, (a + b) // 2, paeth(a, b, c))[kind]
            out.append((value - predictor) & 0xFF)
        stream += out
        above = row
    compressed = zlib.compress(bytes(stream))
    step = -(-len(compressed) // idat_pieces)
    colour = {3: 2, 4: 6}[channels]
    ihdr = struct.pack(">IIBBBBB", width, len(pixels), 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + b"".join(chunk(b"IDAT", compressed[at:at + step]) for at in range(0, len(compressed), step))
            + chunk(b"IEND", b""))


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 6), height=st.integers(1, 170), channels=st.sampled_from([3, 4]),
       seed=st.integers(0, 2**32 - 1), pieces=st.integers(1, 4))
def test_the_first_column_is_decoded_as_pillow_decodes_it(width: int, height: int, channels: int, seed: int,
                                                          pieces: int) -> None:
    rng = random.Random(seed)
    pixels = [rng.randbytes(width * channels) for _ in range(height)]
    filters = [rng.randrange(5) for _ in range(height)]
    data = filtered_png(pixels, width, channels, filters, idat_pieces=pieces)
    rows = rng.randint(1, height)
    with Image.open(io.BytesIO(data)) as image:
        column = image.crop((0, 0, 1, rows)).tobytes()
    assert column == b"".join(row[:channels] for row in pixels[:rows])  # our encoder is right
    assert first_column(data, rows) == (channels, column)


def test_only_plain_pngs_take_the_first_column_path() -> None:
    plain = filtered_png([bytes(8)] * 160, 2, 4, [0] * 160)
    assert first_column_is_clear(plain, 160)  # nothing decoded beyond the first column
    # RGB holds the 120 signature bits in 40 rows; alpha needs 120 rows, or the image is decoded.
    assert first_column_is_clear(filtered_png([bytes(6)] * 40, 2, 3, [0] * 40), 40)
    assert not first_column_is_clear(filtered_png([bytes(6)] * 39, 2, 3, [0] * 39), 39)
    assert not first_column_is_clear(filtered_png([bytes(8)] * 119, 2, 4, [0] * 119), 119)
    assert read_container(plain, stealth=True).problems == ()
    rgb = filtered_png([bytes(6)] * 160, 2, 3, [0] * 160)
    at = rgb.index(b"IDAT") - 4
    others = {
        "tRNS gives RGB an alpha": rgb[:at] + chunk(b"tRNS", bytes(6)) + rgb[at:],
        "greyscale": tiny_png(size=(1, 200)),
        "interlaced": plain.replace(b"\x08\x06\x00\x00\x00", b"\x08\x06\x00\x00\x01", 1),
        "truncated": plain[:60],
        "unknown filter": plain[:33] + chunk(b"IDAT", zlib.compress(b"\x07" + bytes(9 * 160 - 1)))
        + chunk(b"IEND", b""),
        "not a PNG": b"\xff\xd8\xff" + bytes(40),
    }
    for why, data in others.items():
        assert first_column(data, 152) is None, why
        assert not first_column_is_clear(data, 200), why


def test_stealth_payload_claiming_512_mib_is_refused() -> None:
    data = stealth_png(b"stealth_pngcomp", b"\x1f\x8b", declared_bits=0xFFFF_FFFF)
    started = time.perf_counter()
    container = read_container(data, stealth=True)
    assert time.perf_counter() - started < 1.0
    assert container.entries == ()
    assert any("declares 4294967295 bits" in problem for problem in container.problems)


def test_stealth_gzip_bomb_keeps_the_compressed_payload() -> None:
    bomb = zlib.compress(b"0" * (8 << 20), wbits=31)
    data = stealth_png(b"stealth_pngcomp", bomb, size=(300, 300))
    container = read_container(data, stealth=True)
    assert container.find("stealth_pngcomp", "stealth:alpha")[0].value == bomb
    assert any("decompression bomb" in problem for problem in container.problems)


def test_stealth_refuses_huge_images_before_decoding() -> None:
    data = tiny_png(size=(1, 1))
    data = data.replace(struct.pack(">II", 1, 1), struct.pack(">II", 60_000, 60_000), 1)
    container = read_container(data, stealth=True)
    assert (container.width, container.height) == (60_000, 60_000)
    assert any("more than 50000000 pixels; not decoded" in problem for problem in container.problems)


def test_limits_on_file_and_entry_size_are_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    from node.metadata import container as container_module
    from node.metadata import limits

    data = tiny_png(chunk(b"tEXt", b"big\x00" + b"x" * 100), chunk(b"tEXt", b"small\x00ok"))
    monkeypatch.setattr(limits, "MAX_TEXT_BYTES", 50)
    container = read_container(data)
    assert [entry.key for entry in container.entries] == ["small"]
    assert any("'big': 100 bytes, more than 50 per entry" in problem for problem in container.problems)
    monkeypatch.setattr(container_module, "MAX_FILE_BYTES", 100)
    too_big = read_container(data)
    assert too_big.format == "PNG" and too_big.entries == () and "not read" in too_big.problems[0]
