"""The artkeep command line, run as a user runs it: a real process on a real home folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import chacha_stream

from node import importer
from node.profiles import get_profile


class Artkeep:
    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *args: str, stdin: bytes | None = None,
                 ok: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([sys.executable, "-m", "node.cli", "--home", str(self.home), *args],
                              input=stdin, capture_output=True, timeout=120)
        assert b"Traceback" not in done.stderr, done.stderr.decode()
        if ok:
            assert done.returncode == 0, done.stderr.decode()
        return done

    def json(self, *args: str, ok: bool = True) -> list[dict]:  # type: ignore[type-arg]
        done = self(*args, "--json", ok=ok)
        return [json.loads(line) for line in done.stdout.decode().splitlines()]


@pytest.fixture
def artkeep(tmp_path: Path) -> Artkeep:
    return Artkeep(tmp_path / "home")


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    root = tmp_path / "gallery"
    (root / "2024" / "may").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.png").write_bytes(chacha_stream("a", 5000))
    (root / "2024" / "big.png").write_bytes(chacha_stream("big", 3 * 1024 * 1024 + 17))
    (root / "2024" / "may" / "ünïcode name.txt").write_bytes(b"prompt: a cat\n")
    (root / ".hidden").write_bytes(b"not in a --dir import")
    os.symlink("a.png", root / "link.png")
    return root


def test_pin_prints_one_json_line_per_file_with_cid_and_size(artkeep: Artkeep, gallery: Path) -> None:
    lines = artkeep.json("pin", str(gallery / "a.png"), str(gallery / "2024"))
    assert sorted(Path(line["path"]).name for line in lines) == ["a.png", "big.png", "ünïcode name.txt"]
    for line in lines:
        assert set(line) == {"path", "cid", "size"}
        path = Path(line["path"])
        assert line["size"] == path.stat().st_size
        assert line["cid"] == str(importer.hash_file(path, get_profile("unixfs-v1-2025")))
    listed = artkeep.json("ls")
    assert {pin["cid"] for pin in listed} == {line["cid"] for line in lines}


def test_cid_stores_nothing_and_pin_stores_what_cid_predicted(artkeep: Artkeep, gallery: Path) -> None:
    predicted = artkeep.json("cid", "--profile", "unixfs-v0-2015", str(gallery / "2024" / "big.png"))
    assert artkeep.json("status")[0]["blocks"] == 0
    pinned = artkeep.json("pin", "--profile", "unixfs-v0-2015", str(gallery / "2024" / "big.png"))
    assert predicted == pinned and pinned[0]["cid"].startswith("Qm")
    assert artkeep.json("status")[0]["blocks"] > 1


def test_dir_mode_prints_every_entry_and_the_root_last_as_ipfs_add_r(artkeep: Artkeep, gallery: Path) -> None:
    lines = artkeep.json("pin", "--dir", str(gallery))
    assert lines[-1]["path"] == str(gallery) and lines[-1]["kind"] == "directory"
    assert lines[-1]["cid"] == str(importer.hash_tree(gallery, get_profile("unixfs-v1-2025")))
    assert all(".hidden" not in line["path"] for line in lines)
    kinds = {Path(line["path"]).name: line["kind"] for line in lines}
    assert kinds["link.png"] == "symlink" and kinds["empty"] == "directory"
    assert artkeep.json("cid", "--dir", str(gallery))[-1]["cid"] == lines[-1]["cid"]
    with_hidden = artkeep.json("cid", "--dir", "--hidden", str(gallery))
    assert with_hidden[-1]["cid"] != lines[-1]["cid"]


def test_cat_streams_a_file_back_and_resolves_paths_in_directories(artkeep: Artkeep, gallery: Path) -> None:
    root = artkeep.json("pin", "--dir", str(gallery))[-1]["cid"]
    big = (gallery / "2024" / "big.png").read_bytes()
    assert artkeep("cat", f"{root}/2024/big.png").stdout == big
    file_cid = artkeep.json("pin", str(gallery / "2024" / "big.png"))[0]["cid"]
    assert artkeep("cat", file_cid).stdout == big
    missing = artkeep("cat", f"{root}/nope.png", ok=False)
    assert missing.returncode == 4 and b"nope.png" in missing.stderr


def test_export_then_import_into_another_home_gives_the_same_pin(artkeep: Artkeep, gallery: Path,
                                                                 tmp_path: Path) -> None:
    root = artkeep.json("pin", "--dir", str(gallery))[-1]["cid"]
    car_path = tmp_path / "gallery.car"
    exported = artkeep.json("export", root, "-o", str(car_path))[0]
    assert exported["blocks"] > 3 and car_path.stat().st_size == exported["bytes"]
    other = Artkeep(tmp_path / "other-home")
    imported = other.json("import", str(car_path))
    assert imported[0]["cid"] == root and "error" not in imported[0]
    assert other("cat", f"{root}/a.png").stdout == (gallery / "a.png").read_bytes()
    assert other.json("ls")[0]["cid"] == root
    piped = Artkeep(tmp_path / "third-home")
    done = piped("import", "-", "--json", stdin=car_path.read_bytes())
    assert json.loads(done.stdout)["cid"] == root


def test_unpin_then_gc_removes_exactly_the_blocks_no_pin_reaches(artkeep: Artkeep, gallery: Path) -> None:
    keep = artkeep.json("pin", str(gallery / "a.png"))[0]["cid"]
    drop = artkeep.json("pin", str(gallery / "2024" / "big.png"))[0]["cid"]
    before = artkeep.json("status")[0]["blocks"]
    assert artkeep.json("gc", "--dry-run") == []
    artkeep("unpin", drop)
    listed = artkeep.json("gc", "--dry-run")
    assert len(listed) == before - 1 and not any(line["removed"] for line in listed)
    refused = artkeep("gc", ok=False)  # no terminal to confirm on: refuses, removes nothing
    assert refused.returncode == 2 and artkeep.json("status")[0]["blocks"] == before
    removed = artkeep.json("gc", "--yes")
    assert {line["cid"] for line in removed} == {line["cid"] for line in listed}
    assert artkeep.json("status")[0]["blocks"] == 1
    assert artkeep("cat", keep).stdout == (gallery / "a.png").read_bytes()
    assert artkeep("fsck").returncode == 0


def test_unpin_of_something_not_pinned_says_so(artkeep: Artkeep) -> None:
    done = artkeep("unpin", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e", ok=False)
    assert done.returncode == 4 and b"not pinned" in done.stderr


def test_wrap_matches_kubo_add_w(artkeep: Artkeep, tmp_path: Path) -> None:
    hello = tmp_path / "hello.txt"
    hello.write_bytes(b"hello world\n")
    assert artkeep.json("cid", "--wrap", str(hello))[0]["cid"] == (
        "bafybeidhkumeonuwkebh2i4fc7o7lguehauradvlk57gzake6ggjsy372a")
    assert artkeep.json("pin", "--wrap", "--profile", "unixfs-v0-2015", str(hello))[0]["cid"] == (
        "QmfLiVjH2vujCVP2e75zyzBYmpcjktmDeU1YBz6Ct8BBsc")


def test_profile_comes_from_config_file_and_environment(artkeep: Artkeep, tmp_path: Path) -> None:
    hello = tmp_path / "hello"
    hello.write_bytes(b"hello world")
    artkeep.home.mkdir(parents=True)
    (artkeep.home / "config.toml").write_text('[import]\nprofile = "unixfs-v0-2015"\n')
    assert artkeep.json("cid", str(hello))[0]["cid"] == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    os.environ["ARTKEEP_IMPORT_PROFILE"] = "unixfs-v1-2025"
    try:
        assert artkeep.json("cid", str(hello))[0]["cid"].startswith("bafkrei")
    finally:
        del os.environ["ARTKEEP_IMPORT_PROFILE"]
    (artkeep.home / "config.toml").write_text('[import]\nprofile = "nonsense"\n')
    done = artkeep("cid", str(hello), ok=False)
    assert done.returncode == 2 and b"unknown CID profile" in done.stderr


def test_every_command_has_help(artkeep: Artkeep) -> None:
    for command in ("pin", "cid", "ls", "cat", "export", "import", "unpin", "gc", "fsck", "status"):
        assert b"usage: artkeep " + command.encode() in artkeep(command, "--help").stdout
    assert artkeep(ok=False).returncode == 2
