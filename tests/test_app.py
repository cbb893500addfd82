"""The reference analytics API, on loopback, against a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgserver
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "app"))
from analytics_api import App, Config, make_server


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real PostgreSQL server, started by the test itself (pgserver ships the binaries)."""
    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    try:
        socket_dir = re.search(r"host=([^&]+)", server.get_uri())
        assert socket_dir is not None
        yield {"DB_HOST": socket_dir.group(1), "DB_NAME": "postgres", "DB_USER": "postgres",
               "DB_SSLMODE": "disable"}  # fmt: skip
    finally:
        server.cleanup()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _serve(env: dict[str, str]) -> tuple[str, App, Any]:
    app = App(Config.from_env({"APP_COLOR": "green", "APP_VERSION": "1.5.0",
                               "APP_ENVIRONMENT": "test", **env}))  # fmt: skip
    server = make_server(app, host="127.0.0.1", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", app, server


def test_every_endpoint_answers_with_color_and_version_headers() -> None:
    base, _, server = _serve({})
    try:
        expected = {"/health/live": 200, "/health/ready": 200, "/api/v1/status": 200,
                    "/metrics": 200, "/nope": 404}  # fmt: skip
        for path, status in expected.items():
            code, headers, _ = _get(base + path)
            assert code == status, path
            assert headers["X-Color"] == "green"
            assert headers["X-Version"] == "1.5.0"
        _, _, body = _get(base + "/api/v1/status")
        assert json.loads(body) == {"version": "1.5.0", "color": "green", "environment": "test"}
        _, headers, metrics = _get(base + "/metrics")
        assert headers["Content-Type"].startswith("text/plain")
        assert b'http_requests_total{path="/api/v1/status",status="200"}' in metrics
    finally:
        server.shutdown()


def test_a_failing_handler_answers_500_and_logs_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, app, server = _serve({})
    try:

        def broken(path: str) -> tuple[int, str, bytes]:
            raise RuntimeError(path)

        assert _get(base + "/api/v1/status")[0] == 200
        monkeypatch.setattr(app, "handle", broken)
        code, headers, _ = _get(base + "/api/v1/status")
        assert code == 500
        assert headers["X-Color"] == "green"
    finally:
        server.shutdown()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    # The monitoring's metric filter counts exactly these: { $.level = "error" }
    assert [e.get("event") for e in errors] == ["unhandled", None]
    assert errors[1]["status"] == 500
    assert all(line["level"] == "info" for line in lines if line.get("status") == 200)


def test_a_draining_readiness_503_is_not_an_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, app, server = _serve({})
    try:
        app.draining.set()
        assert _get(base + "/health/ready")[0] == 503
    finally:
        server.shutdown()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["level"] for line in lines] == ["info"]


def test_readiness_checks_a_real_database(postgres: dict[str, str]) -> None:
    base, app, server = _serve(postgres)
    try:
        code, _, body = _get(base + "/health/ready")
        assert code == 200, body
        assert json.loads(body)["detail"] == "database reachable"
        assert app.database_ok() == (True, "database reachable")
    finally:
        server.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_readiness_fails_when_the_database_is_unreachable() -> None:
    base, _, server = _serve({"DB_HOST": "127.0.0.1", "DB_PORT": str(_free_port()),
                              "DB_SSLMODE": "disable", "DB_USER": "nobody"})  # fmt: skip
    try:
        code, _, body = _get(base + "/health/ready")
        assert code == 503
        assert json.loads(body)["status"] == "not ready"
        assert _get(base + "/health/live")[0] == 200
    finally:
        server.shutdown()


def test_sigterm_stops_readiness_then_drains_and_exits(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "DRAIN_SECONDS": "1.5", "APP_COLOR": "blue",
           "APP_VERSION": "2.0.0"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app" / "analytics_api.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["listening"] == port
        base = f"http://127.0.0.1:{port}"
        assert _get(base + "/health/ready")[0] == 200
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert _get(base + "/health/ready")[0] == 503  # out of rotation at once
        assert _get(base + "/api/v1/status")[0] == 200  # still serving while draining
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_dockerfile_is_slim_non_root_with_a_healthcheck_and_no_build_tools() -> None:
    lines = [line.strip() for line in (ROOT / "app" / "Dockerfile").read_text().splitlines()]
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    final = lines[stages[-1] :]
    assert all("-slim" in lines[i] for i in stages)
    user = next(line for line in final if line.startswith("USER "))
    uid = int(user.split()[1].split(":")[0])
    assert uid >= 10000
    assert any(line.startswith("HEALTHCHECK") for line in final)
    text = "\n".join(final)
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in text
