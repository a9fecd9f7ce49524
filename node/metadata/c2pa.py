"""C2PA manifest stores read and validated offline with c2pa-python, and summarised for the parsers.

Pure as far as this process can see: bytes in, entries out. The C2PA SDK would
fetch remote manifests over HTTP by default and can fetch OCSP responses; the
settings below turn both off and also give it an empty list of allowed hosts,
so any request it still tried would be refused inside the SDK (an empty allow
list denies every URI, see c2pa-rs `sdk/src/http/restricted.rs`). A store that
lives only at a remote URL becomes a problem naming that URL, never a fetch.
tests/test_metadata_containers.py proves it against a loopback server.

Entries: ("c2pa", "manifest_store", the store as JSON text), then the summary
as text under fixed keys: "manifest_count", "claim_generator", "action",
"digital_source_type", "signer_issuer", "validation_state", "signature_valid"
("true"/"false"). `summarize()` gives the same summary typed, from the JSON.
Without a trust list every signer is `signingCredential.untrusted`: that is
not a bad signature, and signature_valid does not count it.
"""

from __future__ import annotations

import functools
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from node.metadata.limits import Reading

SOURCE = "c2pa"
OFFLINE_SETTINGS: dict[str, Any] = {
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    "core": {"allowed_network_hosts": []},
}
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
URL = re.compile(r"https?://\S+")


@dataclass(frozen=True, slots=True)
class C2paSummary:
    """What the active manifest says about origin: never a prompt or settings, C2PA does not carry them."""

    manifest_count: int
    claim_generator: str | None
    action: str | None  # the first action of the active manifest, e.g. "c2pa.created"
    digital_source_type: str | None  # IPTC URI, e.g. .../trainedAlgorithmicMedia
    signer_issuer: str | None
    validation_state: str | None  # "Invalid" | "Valid" | "Trusted"
    signature_valid: bool | None  # the claim signature checked out (trust in the signer aside)
    failures: tuple[str, ...]  # status codes of the active manifest's failures


@functools.cache
def offline_context() -> Any:
    """One SDK context for the process, with every network path closed (see the module docstring)."""
    import c2pa

    return c2pa.Context.from_dict(OFFLINE_SETTINGS)


def read_manifest_store(data: bytes, format: str, reading: Reading) -> None:
    """Validate the C2PA store embedded in this file (PNG, JPEG or WebP bytes) and add its entries."""
    import c2pa

    try:
        with c2pa.Reader(MIME[format], io.BytesIO(data), None, offline_context()) as reader:
            store = reader.json()
    except c2pa.C2paError as exc:
        message = str(exc)
        remote = URL.search(message)
        if message.startswith("Remote") and remote:
            reading.problem(f"C2PA manifest store is remote at {remote.group(0)}; not fetched")
        else:
            reading.problem(f"C2PA manifest store not readable: {message}")
        return
    reading.add(SOURCE, "manifest_store", store)
    summary = summarize(store)
    fields: dict[str, object] = {
        "manifest_count": summary.manifest_count, "claim_generator": summary.claim_generator,
        "action": summary.action, "digital_source_type": summary.digital_source_type,
        "signer_issuer": summary.signer_issuer, "validation_state": summary.validation_state,
        "signature_valid": None if summary.signature_valid is None else str(summary.signature_valid).lower(),
    }
    for key, value in fields.items():
        if value is not None:
            reading.add(SOURCE, key, str(value))


def summarize(store_json: str) -> C2paSummary:
    """The summary of a manifest store JSON as c2pa-python's Reader.json() writes it."""
    store = mapping(json.loads(store_json))
    manifests = mapping(store.get("manifests"))
    active = mapping(manifests.get(str(store.get("active_manifest"))))
    action, source_type = first_action(active.get("assertions"))
    codes = mapping(mapping(store.get("validation_results")).get("activeManifest"))
    successes = {mapping(item).get("code") for item in listing(codes.get("success"))}
    failures = tuple(str(mapping(item).get("code")) for item in listing(codes.get("failure")))
    signature_valid = None
    if "claimSignature.validated" in successes or any(code.startswith("claimSignature") for code in failures):
        signature_valid = not any(code.startswith("claimSignature") for code in failures)
    return C2paSummary(
        manifest_count=len(manifests),
        claim_generator=active.get("claim_generator") or generator_info(active),
        action=action,
        digital_source_type=source_type,
        signer_issuer=mapping(active.get("signature_info")).get("issuer"),
        validation_state=store.get("validation_state"),
        signature_valid=signature_valid,
        failures=failures,
    )


def generator_info(manifest: dict[str, Any]) -> str | None:
    """A v2 claim's generator: name and version of its first claim_generator_info."""
    infos = listing(manifest.get("claim_generator_info"))
    first = mapping(infos[0]) if infos else {}
    if not first.get("name"):
        return None
    return " ".join(str(part) for part in (first["name"], first.get("version")) if part)


def first_action(assertions: object) -> tuple[str | None, str | None]:
    """The first action, and the first digitalSourceType of any action (Adobe puts it in parameters)."""
    action = source_type = None
    for assertion in map(mapping, listing(assertions)):
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for item in map(mapping, listing(mapping(assertion.get("data")).get("actions"))):
            action = action or item.get("action")
            source_type = (source_type or item.get("digitalSourceType")
                           or mapping(item.get("parameters")).get("com.adobe.digitalSourceType"))
    return action, source_type


def mapping(value: object) -> dict[str, Any]:
    """A JSON object, or an empty one when the store has something else in that place."""
    return value if isinstance(value, dict) else {}


def listing(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
