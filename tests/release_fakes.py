"""In-memory stand-ins for the release tool: a stack, a cluster of loopback servers, a clock.

The fake stack keeps config as the engine hands it over and a state of resource URNs learnt by
running the real program under the offline engine. Its `up` behaves as Pulumi's does: a targeted
update changes only targeted objects that are already in the state; a whole update brings the
state to what the program registers.

The fake cluster runs real HTTP servers on 127.0.0.1 for the blue and green pods and for the
API endpoint, which routes as the real path does: the IAM-signed `/preview/...` route to the
preview color, everything else by the listener's weights to the stable (active Service) or
canary (preview Service) target group. Each color's size follows its HPA's bounds, and the
cluster records how many ready pods the active Service had after every step of every update.
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pulumi.automation._cmd import CommandResult
from pulumi.automation.errors import CommandError, ConcurrentUpdateError

from infra.api_gateway import PREVIEW_ROUTE_PREFIX
from infra.mock_engine import run_program
from infra.release import CanaryWindow
from infra.settings import ServiceSettings, parse_settings
from tests.conftest import PROJECT, ROOT, stack_config

Handler = Callable[[str, Mapping[str, str]], tuple[int, dict[str, str], bytes]]
COLORS = ("blue", "green")
LOCKED = "error: [409] Conflict: Another update is currently in progress."
ROLLOUT_TIMEOUT = (
    "error: 1 error occurred:\n\t* the Kubernetes API server reported that "
    '"analytics-api/analytics-api-green" failed to fully initialize or become live: '
    "Timeout occurred"
)


@dataclass
class Pod:
    """One color's pods, as the outside sees them."""

    color: str
    version: str = "unset"
    ready: bool = True
    status_ok: bool = True


def _serve(handler: Handler) -> ThreadingHTTPServer:
    class RequestHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = handler(self.path, dict(self.headers.items()))
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
    server.daemon_threads = True
    # A short poll interval keeps shutdown() quick at teardown.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


