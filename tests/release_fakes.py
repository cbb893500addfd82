"""In-memory stand-ins for the release tool: a stack, a cluster of loopback servers, a clock.

The fake stack keeps config as the engine hands it over and learns its resource URNs by running
the real program under the offline engine, so targeted updates are checked against real URNs.
The fake cluster runs real HTTP servers on 127.0.0.1 for the blue and green pods and for the
active and preview Services, which forward to the color the stack's config selects.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from infra.mock_engine import run_program
from infra.release import MetricSample
from tests.conftest import PROJECT, ROOT, stack_config


@dataclass
class Pod:
    """One color's pods, as the outside sees them."""

    color: str
    version: str = "unset"
    ready: bool = True
    status_ok: bool = True


def _serve(handler: Callable[[str], tuple[int, dict[str, str], bytes]]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = handler(self.path)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # A short poll interval keeps shutdown() quick at teardown.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


class FakeCluster:
    """Blue and green pods plus active and preview Services, all on loopback."""

    def __init__(self) -> None:
        self.pods = {color: Pod(color) for color in ("blue", "green")}
        self.active_color = "blue"
        # Versions whose pods never get ready, or answer 500 on /api/v1/status.
        self.unready_versions: set[str] = set()
        self.broken_versions: set[str] = set()
        # When set, the active Service keeps its old selector whatever the config says.
        self.stale_selector = False
        self._servers = {color: _serve(self._pod_handler(color)) for color in self.pods}
        self._servers["active"] = _serve(self._forward(lambda: self.active_color))
        self._servers["preview"] = _serve(
            self._forward(lambda: "green" if self.active_color == "blue" else "blue")
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._servers[name].server_address[1]}"

    def apply(self, service: dict[str, Any]) -> None:
        """What `pulumi up` does to the cluster: roll out versions, move selectors."""
        for color, pod in self.pods.items():
            pod.version = service[color]["version"]
            pod.ready = pod.version not in self.unready_versions
            pod.status_ok = pod.version not in self.broken_versions
        if not self.stale_selector:
            self.active_color = service.get("activeColor", "blue")

    def close(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def _pod_handler(self, color: str) -> Callable[[str], tuple[int, dict[str, str], bytes]]:
        def handle(path: str) -> tuple[int, dict[str, str], bytes]:
            pod = self.pods[color]
            headers = {"X-Color": pod.color, "X-Version": pod.version}
            if path == "/health/ready":
                return (200 if pod.ready else 503), headers, b"{}"
            if path == "/api/v1/status":
                return (200 if pod.status_ok else 500), headers, b"{}"
            return 404, headers, b"{}"

        return handle

    def _forward(
        self, color: Callable[[], str]
    ) -> Callable[[str], tuple[int, dict[str, str], bytes]]:
        def handle(path: str) -> tuple[int, dict[str, str], bytes]:
            try:
                with urllib.request.urlopen(self.url(color()) + path, timeout=5) as response:  # noqa: S310
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as error:
                return error.code, dict(error.headers), error.read()

        return handle


@dataclass
class FakeStack:
    """StackBackend in memory, for one repository stack."""

    name: str
    cluster: FakeCluster
    project: str = PROJECT
    # Fails an `up` while this returns True for the config about to be applied.
    fail_up_when: Callable[[dict[str, Any]], bool] = lambda _service: False
    ups: list[Sequence[str] | None] = field(default_factory=list)
    _config: dict[str, str] = field(default_factory=dict)
    _secret_keys: list[str] = field(default_factory=list)
    _urns: list[str] | None = None

    def __post_init__(self) -> None:
        self._config, self._secret_keys = stack_config(self.name)
        self.cluster.apply(self.service())

    def service(self, index: int = 0) -> dict[str, Any]:
        return json.loads(self._config[f"{PROJECT}:services"])[index]

    def config(self) -> tuple[dict[str, str], list[str]]:
        return dict(self._config), list(self._secret_keys)

    def set_path(self, path: str, value: str) -> None:
        head, _, rest = path.partition("[")
        index_text, _, dotted = rest.partition("].")
        items = json.loads(self._config[f"{PROJECT}:{head}"])
        target = items[int(index_text)]
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = _typed(value)
        self._config[f"{PROJECT}:{head}"] = json.dumps(items)

    def up(self, targets: Sequence[str] | None = None) -> None:
        self.ups.append(list(targets) if targets else None)
        service = self.service()
        if self.fail_up_when(service):
            raise RuntimeError("update failed: the API server refused the change")
        self.cluster.apply(service)

    def resource_urns(self) -> list[str]:
        if self._urns is None:
            run = run_program(ROOT / "infra", PROJECT, self.name, self._config, self._secret_keys)
            self._urns = [r.urn for r in run.resources]
        return self._urns

    def outputs(self) -> dict[str, Any]:
        return {"apiEndpoint": self.cluster.url("active"), "apiId": "fakeapi",
                "apiStageName": "$default", "region": "eu-west-1"}  # fmt: skip


def _typed(value: str) -> Any:
    if value in ("true", "false"):
        return value == "true"
    if re.fullmatch(r"\d+", value):
        return int(value)
    return value


class FakeClock:
    """Time that moves only when the tool sleeps."""

    def __init__(self) -> None:
        self.current = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.current += timedelta(seconds=seconds)


class FakeMetrics:
    """Healthy samples, except a breach from step `breach_at` (1-based) on."""

    def __init__(self, breach_at: int | None = None, error: bool = False) -> None:
        self.breach_at = breach_at
        self.error = error
        self.samples = 0

    def sample(self, window_seconds: int) -> MetricSample:
        self.samples += 1
        if self.error:
            raise ConnectionError("CloudWatch unreachable")
        if self.breach_at is not None and self.samples >= self.breach_at:
            return MetricSample(error_rate=0.2, p95_latency_ms=150)
        return MetricSample(error_rate=0.001, p95_latency_ms=120)
