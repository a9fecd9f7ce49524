"""The one exception tree of artkeep.

Every failure a user can meet is a NodeError subclass. Its docstring says what
went wrong in general; the instance message says what exactly. Each class
carries the exit code the CLI returns and the HTTP status the web layer
answers with. Only the edges (cli.main, the web middleware) catch them.

    NodeError
    ├── InputError              bad input from the user or a peer (exit 2, HTTP 400)
    │   ├── InvalidCid
    │   ├── UnknownProfile
    │   ├── CodecError          bytes that are not valid in their format
    │   │   ├── DagPbError
    │   │   ├── DagCborError
    │   │   ├── UnixFsError
    │   │   ├── CarError
    │   │   ├── MetadataJsonError  JSON inside image metadata that a strict reader refuses
    │   │   └── ImageUnreadable    a file that is no image we read metadata from (empty, unknown format)
    │   ├── BlockTooLarge
    │   ├── TooLarge            a request body or upload over its limit (HTTP 413)
    │   ├── UploadStalled       an upload that stopped sending (HTTP 408)
    │   └── NotAcceptable       a response format or variant we cannot produce (HTTP 406)
    ├── Unauthorized            a missing or unknown API token (exit 2, HTTP 401)
    │   └── FormRefused         a gallery form without this node's CSRF token (HTTP 403)
    ├── IntegrityError          bytes that do not match their CID (exit 3, HTTP 502)
    │   ├── BlockMismatch
    │   └── SignatureInvalid    a work record whose signature does not verify
    ├── FetchError              an origin could not deliver a verified DAG (exit 1, HTTP 502)
    │   ├── InvalidOrigin       an origin that is not an HTTP(S) gateway address
    │   └── OriginRefused       an address outside fetch.allow_networks, refused before any packet
    ├── NotFound                (exit 4, HTTP 404)
    │   ├── BlockNotFound
    │   ├── PinNotFound
    │   ├── PlaceNotFound
    │   └── NotCached           `Cache-Control: only-if-cached` and the block is not here (HTTP 412)
    ├── PathError               a local file or folder cannot be read (exit 1)
    └── StoreError              the local store cannot do what was asked (exit 1)
"""

from __future__ import annotations


class NodeError(Exception):
    """artkeep failed."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class InputError(NodeError):
    """The input is not valid."""

    exit_code = 2
    http_status = 400


class InvalidCid(InputError):
    """Not a valid CID."""


class UnknownProfile(InputError):
    """Unknown CID profile."""


class CodecError(InputError):
    """The bytes are not valid in their format."""


class DagPbError(CodecError):
    """Invalid dag-pb block."""


class DagCborError(CodecError):
    """Invalid DAG-CBOR block."""


class UnixFsError(CodecError):
    """Invalid UnixFS node."""


class CarError(CodecError):
    """Invalid CAR file."""


class MetadataJsonError(CodecError):
    """JSON in image metadata is not valid strict JSON."""


class ImageUnreadable(CodecError):
    """The file is not a PNG, JPEG or WebP image whose metadata can be read."""


class BlockTooLarge(InputError):
    """Block exceeds the size limit."""


class TooLarge(InputError):
    """The request is larger than the limit."""

    http_status = 413


class UploadStalled(InputError):
    """The upload stopped sending data."""

    http_status = 408


class NotAcceptable(InputError):
    """The requested response format is not one this node can produce."""

    http_status = 406


class Unauthorized(NodeError):
    """A valid API token is required (create one with `artkeep token create`)."""

    exit_code = 2
    http_status = 401


class FormRefused(Unauthorized):
    """The form did not come from this node's own pages (missing or wrong CSRF token); reload and retry."""

    http_status = 403


class IntegrityError(NodeError):
    """Data does not match its content address."""

    exit_code = 3
    http_status = 502


class BlockMismatch(IntegrityError):
    """Block bytes do not hash to their CID."""


class SignatureInvalid(IntegrityError):
    """The record's signature does not verify."""


class FetchError(NodeError):
    """Could not fetch the data from its origins."""

    http_status = 502


class InvalidOrigin(FetchError):
    """Not an HTTP(S) gateway address (a multiaddr ending in /http or /https, or an http(s) URL)."""

    http_status = 400


class OriginRefused(FetchError):
    """The address is outside fetch.allow_networks; nothing was sent to it."""

    http_status = 403


class NotFound(NodeError):
    """Not found."""

    exit_code = 4
    http_status = 404


class BlockNotFound(NotFound):
    """Block not in the store."""


class PinNotFound(NotFound):
    """No such pin."""


class PlaceNotFound(NotFound):
    """No place has that name."""


class NotCached(NotFound):
    """Not held here, and the request asked for cached data only."""

    http_status = 412


class PathError(NodeError):
    """A local path cannot be read."""


class StoreError(NodeError):
    """The local store cannot do what was asked."""
