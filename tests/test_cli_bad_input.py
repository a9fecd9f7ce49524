"""Bad input to the real `artkeep` command: a clear error, no traceback, nothing half done.

Unusable paths (missing, unreadable, pipes, sockets, devices, symlink loops)
get one error each while the rest is pinned, and exit 1. Invalid CIDs exit 2,
absent ones 4. A CAR that is truncated, corrupt, oversized or not a CAR is
refused whole: the store's block count does not move.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ArtkeepCli, CliRun

from node import car, dagcbor, dagpb, varint
from node import cid as cids
from node.cli import build_parser
from node.dagpb import PBLink, PBNode

MiB = 1024 * 1024
MAX_BLOCK = 2 * MiB
SEED = 2015
AS_ROOT = os.geteuid() == 0


def assert_clean_failure(run: CliRun, code: int) -> None:
    """Exit code as expected, and a message rather than a Python traceback."""
    assert run.returncode == code, run
    assert "Traceback" not in run.err and "Traceback" not in run.out, run


def blocks_and_pins(cli: ArtkeepCli) -> tuple[int, int]:
    status = cli("status", "--json")
    assert status.returncode == 0, status
    [record] = status.records()
    return int(str(record["blocks"])), int(str(record["pins"]))


# --- unusable paths ----------------------------------------------------------------------------

class MixedFolder:
    """Good works next to everything that cannot be pinned, and what each bad one should say."""

    def __init__(self, root: Path) -> None:
        rng = random.Random(SEED)
        self.root = root
        (root / "sub").mkdir(parents=True)
        self.good = [root / "a.png", root / "sub" / "b.png", root / "c.txt"]
        for path, size in zip(self.good, (5000, MiB + 3, 0), strict=True):
            path.write_bytes(rng.randbytes(size))
        # Errors both modes report: name -> words the error must contain.
        self.bad: dict[Path, str] = {}
        os.mkfifo(root / "pipe")
        self.bad[root / "pipe"] = "named pipe"
        with socket.socket(socket.AF_UNIX) as server:
            # bind() takes at most ~108 bytes of path: bind by a short relative name.
            cwd = Path.cwd()
            os.chdir(root)
            try:
                server.bind("socket")
            finally:
                os.chdir(cwd)
        self.bad[root / "socket"] = "socket"
        try:
            os.mknod(root / "device", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
            self.bad[root / "device"] = "device"
        except PermissionError:
            pass  # not root: the /dev/null symlink below still gives per-file mode a device
        if not AS_ROOT:
            locked = root / "locked.png"
            locked.write_bytes(b"secret")
            locked.chmod(0)
            self.bad[locked] = "Permission denied"
        # Symlinks: followed in per-file mode, stored as UnixFS symlinks in --dir mode (as Kubo does).
        self.links: dict[Path, str] = {}
        os.symlink("/dev/null", root / "null-device")
        self.links[root / "null-device"] = "device"
        os.symlink("loop-b", root / "loop-a")
        os.symlink("loop-a", root / "loop-b")
        self.links[root / "loop-a"] = self.links[root / "loop-b"] = "symlink loop"
        os.symlink("..", root / "sub" / "up")
        self.links[root / "sub" / "up"] = "symlink loop"
        # Root reads any file it can open; /proc/self/mem opens but every read at 0 fails (EIO).
        os.symlink("/proc/self/mem", root / "unreadable.png")
        self.links[root / "unreadable.png"] = "Input/output error"


@pytest.fixture
def mixed(tmp_path: Path) -> MixedFolder:
    return MixedFolder(tmp_path / "mixed")


def split(run: CliRun) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    """JSON lines by path: the results, and the errors."""
    results: dict[str, dict[str, object]] = {}
    errors: dict[str, str] = {}
    for record in run.records():
        path = str(record["path"])
        if "error" in record:
            assert path not in errors, f"{path} reported twice"
            errors[path] = str(record["error"])
        else:
            assert {"cid", "size"} <= set(record), record
            results[path] = record
    return results, errors


@pytest.mark.parametrize("command", ["pin", "cid"])
def test_each_unusable_path_gets_its_own_error_and_the_good_files_are_still_pinned(
        artkeep: ArtkeepCli, mixed: MixedFolder, tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no-such-work.png"
    run = artkeep(command, mixed.root, missing, "--json")
    assert_clean_failure(run, 1)
    results, errors = split(run)

    expected_errors = {missing: "No such file", **mixed.bad, **mixed.links}
    assert set(errors) == {str(path) for path in expected_errors}
    for path, words in expected_errors.items():
        assert str(path) in errors[str(path)] and words in errors[str(path)], errors[str(path)]
    assert set(results) == {str(path) for path in mixed.good}
    for path in mixed.good:
        assert results[str(path)]["size"] == path.stat().st_size

    if command == "pin":
        for path in mixed.good:
            cat = artkeep("cat", results[str(path)]["cid"])
            assert cat.returncode == 0 and cat.stdout == path.read_bytes(), cat
        assert blocks_and_pins(artkeep)[1] == len(mixed.good)
    else:
        assert not (artkeep.home / "blocks").exists() or blocks_and_pins(artkeep) == (0, 0)


@pytest.mark.parametrize("command", ["pin", "cid"])
def test_dir_mode_leaves_out_unusable_entries_with_an_error_each_and_pins_the_rest(
        artkeep: ArtkeepCli, mixed: MixedFolder, tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no-such-folder"
    a_file = tmp_path / "loose.png"
    a_file.write_bytes(b"a file, not a folder")
    run = artkeep(command, "--dir", mixed.root, missing, a_file, "--json")
    assert_clean_failure(run, 1)
    results, errors = split(run)

    assert set(errors) == {str(path) for path in [missing, a_file, *mixed.bad]}
    assert "not a folder" in errors[str(missing)] and "not a folder" in errors[str(a_file)]
    for path, words in mixed.bad.items():
        assert str(path) in errors[str(path)] and words in errors[str(path)], errors[str(path)]
    kinds = {path: str(record["kind"]) for path, record in results.items()}
    assert kinds == {
        **{str(path): "file" for path in mixed.good},
        **{str(path): "symlink" for path in mixed.links},
        str(mixed.root / "sub"): "directory",
        str(mixed.root): "directory",
    }
    root = str(results[str(mixed.root)]["cid"])
    # The same folder gives the same root whether pinned or only hashed.
    other_command = "cid" if command == "pin" else "pin"
    other = artkeep.at(tmp_path / "other")(other_command, "--dir", mixed.root, "--json")
    assert other.returncode == 1
    assert split(other)[0][str(mixed.root)]["cid"] == root
    if command == "pin":
        cat = artkeep("cat", f"{root}/sub/b.png")
        assert cat.returncode == 0 and cat.stdout == (mixed.root / "sub" / "b.png").read_bytes()
        assert artkeep("cat", f"{root}/pipe").returncode == 4  # left out, not half stored
        assert blocks_and_pins(artkeep)[1] == 1


def test_human_output_keeps_errors_on_stderr_and_cids_on_stdout(
        artkeep: ArtkeepCli, mixed: MixedFolder) -> None:
    run = artkeep("cid", mixed.root)
    assert_clean_failure(run, 1)
    lines = run.out.splitlines()
    assert len(lines) == len(mixed.good)
    for line, path in zip(lines, sorted(mixed.good, key=str), strict=True):
        cid, *_, name = line.split()
        cids.parse(cid)
        assert name == str(path)
    for path in [*mixed.bad, *mixed.links]:
        assert str(path) in run.err
    assert f"{len(mixed.bad) + len(mixed.links)} failed" in run.err


def test_a_folder_that_only_fails_still_exits_1(artkeep: ArtkeepCli, tmp_path: Path) -> None:
    run = artkeep("pin", tmp_path / "nothing-here", "--json")
    assert_clean_failure(run, 1)
    assert [set(record) for record in run.records()] == [{"path", "error"}]


# --- CID strings ----------------------------------------------------------------------------------

INVALID_CIDS = [
    "notacid",
    "",
    "Qm" + "0" * 44,  # base58 has no 0
    "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd",  # one character short
    "bafybeihfegnhn2yqy6kz72hoguco5gkjdjdktkg5634ohpkq7wautlgj",  # truncated digest
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk!",
    "zQ3sh",
    "/ipfs/",
    "f01551220" + "ab" * 31,  # base16, digest one byte short
]


@pytest.mark.parametrize("text", INVALID_CIDS)
@pytest.mark.parametrize("command", ["cat", "export", "unpin"])
def test_an_invalid_cid_string_is_refused_with_exit_2(
        artkeep: ArtkeepCli, tmp_path: Path, command: str, text: str) -> None:
    output = tmp_path / "out.car"
    args = {"cat": ["cat", text], "export": ["export", text, "-o", output], "unpin": ["unpin", text]}[command]
    run = artkeep(*args)
    assert_clean_failure(run, 2)
    assert "CID" in run.err, run
    assert run.stdout == b""
    assert not output.exists() and not output.with_name("out.car.part").exists()


ABSENT = [str(cids.cid_of(b"never stored", cids.RAW)),
          str(cids.cid_of(b"never stored", cids.DAG_PB, version=0))]


@pytest.mark.parametrize("text", ABSENT)
@pytest.mark.parametrize("command", ["cat", "export", "unpin"])
def test_a_valid_cid_that_is_not_here_exits_4(
        artkeep: ArtkeepCli, tmp_path: Path, command: str, text: str) -> None:
    output = tmp_path / "out.car"
    args = {"cat": ["cat", text], "export": ["export", text, "-o", output], "unpin": ["unpin", text]}[command]
    run = artkeep(*args)
    assert_clean_failure(run, 4)
    assert text in run.err, run
    assert run.stdout == b""
    assert not output.exists() and not output.with_name("out.car.part").exists()


def test_a_path_that_is_not_in_a_pinned_folder_exits_4(artkeep: ArtkeepCli, mixed: MixedFolder) -> None:
    pin = artkeep("pin", "--dir", mixed.root, "--json")
    root = str(pin.records()[-1]["cid"])
    run = artkeep("cat", f"{root}/sub/nope.png")
    assert_clean_failure(run, 4)
    assert "nope.png" in run.err
    folder = artkeep("cat", root)
    assert_clean_failure(folder, 2)
    assert "directory" in folder.err


# --- CAR files ------------------------------------------------------------------------------------

@pytest.fixture
def work_car(tmp_path: Path) -> tuple[bytes, str]:
    """A real CAR from `artkeep export`: a 3 MiB work (four raw chunks under a dag-pb root)."""
    source = ArtkeepCli(tmp_path / "source")
    work = tmp_path / "work.png"
    work.write_bytes(random.Random(SEED).randbytes(3 * MiB + 5))
    pin = source("pin", work, "--json")
    assert pin.returncode == 0, pin
    root = str(pin.records()[0]["cid"])
    out = tmp_path / "work.car"
    assert source("export", root, "-o", out).returncode == 0
    return out.read_bytes(), root


@pytest.fixture
def home_with_a_pin(artkeep: ArtkeepCli, tmp_path: Path) -> ArtkeepCli:
    """A home that already holds something, so 'nothing stored' is a count that must not move."""
    existing = tmp_path / "existing.png"
    existing.write_bytes(random.Random(SEED + 1).randbytes(70_000))
    assert artkeep("pin", existing).returncode == 0
    return artkeep


def single_block_car(block: bytes, codec: int) -> bytes:
    cid = cids.cid_of(block, codec)
    return car.encode_header([cid]) + car.encode_section(cid, block)


def flip_a_block_byte(data: bytes) -> bytes:
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0x40  # inside the second 1 MiB chunk
    return bytes(corrupt)


def with_oversized_block(data: bytes) -> bytes:
    block = bytes(MAX_BLOCK + 1)
    return data + car.encode_section(cids.cid_of(block, cids.RAW), block)


BAD_CARS: dict[str, tuple[Callable[[bytes], bytes], int, str]] = {
    # name: (make it from a good CAR, exit code, words the error must contain)
    "an empty file": (lambda good: b"", 2, "truncated"),
    "garbage bytes": (lambda good: random.Random(SEED).randbytes(4096), 2, ""),
    "text that is not a CAR": (lambda good: b"hello, this is not a CAR file\n" * 20, 2, ""),
    "cut inside the header": (lambda good: good[:20], 2, "truncated"),
    "cut inside a block": (lambda good: good[:len(good) // 2], 2, "truncated"),
    "cut one byte short": (lambda good: good[:-1], 2, "truncated"),
    "a block that does not match its CID": (flip_a_block_byte, 3, "does not match"),
    "a header that is not DAG-CBOR": (lambda good: varint.encode(6) + b"\xff" * 6 + good[60:], 2,
                                      "DAG-CBOR"),
    "a CARv2 pragma and nothing more": (lambda good: car.CARV2_PRAGMA, 2, "truncated"),
    "a section claiming more than the file holds": (
        lambda good: good + varint.encode(1000) + bytes(cids.cid_of(b"x", cids.RAW)) + b"x", 2, "truncated"),
    "a block over 2 MiB with its true CID": (
        lambda good: single_block_car(random.Random(SEED).randbytes(MAX_BLOCK + 1), cids.RAW), 2, "limit"),
    "a good CAR then a 2 MiB + 1 block": (with_oversized_block, 2, "limit"),
}


@pytest.mark.parametrize("name", list(BAD_CARS))
def test_a_bad_car_is_refused_whole_and_nothing_is_stored(
        home_with_a_pin: ArtkeepCli, work_car: tuple[bytes, str], tmp_path: Path, name: str) -> None:
    cli = home_with_a_pin
    make, code, words = BAD_CARS[name]
    bad = tmp_path / "bad.car"
    bad.write_bytes(make(work_car[0]))
    before = blocks_and_pins(cli)

    run = cli("import", bad, "--json")
    assert_clean_failure(run, code)
    [record] = run.records()
    assert record["path"] == str(bad)
    error = str(record["error"])
    assert str(bad) in error and words in error and "nothing was stored" in error, error

    human = cli("import", bad)
    assert_clean_failure(human, code)
    assert human.out == "" and "nothing was stored" in human.err

    assert blocks_and_pins(cli) == before
    fsck = cli("fsck", "--json")
    assert fsck.returncode == 0 and fsck.records() == [], fsck  # no staging folder left behind


def test_a_block_of_exactly_2_mib_is_accepted(artkeep: ArtkeepCli, tmp_path: Path) -> None:
    block = random.Random(SEED).randbytes(MAX_BLOCK)
    path = tmp_path / "edge.car"
    path.write_bytes(single_block_car(block, cids.RAW))
    run = artkeep("import", path, "--json")
    assert run.returncode == 0, run
    root = str(cids.cid_of(block, cids.RAW))
    assert [r["cid"] for r in run.records()] == [root]
    cat = artkeep("cat", root)
    assert cat.returncode == 0 and cat.stdout == block


def test_a_bad_car_among_good_ones_does_not_stop_the_good_ones(
        home_with_a_pin: ArtkeepCli, work_car: tuple[bytes, str], tmp_path: Path) -> None:
    cli = home_with_a_pin
    good, root = work_car
    first, broken = tmp_path / "first.car", tmp_path / "broken.car"
    first.write_bytes(good)
    broken.write_bytes(good[:-1])
    blocks, pins = blocks_and_pins(cli)

    run = cli("import", broken, first, "--json")
    assert_clean_failure(run, 2)
    failed, imported = run.records()
    assert failed["path"] == str(broken) and "truncated" in str(failed["error"])
    assert imported["path"] == str(first) and imported["cid"] == root and "error" not in imported
    assert blocks_and_pins(cli) == (blocks + int(str(imported["new_blocks"])), pins + 1)
    assert int(str(imported["new_blocks"])) == 5


def garbage_dag_pb_root() -> bytes:
    block = b"\xff\xfe not a protobuf"
    return single_block_car(block, cids.DAG_PB)


def garbage_dag_cbor_root() -> bytes:
    return single_block_car(b"\x9f\x01\x02", cids.DAG_CBOR)  # indefinite-length array: not DAG-CBOR


def good_root_over_garbage_child() -> bytes:
    child = b"\x0a\x05junk!\x12"  # dag-pb Data field then a truncated link
    child_cid = cids.cid_of(child, cids.DAG_PB)
    root = dagpb.encode(PBNode(links=(PBLink(child_cid, "child", len(child)),), data=b"\x08\x01"))
    root_cid = cids.cid_of(root, cids.DAG_PB)
    return (car.encode_header([root_cid]) + car.encode_section(root_cid, root)
            + car.encode_section(child_cid, child))


def good_cbor_root_over_garbage_child() -> bytes:
    child = b"\xa1\x01"  # a map cut short
    child_cid = cids.cid_of(child, cids.DAG_CBOR)
    root = dagcbor.encode({"work": child_cid, "title": "garbage below"})
    root_cid = cids.cid_of(root, cids.DAG_CBOR)
    return (car.encode_header([root_cid]) + car.encode_section(root_cid, root)
            + car.encode_section(child_cid, child))


def good_root_beside_a_garbage_root() -> bytes:
    good, garbage = b"a fine work", b"\xff\xfe"
    good_cid, garbage_cid = cids.cid_of(good, cids.RAW), cids.cid_of(garbage, cids.DAG_PB)
    return (car.encode_header([good_cid, garbage_cid]) + car.encode_section(good_cid, good)
            + car.encode_section(garbage_cid, garbage))


GARBAGE_DAGS = {
    "a dag-pb root that is not dag-pb": garbage_dag_pb_root,
    "a DAG-CBOR root that is not DAG-CBOR": garbage_dag_cbor_root,
    "a dag-pb root over a garbage child": good_root_over_garbage_child,
    "a DAG-CBOR root over a garbage child": good_cbor_root_over_garbage_child,
}


@pytest.mark.parametrize("name", [*GARBAGE_DAGS, "a good root beside a garbage root"])
def test_a_car_of_correctly_hashed_garbage_is_refused_and_nothing_is_stored(
        home_with_a_pin: ArtkeepCli, tmp_path: Path, name: str) -> None:
    # The blocks hash right, but a root that cannot be walked is no work to keep: refuse it whole,
    # as the issue says ("garbage dag-pb or DAG-CBOR: a clear error, nothing stored").
    cli = home_with_a_pin
    path = tmp_path / "garbage.car"
    make = GARBAGE_DAGS.get(name, good_root_beside_a_garbage_root)
    path.write_bytes(make())
    before = blocks_and_pins(cli)
    run = cli("import", path, "--json")
    assert_clean_failure(run, 2)
    [record] = run.records()
    assert "nothing was stored" in str(record["error"])
    assert any(word in str(record["error"]) for word in ("dag-pb", "DAG-CBOR")), record
    assert blocks_and_pins(cli) == before


@pytest.mark.parametrize("name", list(GARBAGE_DAGS))
def test_a_car_of_correctly_hashed_garbage_gets_a_clear_error_not_a_traceback(
        home_with_a_pin: ArtkeepCli, tmp_path: Path, name: str) -> None:
    cli = home_with_a_pin
    path = tmp_path / "garbage.car"
    path.write_bytes(GARBAGE_DAGS[name]())
    pins = blocks_and_pins(cli)[1]
    run = cli("import", path, "--json")
    assert_clean_failure(run, 2)
    [record] = run.records()
    assert any(word in str(record["error"]) for word in ("dag-pb", "DAG-CBOR")), record
    assert blocks_and_pins(cli)[1] == pins  # never pinned
    fsck = cli("fsck", "--json")
    assert fsck.returncode == 0, fsck


# --- help and JSON ------------------------------------------------------------------------------

def subcommands() -> list[str]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(action.choices)


def test_the_parser_knows_the_commands_the_docs_name() -> None:
    assert {"pin", "cid", "ls", "cat", "export", "import", "unpin", "gc", "fsck", "status"} <= set(
        subcommands())


@pytest.mark.parametrize("command", subcommands())
def test_every_command_explains_itself_with_help(artkeep: ArtkeepCli, command: str) -> None:
    run = artkeep(command, "--help")
    assert run.returncode == 0, run
    assert run.out.startswith(f"usage: artkeep {command}") and run.err == ""


def test_artkeep_help_and_version_exit_0_and_no_command_exits_2(artkeep: ArtkeepCli) -> None:
    top = artkeep("--help")
    assert top.returncode == 0 and "Exit codes" in top.out
    assert artkeep("--version").returncode == 0
    bare = artkeep()
    assert bare.returncode == 2 and "usage: artkeep" in bare.out + bare.err
    unknown = artkeep("frobnicate")
    assert_clean_failure(unknown, 2)


def test_every_json_output_is_one_object_per_line(
        artkeep: ArtkeepCli, mixed: MixedFolder, work_car: tuple[bytes, str], tmp_path: Path) -> None:
    car_path = tmp_path / "in.car"
    car_path.write_bytes(work_car[0])
    exported = tmp_path / "out.car"
    pin = artkeep("pin", "--dir", mixed.root, "--json")
    root = str(pin.records()[-1]["cid"])
    runs = [
        pin,
        artkeep("pin", mixed.root, "--json"),
        artkeep("cid", mixed.root, "--json"),
        artkeep("cid", "--dir", mixed.root, "--json"),
        artkeep("import", car_path, "--json"),
        artkeep("ls", "--json"),
        artkeep("export", root, "-o", exported, "--json"),
        artkeep("status", "--json"),
        artkeep("fsck", "--json"),
        artkeep("unpin", work_car[1], "--json"),
        artkeep("unpin", work_car[1], "--json"),  # not pinned any more: an error, still JSON
        artkeep("gc", "--dry-run", "--json"),
        artkeep("gc", "--yes", "--json"),
        artkeep("export", "notacid", "-o", exported, "--json"),
        artkeep("import", tmp_path / "no-such.car", "--json"),
    ]
    quiet_when_clean = {"fsck", "gc"}  # they print one line per finding or block, and found none
    for run in runs:
        assert "Traceback" not in run.err, run
        records = run.records()  # each line parses as one JSON object
        command = run.args[run.args.index("--home") + 2]
        assert records or command in quiet_when_clean, run
    assert "error" in runs[10].records()[0] and runs[10].returncode == 4
    assert "error" in runs[13].records()[0] and runs[13].returncode == 2
    assert "error" in runs[14].records()[0] and runs[14].returncode == 1
