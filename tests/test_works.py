"""Works as a user meets them: pin an image, show, verify, restore, import folders and zips, inspect."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from node import node as node_module
from node import rescue, sources, work
from node.errors import SignatureInvalid
from node.metadata import extract
from node.node import Node
from node.profiles import get_profile
from node.signing import new_seed
from tests.conftest import SHARED, ArtkeepCli

IMAGES = SHARED / "fixtures" / "images"
COMFY = IMAGES / "comfyui_lora_multiple.png"
A1111 = IMAGES / "a1111_cropped.png"
NOVELAI = IMAGES / "novelai_v45_curated.png"


def copy(source: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    target.write_bytes(source.read_bytes())
    return target


def test_pin_makes_a_work_per_image_and_plain_pins_otherwise(artkeep: ArtkeepCli, tmp_path: Path) -> None:
    copy(COMFY, tmp_path / "in")
    (tmp_path / "in" / "notes.md").write_text("not an image\n")
    run = artkeep("pin", tmp_path / "in", "--json")
    assert run.returncode == 0, run
    lines = {Path(str(r["path"])).name: r for r in run.records()}
    image, notes = lines["comfyui_lora_multiple.png"], lines["notes.md"]
    assert str(image["work"]).startswith("bafyrei")  # DAG-CBOR, CIDv1
    assert image["size"] == COMFY.stat().st_size
    assert "work" not in notes
    # "cid" stays the image's UnixFS root: the same as `artkeep cid` of the file.
    assert artkeep("cid", COMFY, "--json").records()[0]["cid"] == image["cid"]


def test_show_prints_the_normalized_params(artkeep: ArtkeepCli, tmp_path: Path) -> None:
    pinned = artkeep("pin", copy(COMFY, tmp_path), "--json").records()[0]
    shown = artkeep("show", str(pinned["work"]), "--json")
    assert shown.returncode == 0, shown
    record = shown.records()[0]
    expected = extract(COMFY.read_bytes()).to_json()
    assert record["generator"] == expected["generator"]
    assert record["params"] == json.loads(json.dumps(expected["params"]))
    assert record["image"] == pinned["cid"]
    assert record["provenance"]["file_name"] == COMFY.name
    assert "masterpiece" in artkeep("show", str(pinned["work"])).out


def test_verify_checks_the_signature_and_every_block(artkeep: ArtkeepCli, tmp_path: Path) -> None:
    pinned = artkeep("pin", copy(NOVELAI, tmp_path), "--json").records()[0]
    ok = artkeep("verify", str(pinned["work"]), "--json")
    assert ok.returncode == 0, ok
    result = ok.records()[0]
    assert result["ok"] is True and result["ours"] is True and str(result["signer"]).startswith("12D3KooW")
    # Rot one block of the image on disk: verify names the damage and exits 3.
    blocks = sorted((artkeep.home / "blocks").rglob("*.data"), key=lambda p: p.stat().st_size)
    victim = blocks[-1]
    os.chmod(victim, 0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    damaged = artkeep("verify", str(pinned["work"]), "--json")
    assert damaged.returncode == 3, damaged
    assert damaged.records()[0]["ok"] is False


def test_a_changed_record_fails_its_signature() -> None:
    seed = new_seed()
    made = work.build(work.ImageInfo(work.dagcbor.cid_of({"x": 1})[0], 1, "PNG", 1, 1, "image/png"),
                      {"family": "none", "tool": None}, {"seed": 1}, [],
                      work.Provenance("a.png", None, "2026-01-01T00:00:00Z"), lambda blob: pytest.fail())
    signed = work.sign(made, seed)
    work.verify_signature(signed)
    assert work.sign_and_encode(made, seed) == (signed, *work.encode(signed))  # one encoding, same block
    forged = {**signed, "params": {"seed": 2}}
    with pytest.raises(SignatureInvalid):
        work.verify_signature(forged)
    with pytest.raises(SignatureInvalid):
        work.verify_signature(made)  # unsigned


def test_restore_writes_the_image_byte_for_byte_and_what_regenerates_it(artkeep: ArtkeepCli,
                                                                       tmp_path: Path) -> None:
    pinned = artkeep("pin", copy(COMFY, tmp_path / "in"), "--json").records()[0]
    out = tmp_path / "restored"
    run = artkeep("restore", str(pinned["work"]), "-o", out)
    assert run.returncode == 0, run
    assert (out / COMFY.name).read_bytes() == COMFY.read_bytes()
    params = json.loads((out / "params.json").read_text())
    assert params["params"]["seed"] == extract(COMFY.read_bytes()).params.seed
    workflow = json.loads((out / "workflow.json").read_text())
    assert "nodes" in workflow  # the ComfyUI UI graph, as stored
    assert json.loads((out / "prompt.json").read_text())  # the API graph
    infotext = (out / "parameters.txt").read_text()
    assert infotext.startswith("masterpiece") and "Seed: 513173432917412" in infotext
    again = artkeep("restore", str(pinned["work"]), "-o", out)
    assert again.returncode == 1 and "exists" in again.err  # nothing is overwritten without --force
    assert artkeep("restore", str(pinned["work"]), "-o", out, "--force").returncode == 0


def test_restore_keeps_a1111_infotext_verbatim(artkeep: ArtkeepCli, tmp_path: Path) -> None:
    pinned = artkeep("pin", copy(A1111, tmp_path), "--json").records()[0]
    artkeep("restore", str(pinned["work"]), "-o", tmp_path / "out")
    raw = next(e for e in extract(A1111.read_bytes()).entries if e.key == "parameters")
    assert (tmp_path / "out" / "parameters.txt").read_text() == raw.value


def test_the_same_image_from_two_sources_is_one_image_and_two_records(artkeep: ArtkeepCli,
                                                                    tmp_path: Path) -> None:
    first = artkeep("import", copy(COMFY, tmp_path / "civitai-export"), "--json", "--source", "civitai")
    second = artkeep("import", copy(COMFY, tmp_path / "backup", "renamed.png"), "--json", "--source", "disk")
    a, b = first.records()[0], second.records()[0]
    assert a["cid"] == b["cid"] and a["work"] != b["work"]
    assert a["outcome"] == b["outcome"] == "new"
    assert artkeep("show", str(a["work"]), "--json").records()[0]["provenance"]["source"] == "civitai"
    renamed = artkeep("show", str(b["work"]), "--json").records()[0]["provenance"]
    assert renamed == {**renamed, "source": "disk", "file_name": "renamed.png"}


def test_import_a_folder_reports_every_file_and_a_rerun_skips_by_content(artkeep: ArtkeepCli,
                                                                        tmp_path: Path) -> None:
    folder = tmp_path / "export"
    copy(COMFY, folder)
    copy(A1111, folder / "sub")
    (folder / "sub" / "a1111_cropped.txt").write_text("a caption beside the image\n")
    (folder / "empty.png").write_bytes(b"")
    first = artkeep("import", folder, "--json")
    assert first.returncode == 0, first
    outcomes = {Path(str(r["path"])).name: r["outcome"] for r in first.records()}
    assert outcomes == {"comfyui_lora_multiple.png": "new", "a1111_cropped.png": "new",
                        "a1111_cropped.txt": "sidecar", "empty.png": "new"}
    copy(COMFY, folder, "same-bytes-other-name.png")
    rerun = artkeep("import", folder, "--json")
    again = {Path(str(r["path"])).name: r for r in rerun.records()}
    assert again["comfyui_lora_multiple.png"]["outcome"] == "duplicate"
    assert again["same-bytes-other-name.png"]["outcome"] == "duplicate"
    assert again["same-bytes-other-name.png"]["duplicate_of"] == again["comfyui_lora_multiple.png"]["work"]
    works = [r for r in artkeep("ls", "--json").records() if r["kind"] == "work"]
    assert len(works) == 2
    record = artkeep("show", str(again["a1111_cropped.png"]["work"]), "--json").records()[0]
    assert record["params"]["prompt"] == "photo of a duck"


def test_import_reads_zip_archives_in_place_and_refuses_hostile_entries(artkeep: ArtkeepCli,
                                                                       tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("works/comfy.png", COMFY.read_bytes())
        z.writestr("works/comfy.json", b'{"note": "sidecar json"}')
        z.writestr("../escape.png", A1111.read_bytes())
        z.writestr("/etc/absolute.png", A1111.read_bytes())
        link = zipfile.ZipInfo("works/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
        z.writestr("bomb.bin", bytes(50 * 1024 * 1024))  # 50 MiB of zeros compress ~1000:1
        z.writestr("plain.txt", b"hello")
    run = artkeep("import", archive, "--json")
    assert run.returncode == 1, run  # some entries failed; the rest went on
    by_name = {str(r["path"]).split(":", 1)[1]: r for r in run.records()}
    assert by_name["works/comfy.png"]["outcome"] == "new"
    assert by_name["works/comfy.json"]["outcome"] == "sidecar"
    assert by_name["plain.txt"]["outcome"] == "new"
    assert "'..'" in str(by_name["../escape.png"]["error"])
    assert "absolute" in str(by_name["/etc/absolute.png"]["error"])
    assert "symbolic link" in str(by_name["works/link.png"]["error"])
    assert "zip bomb" in str(by_name["bomb.bin"]["error"])
    assert not (tmp_path / "escape.png").exists()
    assert artkeep("fsck").returncode == 0


def test_a_damaged_zip_entry_fails_alone(artkeep: ArtkeepCli, tmp_path: Path) -> None:
    archive = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("good.txt", b"fine")
        z.writestr("bad.txt", b"x" * 4096)
    data = bytearray(archive.read_bytes())
    at = data.index(b"x" * 4096)
    data[at + 100] ^= 0x01  # the CRC no longer matches
    archive.write_bytes(bytes(data))
    run = artkeep("import", archive, "--json")
    assert run.returncode == 1
    by_name = {str(r["path"]).split(":", 1)[1]: r for r in run.records()}
    assert by_name["good.txt"]["outcome"] == "new"
    assert "cannot be read" in str(by_name["bad.txt"]["error"])


def test_inspect_prints_the_extraction_and_errors_as_json(artkeep: ArtkeepCli, tmp_path: Path) -> None:
    run = artkeep("inspect", A1111, "--json")
    assert run.returncode == 0, run
    result = run.records()[0]
    assert set(result) == {"generator", "params", "raw"}
    assert result["generator"]["family"] == "a1111" and result["params"]["seed"] == 235284042
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(os.urandom(1000))
    bad = artkeep("inspect", garbage, "--json")
    assert bad.returncode == 2 and "error" in bad.records()[0]
    assert "Traceback" not in bad.err
    missing = artkeep("inspect", tmp_path / "nope.png", "--json")
    assert missing.returncode == 1 and "error" in missing.records()[0]


def test_the_node_key_is_private(artkeep: ArtkeepCli, tmp_path: Path) -> None:
    artkeep("pin", copy(A1111, tmp_path))
    key = artkeep.home / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32


@pytest.mark.parametrize("image", sorted(p.name for p in (SHARED / "fixtures" / "images").iterdir()
                                         if p.suffix in (".png", ".jpg", ".jpeg", ".webp")
                                         and p.stat().st_size > 0))
def test_the_gallery_facts_of_a_new_work_are_those_of_its_stored_record(image: str) -> None:
    from node import search, works
    from node.profiles import get_profile

    data = (SHARED / "fixtures" / "images" / image).read_bytes()
    blocks: dict[object, bytes] = {}
    made = works.make(data, image, "tests", get_profile("unixfs-v1-2025"), new_seed(),
                      "2026-11-21T00:00:00Z", lambda cid, parts: blocks.update({cid: b"".join(parts)}))
    assert blocks[made.cid] == made.record
    stored = work.decode(made.record)
    assert search.entry_of(str(made.cid), made.value) == search.entry_of(str(made.cid), stored)


def test_copies_of_one_image_are_one_work_even_when_each_file_is_its_own_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers look for an earlier work while the node records batches; an answer given before a
    # batch was recorded must be asked again, or a copy judged after it would become a second work.
    monkeypatch.setattr(node_module, "PIN_BATCH_FILES", 1)
    folder = tmp_path / "copies"
    for i in range(12):
        copy(COMFY, folder, f"copy{i:02d}.png")
    with Node(tmp_path / "home") as node:
        items = list(sources.walk([folder], archives=False))
        results = list(node.rescue(items, get_profile("unixfs-v1-2025")))
        assert [r.outcome for r in results] == ["new"] + ["duplicate"] * 11
        assert {r.duplicate_of for r in results[1:]} == {results[0].work}
        assert node.count_works() == 1


@pytest.mark.parametrize("whole_read_bytes", [rescue.WHOLE_READ_BYTES, 0])  # read at once / head first
@pytest.mark.parametrize("change", ["grew", "shrank"])
def test_an_image_that_changed_after_it_was_listed_is_stored_as_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_read_bytes: int, change: str) -> None:
    monkeypatch.setattr(rescue, "WHOLE_READ_BYTES", whole_read_bytes)
    path = copy(COMFY, tmp_path / "in", "a.png")
    items = list(sources.walk([path.parent], archives=False))  # the listing keeps the old size
    data = path.read_bytes()
    now = data + bytes(300_000) if change == "grew" else data[: len(data) // 2]
    path.write_bytes(now)
    with Node(tmp_path / "home") as node:
        [result] = list(node.rescue(items, get_profile("unixfs-v1-2025")))
        assert result.outcome == "new" and result.work is not None
        assert result.size == len(now)
        assert b"".join(node.cat(str(result.cid))) == now
