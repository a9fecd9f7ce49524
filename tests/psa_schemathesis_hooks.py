"""Schemathesis hooks for tests/test_psa_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

Each hook bridges one precise gap between the OpenAPI document and what it cannot express:

- Pin.cid is typed as any string, but a pinning service must answer 400 to a string that is no CID
  (tests/test_psa.py checks that). Schema-valid bodies whose cid is a string but no CID get a real
  CID derived from it, so positive_data_acceptance still runs on every other field. The value stays
  a string, so a negative case stays negative and a positive one positive.
- aiohttp refuses request lines over 8190 bytes at the protocol level, before any application code,
  with a text/plain 400. A `meta` filter that would build such a URL (the coverage phase sends one
  with 1000 extra keys) is cut to its first ten items at every level; the case is revalidated,
  so its mode stays true.
- Request ids are opaque and the server makes them, so a drawn one is always 404. Two drawn ids in
  three are swapped for a request created just before (POST /pins with the test's token), so GET,
  replace and DELETE of /pins/{requestid} meet real resources too.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from typing import Any

import schemathesis

from node import cid as cids
from node.errors import InputError

MAX_QUERY = 7000  # bytes of query string; the request line limit is 8190


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    if "requestid" in (case.path_parameters or {}) and _hash(str(case.path_parameters["requestid"])) % 3:
        case.path_parameters["requestid"] = _fresh_request()
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("cid"), str):
        body["cid"] = _as_cid(body["cid"])
    meta = (case.query or {}).get("meta")
    if isinstance(meta, str) and len(meta) > MAX_QUERY:
        case.query["meta"] = json.dumps(_shrink(json.loads(meta)))
    elif isinstance(meta, dict | list) and len(json.dumps(meta)) > MAX_QUERY:
        case.query["meta"] = _shrink(meta)


def _shrink(value: Any) -> Any:
    """The same shape, each container cut to its first ten items: small enough for a URL."""
    if isinstance(value, dict):
        return {key: _shrink(item) for key, item in list(value.items())[:10]}
    if isinstance(value, list):
        return [_shrink(item) for item in value[:10]]
    return value[:200] if isinstance(value, str) else value

def _hash(text: str) -> int:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[0]


def _fresh_request() -> str:
    request = urllib.request.Request(
        os.environ["PSA_URL"] + "/pins", data=json.dumps({"cid": "bafkqaaa", "name": "fresh"}).encode(),
        headers={"Authorization": f"Bearer {os.environ['PSA_TOKEN']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["requestid"])


def _as_cid(text: str) -> str:
    try:
        return str(cids.parse(text))
    except InputError:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        # Half become the empty identity CID, complete here at once (pinned before POST returns);
        # the rest name blocks nobody has, so the worker tries the request's origins and fails.
        return "bafkqaaa" if digest[0] % 2 else str(cids.sha256_cid(digest, cids.RAW))
