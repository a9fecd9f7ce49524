"""The daemon as a user runs it: `artkeep serve` in a subprocess, the CLI beside it, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ArtkeepCli, Served


class Daemon:
    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, bytes]:
        """Send sig, wait, close the pipes; (exit code, stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)


def start_daemon(artkeep: ArtkeepCli, *extra: str, env: dict[str, str] | None = None) -> Daemon:
    argv = artkeep.argv("serve", "--listen", "127.0.0.1:0", "--json", *extra)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**artkeep.env(), **(env or {})})
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        _, err = process.communicate(timeout=30)
        raise AssertionError(f"serve did not start: {err.decode()}")
    return Daemon(process, json.loads(line)["url"])


@pytest.fixture
def daemon(artkeep: ArtkeepCli) -> Iterator[Daemon]:
    running = start_daemon(artkeep)
    yield running
    running.stop(signal.SIGKILL)


def test_serve_prints_its_url_and_answers_health(daemon: Daemon) -> None:
    assert daemon.url.startswith("http://127.0.0.1:")
    status, body, _ = daemon.get("/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


def test_the_daemon_sees_a_pin_made_by_the_cli_at_once(daemon: Daemon, artkeep: ArtkeepCli,
                                                       tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"made while the daemon runs\n")
    before = json.loads(daemon.get("/healthz")[1])["pins"]
    pinned = artkeep("pin", tmp_path / "a.txt", "--json")
    assert pinned.returncode == 0, pinned
    assert json.loads(daemon.get("/healthz")[1])["pins"] == before + 1


def test_metrics_are_prometheus_text(daemon: Daemon) -> None:
    daemon.get("/healthz")
    status, body, headers = daemon.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "# TYPE artkeep_http_requests_total counter" in text
    assert 'artkeep_http_requests_total{api="/healthz",method="GET",status="200"}' in text
    assert "artkeep_pins 0" in text


def test_sigterm_stops_cleanly(daemon: Daemon) -> None:
    assert daemon.stop()[0] == 0


def test_listen_from_the_environment(artkeep: ArtkeepCli) -> None:
    argv = artkeep.argv("serve", "--json")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**artkeep.env(), "ARTKEEP_LISTEN": "127.0.0.1:0"})
    assert process.stdout is not None
    daemon = Daemon(process, json.loads(process.stdout.readline())["url"])
    assert daemon.url.startswith("http://127.0.0.1:") and not daemon.url.endswith(":8737")
    assert daemon.stop()[0] == 0


def test_a_bad_listen_address_is_a_usage_error(artkeep: ArtkeepCli) -> None:
    run = artkeep("serve", "--listen", "nonsense")
    assert run.returncode == 2
    assert "HOST:PORT" in run.err


def test_json_logs_are_one_object_per_line(artkeep: ArtkeepCli) -> None:
    daemon = start_daemon(artkeep, env={"ARTKEEP_LOG_FORMAT": "json", "ARTKEEP_LOG_LEVEL": "info"})
    daemon.get("/healthz")
    _, err = daemon.stop()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    requests = [line for line in lines if line["logger"] == "artkeep.http"]
    assert requests and requests[0]["path"] == "/healthz" and requests[0]["status"] == 200


def test_token_create_list_revoke(artkeep: ArtkeepCli) -> None:
    created = artkeep("token", "create", "--name", "laptop", "--json")
    assert created.returncode == 0, created
    record = created.records()[0]
    assert record["name"] == "laptop" and str(record["token"]).startswith("artkeep_")
    listed = artkeep("token", "list", "--json").records()
    assert [t["id"] for t in listed] == [record["id"]]
    assert "token" not in listed[0]  # the secret is never shown again
    assert artkeep("token", "revoke", str(record["id"])).returncode == 0
    assert artkeep("token", "list", "--json").records() == []
    assert artkeep("token", "revoke", str(record["id"])).returncode == 4


def test_secrets_are_not_stored(artkeep: ArtkeepCli) -> None:
    secret = str(artkeep("token", "create", "--json").records()[0]["token"])
    index = (artkeep.home / "index.sqlite").read_bytes()
    wal = artkeep.home / "index.sqlite-wal"
    stored = index + (wal.read_bytes() if wal.exists() else b"")
    assert secret.encode() not in stored


async def test_metrics_and_health_in_process(served: Served) -> None:
    async with served.session.get(served.url + "/healthz") as response:
        assert response.status == 200
    async with served.session.get(served.url + "/nope") as response:
        assert response.status == 404


async def test_busy_server_answers_429(serve_app) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from aiohttp import web

    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    # A route only this test has: it holds its slot until released.
    served: Served = await serve_app((web.get("/test-slow", slow),), serve_max_concurrent_requests=1)
    first = asyncio.create_task(served.session.get(served.url + "/test-slow"))
    await asyncio.sleep(0.2)
    async with served.session.get(served.url + "/") as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
    async with served.session.get(served.url + "/healthz") as response:
        assert response.status == 200  # health is never refused
    release.set()
    async with await first as response:
        assert response.status == 200


def test_the_systemd_unit_is_valid(tmp_path: Path) -> None:
    import shutil
    import sys

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (Path(__file__).resolve().parents[1] / "scripts" / "artkeep.service").read_text()
    artkeep_script = Path(sys.executable).with_name("artkeep")
    local = tmp_path / "artkeep.service"
    local.write_text(unit.replace("/opt/artkeep/.venv/bin/artkeep", str(artkeep_script)))
    checked = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True,
                             check=False)
    problems = [line for line in (checked.stdout + checked.stderr).splitlines()
                if "artkeep.service" in line and "User=" not in line and "Documentation" not in line]
    assert not problems, problems
