"""Ed25519 signatures over canonical DAG-CBOR bytes, and the node's libp2p-style peer ID.

Pure: keys are bytes in, signatures and booleans out (PyNaCl computes, it
does no I/O). The key file itself is node.identity's business.
"""

from __future__ import annotations

import functools

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from node.cid import base58btc
from node.errors import SignatureInvalid

ALGORITHM = "ed25519"
SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def new_seed() -> bytes:
    """A fresh private key seed (from the OS's random source, through libsodium)."""
    return bytes(SigningKey.generate())


def public_key(seed: bytes) -> bytes:
    return bytes(_signing_key(seed).verify_key)


def sign(seed: bytes, message: bytes) -> bytes:
    return _signing_key(seed).sign(message).signature


@functools.lru_cache(maxsize=4)
def _signing_key(seed: bytes) -> SigningKey:
    # Deriving the key pair from the seed costs more than a signature; a node signs with one key.
    return SigningKey(seed)


def verify(public: bytes, message: bytes, signature: bytes) -> None:
    """SignatureInvalid unless signature is public's signature of message."""
    if len(public) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise SignatureInvalid("malformed Ed25519 key or signature")
    try:
        VerifyKey(public).verify(message, signature)
    except (BadSignatureError, CryptoError):
        raise SignatureInvalid("the signature does not match the record and key") from None


def peer_id(public: bytes) -> str:
    """The libp2p peer ID of an Ed25519 key (base58btc identity multihash, '12D3KooW...')."""
    # protobuf PublicKey { Type: Ed25519 (1), Data: 32 bytes }, wrapped in an identity multihash.
    key_proto = b"\x08\x01\x12\x20" + public
    return base58btc(b"\x00" + bytes([len(key_proto)]) + key_proto)