class FakeCluster:
    """Blue and green pods, their HPAs, the two Services and the load balancer, on loopback."""

    def __init__(self) -> None:
        self.pods = {color: Pod(color) for color in COLORS}
        self.size = dict.fromkeys(COLORS, 0)
        self.bounds = dict.fromkeys(COLORS, (1, 1))
        # What each HPA would choose from the load it last saw (the idle color's: 1).
        self.recommendation = {"blue": 1, "green": 1}
        self.active_color = "blue"
        self.weight = 0  # the listener's weight of the canary target group
        # Versions whose pods never get ready, or answer 500 on /api/v1/status.
        self.unready_versions: set[str] = set()
        self.broken_versions: set[str] = set()
        # When set, the active Service keeps its old selector whatever the config says.
        self.stale_selector = False
        # Ready pods behind the active Service after every step of every update.
        self.active_capacity: list[int] = []
        # (listener weight, sizes) after every update.
        self.history: list[tuple[int, dict[str, int]]] = []
        self.requests = dict.fromkeys(COLORS, 0)
        self._counter = itertools.count()
        self._servers = {color: _serve(self._pod_handler(color)) for color in COLORS}
        self._servers["api"] = _serve(self._api)
        self._servers["preview"] = _serve(self._forward(lambda: self.preview_color))

    @property
    def preview_color(self) -> str:
        return "green" if self.active_color == "blue" else "blue"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._servers[name].server_address[1]}"

    def ready(self, color: str) -> int:
        return self.size[color] if self.pods[color].ready else 0

    def set_demand(self, pods: int) -> None:
        """Load on the active color that its HPA answers with `pods` pods."""
        self.recommendation[self.active_color] = pods
        self.size[self.active_color] = _clamp(pods, self.bounds[self.active_color])

    def apply(self, settings: ServiceSettings, parts: set[str]) -> None:
        """What an update does to the cluster: `parts` names the kinds of object it changed.

        Each HPA sizes its Deployment from its own recommendation, clamped to its bounds. A
        recommendation follows load only after the next metrics scrape: right after traffic
        moves, a color's HPA still holds what it computed before (the idle color's: 1 pod).
        """
        if "deployments" in parts:
            for color, pod in self.pods.items():
                pod.version = getattr(settings, color).version
                pod.ready = pod.version not in self.unready_versions
                pod.status_ok = pod.version not in self.broken_versions
        new_active = self.active_color
        if "services" in parts and not self.stale_selector:
            new_active = settings.active_color
        new_bounds = dict(self.bounds)
        if "hpas" in parts:
            new_bounds = {color: _hpa_bounds(settings, color) for color in COLORS}
        # Pulumi updates independent objects in parallel: check both orders.
        for hpas_first in (True, False):
            sizes = dict(self.size)
            active = self.active_color
            for step in ("hpas", "services") if hpas_first else ("services", "hpas"):
                if step == "hpas":
                    sizes = {c: _clamp(self.recommendation[c], new_bounds[c]) for c in COLORS}
                else:
                    active = new_active
                self.active_capacity.append(sizes[active] if self.pods[active].ready else 0)
        self.bounds = new_bounds
        self.size = {c: _clamp(self.recommendation[c], new_bounds[c]) for c in COLORS}
        if new_active != self.active_color:
            # The next scrape: the load moved with the traffic.
            demand = self.recommendation[self.active_color]
            self.recommendation = {new_active: demand, self.active_color: 1}
        self.active_color = new_active
        if "listener" in parts:
            self.weight = settings.canary.weight
        self.history.append((self.weight, dict(self.size)))

    def close(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def _pod_handler(self, color: str) -> Handler:
        def handle(path: str, _headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
            pod = self.pods[color]
            headers = {"X-Color": pod.color, "X-Version": pod.version}
            if self.size[color] == 0:
                return 503, {}, b"no endpoints"
            if path == "/health/ready":
                return (200 if pod.ready else 503), headers, b"{}"
            if path == "/api/v1/status":
                return (200 if pod.status_ok else 500), headers, b"{}"
            return 404, headers, b"{}"

        return handle

    def _api(self, path: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        """HTTP API -> listener: the preview route needs a SigV4 signature (AWS_IAM)."""
        if path.startswith(f"{PREVIEW_ROUTE_PREFIX}/"):
            if not any(k.lower() == "authorization" for k in headers):
                return 403, {}, b'{"message":"Forbidden"}'
            return self._get(self.preview_color, path[len(PREVIEW_ROUTE_PREFIX) :])
        color = self.preview_color if next(self._counter) % 100 < self.weight else self.active_color
        self.requests[color] += 1
        return self._get(color, path)

    def _get(self, color: str, path: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(self.url(color) + path, timeout=5) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def _forward(self, color: Callable[[], str]) -> Handler:
        return lambda path, _headers: self._get(color(), path)


def _clamp(size: int, bounds: tuple[int, int]) -> int:
    return min(max(size, bounds[0]), bounds[1])


def _hpa_bounds(settings: ServiceSettings, color: str) -> tuple[int, int]:
    """The HPA bounds the program gives a color (checked against it in test_release)."""
    floor = getattr(settings, color).min_replicas or 0
    if color == settings.active_color:
        low = max(settings.replicas, floor)
        return low, max(settings.max_replicas, low)
    low = max(settings.preview_replica_count, floor)
    return low, low


_PROGRAM_URNS: dict[str, list[str]] = {}


def program_urns(stack: str) -> list[str]:
    """The URNs the program registers for a repository stack (run once per test process)."""
    if stack not in _PROGRAM_URNS:
        config, secret_keys = stack_config(stack)
        run = run_program(ROOT / "infra", PROJECT, stack, config, secret_keys)
        _PROGRAM_URNS[stack] = [r.urn for r in run.resources]
    return _PROGRAM_URNS[stack]


PART_OF_TYPE = {
    "kubernetes:apps/v1:Deployment": "deployments",
    "kubernetes:core/v1:Service": "services",
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": "hpas",
    "aws:lb/listener:Listener": "listener",
}


@dataclass
class FakeStack:
    """StackBackend in memory, for one repository stack."""

    name: str
    cluster: FakeCluster
    project: str = PROJECT
    # Fails an `up` while this returns True for the service settings about to be applied.
    fail_up_when: Callable[[ServiceSettings], bool] = lambda _service: False
    # Objects (by URN suffix) the stack's state does not have yet, e.g. from an older program.
    not_yet_created: Sequence[str] = ()
    # This many `up`s find the stack locked by another update.
    locked_ups: int = 0
    ups: list[list[str] | None] = field(default_factory=list)
    _config: dict[str, str] = field(default_factory=dict)
    _secret_keys: list[str] = field(default_factory=list)
    state: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._config, self._secret_keys = stack_config(self.name)
        planned = program_urns(self.name)
        self.state = {u for u in planned if not u.endswith(tuple(self.not_yet_created))}
        settings = self.settings()
        self.cluster.recommendation[settings.active_color] = settings.replicas
        self.cluster.apply(settings, set(PART_OF_TYPE.values()))
        self.cluster.active_capacity.clear()

    def service(self, index: int = 0) -> dict[str, Any]:
        return json.loads(self._config[f"{PROJECT}:services"])[index]

    def settings(self, index: int = 0) -> ServiceSettings:
        parsed = parse_settings(PROJECT, self.name, self._config, self._secret_keys)
        return parsed.services[index]

    def config(self) -> tuple[dict[str, str], list[str]]:
        return dict(self._config), list(self._secret_keys)

    def _edit(self, path: str, change: Callable[[dict[str, Any], str], None]) -> None:
        head, _, rest = path.partition("[")
        index_text, _, dotted = rest.partition("].")
        items = json.loads(self._config[f"{PROJECT}:{head}"])
        target = items[int(index_text)]
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        change(target, leaf)
        self._config[f"{PROJECT}:{head}"] = json.dumps(items)

    def set_path(self, path: str, value: str | int) -> None:
        self._edit(path, lambda target, leaf: target.__setitem__(leaf, value))

    def remove_path(self, path: str) -> None:
        self._edit(path, lambda target, leaf: target.pop(leaf))

    def up(self, targets: Sequence[str] | None = None) -> None:
        self.ups.append(list(targets) if targets else None)
        if self.locked_ups > 0:
            self.locked_ups -= 1
            raise ConcurrentUpdateError(CommandResult("", LOCKED, 255))
        settings = self.settings()
        if self.fail_up_when(settings):
            raise CommandError(CommandResult("", "error: the API server refused the change", 1))
        if targets is None:
            self.state = set(program_urns(self.name))
            parts = set(PART_OF_TYPE.values())
        else:
            # Pulumi skips creating what it is not asked to: only objects in the state change.
            changed = [urn for urn in targets if urn in self.state]
            parts = {PART_OF_TYPE[t] for urn in changed if (t := _type(urn)) in PART_OF_TYPE}
        self.cluster.apply(settings, parts)
        if "deployments" in parts and not all(p.ready for p in self.cluster.pods.values()):
            # pulumi-kubernetes waits for a Deployment's rollout and fails the update.
            raise CommandError(CommandResult("", ROLLOUT_TIMEOUT, 255))

    def resource_urns(self) -> list[str]:
        return sorted(self.state)

    def ready_replicas(self, urn: str) -> int:
        assert urn in self.state, urn
        return self.cluster.ready(urn.rsplit("-", 1)[1])

    def outputs(self) -> dict[str, Any]:
        return {
            "apiEndpoint": self.cluster.url("api"),
            "region": "eu-west-1",
            "loadBalancerArnSuffix": "app/lb/1",
            "targetGroupArnSuffixes": {"analytics-api": "targetgroup/stable/1"},
            "previewTargetGroupArnSuffixes": {"analytics-api": "targetgroup/preview/2"},
        }  # fmt: skip


def _type(urn: str) -> str:
    return urn.split("::")[-2].split("$")[-1]


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


HEALTHY = CanaryWindow(requests=1200, errors_5xx=None, p95_response_seconds=0.12)
BREACH = CanaryWindow(requests=1200, errors_5xx=240, p95_response_seconds=0.15)
SLOW = CanaryWindow(requests=1200, errors_5xx=1, p95_response_seconds=2.5)
NO_DATA = CanaryWindow(requests=None, errors_5xx=None, p95_response_seconds=None)


class FakeMetrics:
    """The canary target group's windows, in order; the last one repeats. Each read is
    recorded with the clock's time, to check the tool reads only finished windows."""

    def __init__(self, *windows: CanaryWindow, error: bool = False,
                 clock: FakeClock | None = None) -> None:  # fmt: skip
        self.windows = list(windows) or [HEALTHY]
        self.error = error
        self.clock = clock
        self.reads: list[tuple[datetime, datetime, datetime | None]] = []

    @property
    def samples(self) -> int:
        return len(self.reads)

    def sample(self, start: datetime, end: datetime) -> CanaryWindow:
        self.reads.append((start, end, self.clock.now() if self.clock else None))
        if self.error:
            raise ConnectionError("CloudWatch unreachable")
        return self.windows[min(self.samples, len(self.windows)) - 1]


def fake_signer(url: str) -> dict[str, str]:
    """Stands in for SigV4: the fake API only checks that a signature is there."""
    return {"Authorization": f"AWS4-HMAC-SHA256 Credential=test, for {url}"}
