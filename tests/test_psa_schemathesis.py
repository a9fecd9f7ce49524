"""Schemathesis against the live server: the Pinning Service API spec, every check, no failure.

The server runs in this test's event loop on 127.0.0.1; the schemathesis CLI runs as a subprocess
against it with the test's token. Fetches are limited to 127.0.0.0/8 and names resolve through a
table holding only localhost, so no origin schemathesis invents can send a packet off loopback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from node import fetch
from tests.conftest import SHARED, Served
from tests.origins import FixedResolver

SPEC = SHARED / "spec" / "ipfs-pinning-service.yaml"
ROOT = Path(__file__).resolve().parents[1]
MAX_EXAMPLES = 30


async def test_the_pinning_service_api_conforms_to_its_spec(serve_app, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    resolver = FixedResolver({"localhost": ["127.0.0.1"]})
    monkeypatch.setattr(fetch, "system_resolver", lambda: resolver)
    served: Served = await serve_app(fetch_timeout=2)
    command = [str(Path(sys.executable).with_name("schemathesis")), "run",
               str(SPEC), "--url", served.url + "/psa", "--header", f"Authorization: Bearer {served.token}",
               "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", "1",
               "--generation-database", "none", "--workers", "1", "--no-color",
               "--report", "junit", "--report-dir", str(tmp_path)]
    environment = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.psa_schemathesis_hooks",
                   "PYTHONPATH": str(ROOT), "PSA_URL": served.url + "/psa", "PSA_TOKEN": served.token}
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
                                                   env=environment)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=80)
    text = output.decode(errors="replace")
    assert process.returncode == 0, "\n".join(line[:400] for line in text.splitlines())
    assert "No issues found" in text, "\n".join(line[:400] for line in text.splitlines())
    assert set(resolver.asked) <= {"localhost"}
