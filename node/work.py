"""Work records: one signed DAG-CBOR block binding an image to everything known about it.

Pure. A record links the image's UnixFS root, holds the normalized
generation parameters, keeps every raw metadata entry verbatim (large ones
as their own UnixFS files, through a callback that stores them), names any
sidecar files and says where the image came from. It is signed with Ed25519
over the DAG-CBOR bytes of the record without its "signature" field; the
work's CID is the CID of the signed record.

    {"type": "artkeep/work", "version": 1,
     "image": {"cid": CID, "size", "format", "width", "height", "media_type"},
     "generator": {"family", "tool"},
     "params": {prompt, negative_prompt, seed, steps, ...},
     "raw": [{"source", "key", "text" | "bytes" | "file": CID, ["size"]}],
     "c2pa": {...}?  "sidecars": [{"name", "file": CID, "size"}],
     "provenance": {"file_name", "source", "imported_at"},
     "signature": {"alg": "ed25519", "public_key": bytes, "signature": bytes}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node import dagcbor, signing
from node.cid import DAG_CBOR, Cid, cid_of
from node.dagcbor import Value
from node.errors import DagCborError, SignatureInvalid
from node.metadata.raw import RawEntry

RECORD_TYPE = "artkeep/work"
RECORD_VERSION = 1
INLINE_LIMIT = 16 * 1024  # raw values above this many bytes are stored as their own UnixFS file
_INT_RANGE = (-(2**64), 2**64 - 1)  # what DAG-CBOR's integer types hold

StoreBlob = Callable[[bytes], Cid]  # bytes → the CID of a UnixFS file holding them (stored)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    cid: Cid
    size: int
    format: str | None
    width: int | None
    height: int | None
    media_type: str | None


@dataclass(frozen=True, slots=True)
class Sidecar:
    name: str
    cid: Cid
    size: int


@dataclass(frozen=True, slots=True)
class Provenance:
    file_name: str
    source: str | None  # the platform or archive it came from, when known
    imported_at: str  # RFC 3339, UTC


def build(image: ImageInfo, generator: Mapping[str, Any], params: Mapping[str, Any],
          raw: Sequence[RawEntry], provenance: Provenance, store_blob: StoreBlob, *,
          sidecars: Sequence[Sidecar] = (), c2pa: Mapping[str, Any] | None = None) -> dict[str, Value]:
    """The unsigned record; large raw values go through store_blob."""
    record: dict[str, Value] = {
        "type": RECORD_TYPE,
        "version": RECORD_VERSION,
        "image": {"cid": image.cid, "size": image.size, "format": image.format, "width": image.width,
                  "height": image.height, "media_type": image.media_type},
        "generator": _value(generator),
        "params": _value(params),
        "raw": [_raw_entry(entry, store_blob) for entry in raw],
        "sidecars": [{"name": s.name, "file": s.cid, "size": s.size} for s in sidecars],
        "provenance": {"file_name": provenance.file_name, "source": provenance.source,
                       "imported_at": provenance.imported_at},
    }
    if c2pa is not None:
        record["c2pa"] = _value(c2pa)
    return record


def _raw_entry(entry: RawEntry, store_blob: StoreBlob) -> dict[str, Value]:
    data = entry.value.encode("utf-8") if isinstance(entry.value, str) else entry.value
    out: dict[str, Value] = {"source": entry.source, "key": entry.key}
    if len(data) > INLINE_LIMIT:
        out["file"] = store_blob(data)
        out["size"] = len(data)
        out["encoding"] = "utf-8" if isinstance(entry.value, str) else "binary"
    elif isinstance(entry.value, str):
        out["text"] = entry.value
    else:
        out["bytes"] = entry.value
    return out


def _value(value: Any) -> Value:
    """A JSON-like value as DAG-CBOR can hold it: tuples to lists, integers past 64 bits to strings."""
    if type(value) is str or value is None or type(value) is float or type(value) is bool:
        return value  # the common leaves, at the cost of one type check each
    if isinstance(value, Mapping):
        return {str(key): _value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_value(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        return str(value)
    if value is None or isinstance(value, str | bytes | int | float | bool | Cid):
        return value
    raise DagCborError(f"a work record cannot hold a {type(value).__name__}")


def sign(record: dict[str, Value], seed: bytes) -> dict[str, Value]:
    """The record with its signature field, made with the node key seed."""
    return sign_and_encode(record, seed)[0]


def sign_and_encode(record: dict[str, Value], seed: bytes) -> tuple[dict[str, Value], Cid, bytes]:
    """The signed record, its work CID and its block; each field is encoded once for both encodings."""
    unsigned = {key: value for key, value in record.items() if key != "signature"}
    fields = {key: dagcbor.encode(value, max_depth=dagcbor.MAX_DEPTH - 1) for key, value in unsigned.items()}
    signature: dict[str, Value] = {"alg": signing.ALGORITHM, "public_key": signing.public_key(seed),
                                   "signature": signing.sign(seed, dagcbor.encode_map(fields))}
    fields["signature"] = dagcbor.encode(signature, max_depth=dagcbor.MAX_DEPTH - 1)
    block = dagcbor.encode_map(fields)
    return {**unsigned, "signature": signature}, cid_of(block, DAG_CBOR), block


def encode(record: dict[str, Value]) -> tuple[Cid, bytes]:
    """The work CID and block of a signed record."""
    return dagcbor.cid_of(record)


def decode(block: bytes) -> dict[str, Value]:
    """A record from its block; DagCborError unless it is shaped like a work record."""
    record = dagcbor.decode(block)
    if not isinstance(record, dict) or record.get("type") != RECORD_TYPE:
        raise DagCborError("not an artkeep work record")
    if not isinstance(record.get("image"), dict) or not isinstance(record["image"].get("cid"), Cid):  # type: ignore[union-attr]
        raise DagCborError("work record has no image link")
    return record


def verify_signature(record: dict[str, Value]) -> bytes:
    """The signer's public key; SignatureInvalid if the record is unsigned or was altered."""
    sig = record.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != signing.ALGORITHM:
        raise SignatureInvalid("the work record is not signed with Ed25519")
    public, value = sig.get("public_key"), sig.get("signature")
    if not isinstance(public, bytes) or not isinstance(value, bytes):
        raise SignatureInvalid("the work record's signature is malformed")
    unsigned = {key: item for key, item in record.items() if key != "signature"}
    signing.verify(public, dagcbor.encode(unsigned), value)
    return public


def image_cid(record: Mapping[str, Value]) -> Cid:
    image = record["image"]
    assert isinstance(image, dict) and isinstance(image["cid"], Cid)
    return image["cid"]

