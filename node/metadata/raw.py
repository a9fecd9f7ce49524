"""What a container reader hands to the generator parsers: every metadata item, verbatim.

Pure data. The container readers (png, jpeg, webp, exif, stealth, c2pa) fill
a Container; the generator parsers (a1111, comfyui, ...) read only its
entries, never the file bytes. Nothing is dropped on the way: an entry whose
text cannot be decoded keeps its bytes, so the work record can store it as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One metadata item as stored in the file.

    source names the place, so the same key from two places stays apart:
      png:tEXt png:zTXt png:iTXt png:caBX
      jpeg:COM jpeg:APP1/XMP jpeg:APP11/JUMBF
      webp:XMP webp:C2PA
      exif (a tag from any EXIF block: PNG eXIf, JPEG APP1, WebP EXIF)
      png:eXIf jpeg:APP1/Exif webp:EXIF (key "exif": a block without a readable TIFF header, as bytes)
      stealth:alpha stealth:rgb (A1111 stealth pnginfo in pixel LSBs; key is the signature, e.g.
        "stealth_pngcomp")
      c2pa (key "manifest_store": the store as JSON text, read offline; then its summary as text under
        "manifest_count" "claim_generator" "action" "digital_source_type" "signer_issuer"
        "validation_state" "signature_valid")
      sidecar (a file next to the image; key is its suffix, e.g. ".txt")
    key is the PNG keyword, the EXIF tag name (e.g. "UserComment"), or a
    fixed name for single-item sources ("xmp", "xmp_extended", "jumbf", "comment").
    value is text when the format defines how to decode it and it decodes;
    otherwise the exact bytes.
    """

    source: str
    key: str
    value: str | bytes


@dataclass(frozen=True, slots=True)
class Container:
    """A file's container facts and every metadata entry, in file order."""

    format: str | None  # "PNG" | "JPEG" | "WEBP", from magic bytes; None if unknown
    width: int | None = None  # pixel size as stored, not the generation size
    height: int | None = None
    frames: int = 1
    entries: tuple[RawEntry, ...] = ()
    problems: tuple[str, ...] = field(default=())  # items skipped for a limit or damage, in words

    def find(self, key: str, source_prefix: str = "") -> list[RawEntry]:
        """Entries with this key (exact), optionally only from sources starting with source_prefix."""
        return [e for e in self.entries if e.key == key and e.source.startswith(source_prefix)]

    def text(self, key: str, source_prefix: str = "") -> str | None:
        """The first text value with this key, or None."""
        for entry in self.find(key, source_prefix):
            if isinstance(entry.value, str):
                return entry.value
        return None
