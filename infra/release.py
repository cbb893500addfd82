"""Release tool: blue/green deploy, promote, rollback and canary for one service of a stack.

    python -m infra.release status   --stack NAME [--service NAME]
    python -m infra.release check    --stack NAME [--active-url URL]
    python -m infra.release deploy   --stack NAME --image REF [--version V] [--preview-url URL]
    python -m infra.release promote  --stack NAME [--active-url URL]
    python -m infra.release rollback --stack NAME [--active-url URL]
    python -m infra.release canary   --stack NAME [--active-url URL]

The real traffic path (infra/api_gateway.py): HTTP API -> VPC link -> internal ALB listener,
which forwards with weights to a stable target group (the active Service) and a canary target
group (the preview Service): `100 - canary.weight` / `canary.weight`. Requests to the API's
IAM-signed `/preview/...` route reach the preview color whatever the weights; `deploy` checks the
new color there before any user request reaches it.

Every step edits the stack's config and runs `pulumi up`, targeted at the objects the step
changes (the listener, the Services, the HPAs, and the pod-delete chaos template, which selects
the active color) unless one of them is not in the stack yet: then
the update is whole, so a first canary or promote creates what it needs. Every step is logged
with a timestamp; `--dry-run` reads Pulumi.NAME.yaml and prints the plan, without a Pulumi CLI.

Vocabulary from Argo Rollouts: the active Service serves traffic, the preview Service reaches the
idle color; `promote` scales the idle color to the active one's size, switches the Services, and
scales the old color down after `release.scaleDownDelaySeconds`; `abort` (on any failure) puts
the weights back to 100/0 and the previous color back at once.

Exit codes: 0 success; 1 failed and rolled back; 2 bad input or nothing to do (nothing changed);
3 failed and the rollback failed too: the stack needs an operator.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import shutil
import subprocess  # runs the operator's own smoke command, never a shell  # nosec B404
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from pulumi.automation.errors import CommandError, ConcurrentUpdateError

from infra.api_gateway import PREVIEW_ROUTE_PREFIX, canary_weights
from infra.blue_green import COLORS, HPA_SCALE_DOWN_STABILIZATION_SECONDS
from infra.settings import (
    IMAGE_REFERENCE,
    InvalidConfig,
    ReleaseSettings,
    ServiceSettings,
    StackSettings,
    parse_settings,
)
from infra.stackfiles import StackFileError, available_stacks, load_stack_config

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_ROLLED_BACK, EXIT_BAD_INPUT, EXIT_ROLLBACK_FAILED, EXIT_PULUMI = 0, 1, 2, 3, 4
POLL_SECONDS = 5
LOCK_RETRY_SECONDS = 30
SERVICE_TYPE = "kubernetes:core/v1:Service"
HPA_TYPE = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
DEPLOYMENT_TYPE = "kubernetes:apps/v1:Deployment"
LISTENER_TYPE = "aws:lb/listener:Listener"
SERVICE_COMPONENT = "delivery:BlueGreenService"
API_COMPONENT = "api:ApiGateway"
API_COMPONENT_NAME = "api"  # infra/platform.py
TEMPLATE_TYPE = "aws:fis/experimentTemplate:ExperimentTemplate"
CHAOS_COMPONENT = "chaos:ChaosExperiments"
CHAOS_COMPONENT_NAME = "chaos"  # infra/platform.py
POD_DELETE_TEMPLATE = f"{CHAOS_COMPONENT_NAME}-pod-delete"  # infra/chaos.py


class BadInput(Exception):
    """Bad input, or nothing to do: exit 2 with a one-line message, nothing changed."""


class ReleaseFailed(Exception):
    """A gate failed; the caller rolls back and exits 1."""


class StackBackend(Protocol):
    """The part of a Pulumi stack the release tool uses."""

    project: str
    name: str

    def config(self) -> tuple[dict[str, str], list[str]]:
        """Config as the engine hands it to a program (`ns:key` -> text) and the secret keys."""
        ...

    def set_path(self, path: str, value: str | int) -> None:
        """Set one project config value by path, e.g. `services[0].activeColor`, keeping its
        type: a string stays a string even when it is all digits."""
        ...

    def remove_path(self, path: str) -> None:
        """Remove one project config value by path (a tier default applies again)."""
        ...

    def up(self, targets: Sequence[str] | None = None) -> None: ...

    def resource_urns(self) -> list[str]: ...

    def ready_replicas(self, urn: str) -> int:
        """Ready pods of the Deployment with this URN, as the cluster reports them now."""
        ...

    def outputs(self) -> dict[str, Any]: ...


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class CanaryWindow:
    """One analysis window of the canary target group; None where CloudWatch has no data."""

    requests: float | None
    errors_5xx: float | None
    p95_response_seconds: float | None
    # Connections the load balancer could not make to the canary's targets: it answers those
    # with its own 502/503/504, which HTTPCode_Target_5XX_Count never counts.
    connection_errors: float | None = None


class Metrics(Protocol):
    def sample(self, start: datetime, end: datetime) -> CanaryWindow: ...


Outcome = Literal["pass", "fail", "inconclusive"]


def judge(window: CanaryWindow, release: ReleaseSettings) -> tuple[Outcome, str]:
    """Argo-style analysis of one window: no data (or too little) is inconclusive, never a pass.

    The load balancer reports a metric only when it has a value (Elastic Load Balancing,
    "CloudWatch metrics for your Application Load Balancer"): a missing error count beside
    requests means no errors, missing requests mean no evidence at all.
    """
    requests = window.requests or 0.0
    if requests < release.min_requests_per_window:
        return "inconclusive", (
            f"{requests:.0f} requests to the canary (at least {release.min_requests_per_window} "
            "needed to judge)"
        )
    errors = (window.errors_5xx or 0.0) + (window.connection_errors or 0.0)
    rate = errors / requests
    if rate > release.max_error_rate:
        return "fail", (
            f"error rate {rate:.4f} over {release.max_error_rate} ({errors:.0f} 5xx and "
            f"connection errors in {requests:.0f} requests)"
        )
    if window.p95_response_seconds is None:
        return "inconclusive", "no TargetResponseTime for the canary"
    p95_ms = window.p95_response_seconds * 1000
    if p95_ms > release.max_p95_latency_ms:
        return "fail", f"p95 response time {p95_ms:.0f} ms over {release.max_p95_latency_ms} ms"
    return "pass", f"error rate {rate:.4f}, p95 {p95_ms:.0f} ms over {requests:.0f} requests"


class PulumiStack:
    """StackBackend on the Automation API, over the project in this repository."""

    def __init__(self, stack: str, work_dir: Path = PROJECT_DIR) -> None:
        if shutil.which("pulumi") is None:
            raise BadInput("no Pulumi CLI on PATH: install it, or use --dry-run")
        from pulumi import automation as auto

        self._auto = auto
        self._work_dir = work_dir
        self._stack = auto.select_stack(stack_name=stack, work_dir=str(work_dir))
        self.project = self._stack.workspace.project_settings().name
        self.name = stack

    def config(self) -> tuple[dict[str, str], list[str]]:
        values = self._stack.get_all_config()
        return (
            {k: v.value for k, v in values.items() if not v.secret},
            [k for k, v in values.items() if v.secret],
        )

    def set_path(self, path: str, value: str | int) -> None:
        # The Automation API's set_config has no --type; without it the CLI stores a path value
        # that looks like an integer as a number (`pulumi config set --path`).
        workspace = self._stack.workspace
        workspace.pulumi_command.run(
            config_set_args(self.project, self.name, path, value),
            workspace.work_dir,
            workspace.env_vars,
        )

    def remove_path(self, path: str) -> None:
        self._stack.remove_config(f"{self.project}:{path}", path=True)

    def up(self, targets: Sequence[str] | None = None) -> None:
        self._stack.up(
            target=list(targets) if targets else None,
            # The same rules as every preview and deploy: a release cannot bypass them.
            policy_packs=[str(self._work_dir / "policy")],
            on_output=print,
            color="never",
            show_secrets=False,
        )

    def _deployment(self) -> Mapping[str, Any]:
        return self._stack.export_stack().deployment or {}

    def resource_urns(self) -> list[str]:
        return [str(r["urn"]) for r in self._deployment().get("resources", [])]

    def ready_replicas(self, urn: str) -> int:
        # A targeted refresh reads the live Deployment through the stack's own provider and
        # credentials; its status lands in the state.
        self._stack.refresh(target=[urn], color="never")
        for resource in self._deployment().get("resources", []):
            if resource.get("urn") == urn:
                status = (resource.get("outputs") or {}).get("status") or {}
                return int(status.get("readyReplicas") or 0)
        raise ReleaseFailed(f"{urn} is not in the stack")

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self._stack.outputs().items() if not v.secret}


class CloudWatchMetrics:
    """The canary target group's own metrics (AWS/ApplicationELB, TargetGroup + LoadBalancer)."""

    def __init__(self, load_balancer: str, target_group: str, region: str) -> None:
        import boto3  # only the canary needs CloudWatch

        self._cloudwatch = boto3.client("cloudwatch", region_name=region)
        self._dimensions = [
            {"Name": "TargetGroup", "Value": target_group},
            {"Name": "LoadBalancer", "Value": load_balancer},
        ]

    def sample(self, start: datetime, end: datetime) -> CanaryWindow:
        """Sums (and the p95) over [start, end), whole minutes the caller waited out."""
        period = int((end - start).total_seconds())
        queries = {
            "requests": ("RequestCount", "Sum"),
            "errors": ("HTTPCode_Target_5XX_Count", "Sum"),
            "connections": ("TargetConnectionErrorCount", "Sum"),
            "p95": ("TargetResponseTime", "p95"),
        }
        response = self._cloudwatch.get_metric_data(
            StartTime=start,
            EndTime=end,
            MetricDataQueries=[
                {
                    "Id": query_id,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/ApplicationELB",
                            "MetricName": metric,
                            "Dimensions": self._dimensions,
                        },
                        "Period": period,
                        "Stat": stat,
                    },
                    "ReturnData": True,
                }
                for query_id, (metric, stat) in queries.items()
            ],
        )
        values: dict[str, list[float]] = {
            r["Id"]: list(r.get("Values") or []) for r in response["MetricDataResults"]
        }

        def total(query_id: str) -> float | None:
            return sum(values[query_id]) if values.get(query_id) else None

        p95 = values.get("p95") or []
        return CanaryWindow(
            requests=total("requests"),
            errors_5xx=total("errors"),
            p95_response_seconds=max(p95) if p95 else None,
            connection_errors=total("connections"),
        )


@dataclass(frozen=True)
class Probe:
    status: int
    color: str | None
    version: str | None


Http = Callable[[str, Mapping[str, str]], Probe]
Signer = Callable[[str], dict[str, str]]


def probe(url: str, headers: Mapping[str, str] | None = None) -> Probe:
    if not url.startswith(("http://", "https://")):
        return Probe(0, None, None)
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - http(s) URLs only  # nosec B310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http(s) URLs the operator gave  # nosec B310
            return Probe(response.status, response.headers.get("X-Color"),
                         response.headers.get("X-Version"))  # fmt: skip
    except urllib.error.HTTPError as error:
        return Probe(error.code, error.headers.get("X-Color"), error.headers.get("X-Version"))
    except (urllib.error.URLError, OSError):
        return Probe(0, None, None)


def sigv4_signer(region: str) -> Signer:
    """Signs GET requests for the API's IAM-authorised preview route (service execute-api)."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise BadInput("no AWS credentials to sign the preview route's requests with")

    def sign(url: str) -> dict[str, str]:
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
        return dict(request.headers.items())

    return sign


class Release:
    def __init__(
        self,
        backend: StackBackend,
        service: str | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        log: Callable[[str], None] = print,
        http: Http = probe,
        sign: Signer | None = None,
        run_command: Callable[[list[str], dict[str, str]], int] | None = None,
    ) -> None:
        self.backend = backend
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self._log = log
        self.http = http
        self.sign = sign
        self.run_command = run_command or _run_command
        self.settings = self._read_settings()
        names = [s.name for s in self.settings.services]
        self.service_name = service or self.settings.api.service
        if self.service_name not in names:
            raise BadInput(f"unknown service {self.service_name}; services: {', '.join(names)}")
        self.index = names.index(self.service_name)
        if f"{backend.project}:services" not in backend.config()[0]:
            raise BadInput("the stack file lists no services: add the service entry to release")

    # -- state ---------------------------------------------------------------------------
    def _read_settings(self, changes: Mapping[str, str] | None = None) -> StackSettings:
        """The stack's settings, optionally with this service's entry changed (path -> value)."""
        values, secret_keys = self.backend.config()
        if changes:
            key = f"{self.backend.project}:services"
            services = json.loads(values[key])
            for path, value in changes.items():
                _set_in(services[self.index], path, value)
            values = {**values, key: json.dumps(services)}
        try:
            return parse_settings(self.backend.project, self.backend.name, values, secret_keys)
        except InvalidConfig as exc:
            raise BadInput("; ".join(exc.lines)) from None

    @property
    def service(self) -> ServiceSettings:
        return self.settings.services[self.index]

    def _entry(self) -> dict[str, Any]:
        """This service's entry as the stack file has it (no tier defaults merged in)."""
        values, _ = self.backend.config()
        entry: dict[str, Any] = json.loads(values[f"{self.backend.project}:services"])[self.index]
        return entry

    def log(self, message: str) -> None:
        stamp = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        self._log(f"[{stamp}] {self.backend.name}/{self.service_name}: {message}")

    def _edit(self, path: str, value: Any) -> None:
        """Set (or with None, remove) one key of this service's entry."""
        full = f"services[{self.index}].{path}"
        if value is None:
            if _get_in(self._entry(), path) is not None:
                self.backend.remove_path(full)
        else:
            self.backend.set_path(full, value)
        self.settings = self._read_settings()

    def _restore(self, before: Mapping[str, Any], paths: Sequence[str]) -> None:
        """Put keys back exactly as the stack file had them (absent stays absent)."""
        for path in paths:
            self._edit(path, _get_in(before, path))

    def _urn(self, component: str, name: str, type_: str, child: str) -> str | None:
        """A child's URN, derived from its component's URN in the state (None: no component)."""
        suffix = f"{self.backend.project}:{component}::{name}"
        parent = next((u for u in self.backend.resource_urns() if u.endswith(suffix)), None)
        if parent is None:
            return None
        chain = parent.rsplit("::", 1)[0].split("::", 2)[2]
        return f"urn:pulumi:{self.backend.name}::{self.backend.project}::{chain}${type_}::{child}"

    def _deployment_urn(self, color: str) -> str:
        urn = self._urn(SERVICE_COMPONENT, self.service_name, DEPLOYMENT_TYPE,
                        f"{self.service_name}-{color}")  # fmt: skip
        if urn is None or urn not in self.backend.resource_urns():
            raise ReleaseFailed(f"the {color} Deployment is not in the stack; run a full deploy")
        return urn

    def _switch_urns(self) -> list[str | None]:
        name = self.service_name
        urns = [self._urn(SERVICE_COMPONENT, name, SERVICE_TYPE, f"{name}-{role}")
                for role in ("active", "preview")]  # fmt: skip
        urns += [self._urn(SERVICE_COMPONENT, name, HPA_TYPE, f"{name}-{color}")
                 for color in ("blue", "green")]  # fmt: skip
        if name == self.settings.api.service:
            urns.append(self._urn(API_COMPONENT, API_COMPONENT_NAME, LISTENER_TYPE,
                                  API_COMPONENT_NAME))  # fmt: skip
            # The pod-delete experiment selects the active color: it moves with the Services.
            # Only where the stack has that template: a stack without one (chaos off, no EKS
            # cluster, too few pods) gets it, with the then active color, from a whole update.
            chaos = self._urn(CHAOS_COMPONENT, CHAOS_COMPONENT_NAME, TEMPLATE_TYPE,
                              POD_DELETE_TEMPLATE)  # fmt: skip
            if chaos is not None and chaos in self.backend.resource_urns():
                urns.append(chaos)
        return urns

    def _apply(self, what: str) -> None:
        """`pulumi up` of the objects a switch changes, or of everything when one is new.

        A targeted update skips creating anything it does not target, so an object this step
        needs that is not in the stack yet (a first canary, a new HPA) means a whole update.
        """
        urns = self._switch_urns()
        state = set(self.backend.resource_urns())
        missing = [u for u in urns if u is None or u not in state]
        if missing:
            self.log(f"{what}: {len(missing)} of its objects are new to the stack: whole update")
            self._up(None)
            return
        self.log(f"{what}: targeted update of {len(urns)} objects")
        self._up([u for u in urns if u is not None])

    def _up(self, targets: Sequence[str] | None) -> None:
        """`up`, waiting (within a bound) while another update holds the stack's lock."""
        limit = self.settings.release.concurrent_update_wait_seconds
        deadline = self.clock.now().timestamp() + limit
        while True:
            try:
                self.backend.up(targets)
                return
            except ConcurrentUpdateError:
                if self.clock.now().timestamp() >= deadline:
                    raise
                self.log(f"another update holds the stack; retrying in {LOCK_RETRY_SECONDS}s")
                self.clock.sleep(LOCK_RETRY_SECONDS)

    # -- commands ------------------------------------------------------------------------
    def status(self) -> int:
        service = self.service
        stable, canary = canary_weights(service.canary.weight)
        previous = service.previous_color or "none"
        self.log(
            f"active {service.active_color} ({getattr(service, service.active_color).version}), "
            f"preview {service.preview_color} "
            f"({getattr(service, service.preview_color).version}), "
            f"weights {stable}/{canary}, rollback to {previous}"
        )
        return EXIT_OK

    def deploy(self, image: str, version: str | None, preview_url: str) -> int:
        idle = self.service.preview_color
        version = version or version_from_image(image)
        self._read_settings({f"{idle}.image": image, f"{idle}.version": version})  # validates
        before = self._entry()
        paths = [f"{idle}.image", f"{idle}.version", "previousColor"]
        self.log(f"deploying {image} as {version} to the idle color {idle}")
        try:
            self._edit(f"{idle}.image", image)
            self._edit(f"{idle}.version", version)
            # The idle color no longer holds the previous release: nothing to roll back to.
            self._edit("previousColor", None)
            self._up(None)
            self._wait_ready(preview_url, idle, version)
            self._smoke(preview_url, idle, version)
        except ConcurrentUpdateError as busy:  # nothing was applied: only the file goes back
            self.log(f"FAILED: {_one_line(busy)}; the stack stayed locked, nothing was changed")
            self._restore(before, paths)
            return EXIT_PULUMI
        except Exception as failure:  # a gate, or Pulumi itself: restore what was edited
            self.log(f"FAILED: {_one_line(failure)}; restoring {idle} as it was")
            return self._recover(lambda: (self._restore(before, paths), self._up(None)))
        self.log(f"{idle} runs {version} and passed its checks through the real path; "
                 "promote when ready")  # fmt: skip
        return EXIT_OK

    def promote(self, active_url: str, baseline: Mapping[str, Any] | None = None) -> int:
        return self._switch(self.service.preview_color, active_url, False, baseline)

    def rollback(self, active_url: str) -> int:
        service = self.service
        if service.previous_color is None:
            active = service.active_color
            idle = service.preview_color
            raise BadInput(
                f"nothing to roll back to: {active} ({getattr(service, active).version}) is "
                f"active and {idle} ({getattr(service, idle).version}) has not served since it "
                "was deployed; promote it, or deploy a known-good image"
            )
        return self._switch(service.previous_color, active_url, True)

    def check(self, active_url: str) -> int:
        """The post-deploy smoke test: the active endpoint is ready and serves the active color."""
        color = self.service.active_color
        version = getattr(self.service, color).version
        try:
            self._verify_active(active_url, color, version)
        except ReleaseFailed as failure:
            self.log(f"FAILED: {failure}")
            return EXIT_ROLLED_BACK
        return EXIT_OK

    def canary(self, active_url: str) -> int:
        release = self.settings.release
        if self.metrics is None:
            raise BadInput("canary needs metrics (CloudWatch); none configured")
        preview = self.service.preview_color
        before = self._entry()
        try:
            active_size = self.backend.ready_replicas(
                self._deployment_urn(self.service.active_color)
            )
            for step in release.canary_steps[:-1]:
                # Argo's setCanaryScale matchTrafficWeight: pods in step with the traffic share.
                self._hold({preview: math.ceil(active_size * step / 100)}, wait_for=preview)
                self._edit("canary.weight", step)
                self._apply(f"canary weight {step}% to {preview}")
                self._analyse(step, self.metrics)
        except Exception as failure:  # any breach or error aborts the canary
            self.log(f"ABORT: {_one_line(failure)}; weights back to 100/0")
            return self._recover(lambda: self._abort(before))
        self.log("canary passed every step: promoting")
        return self.promote(active_url, baseline=before)

    # -- steps ---------------------------------------------------------------------------
    def _analyse(self, step: int, metrics: Metrics) -> None:
        """Judge whole-minute windows that start after the weight moved, each read once
        CloudWatch has it; `inconclusiveLimit` inconclusive windows at one weight abort."""
        release = self.settings.release
        period = timedelta(seconds=max(60, release.canary_pause_seconds // 60 * 60))
        start = _next_minute(self.clock.now())
        for inconclusive in range(1, release.inconclusive_limit + 1):
            end = start + period
            self._sleep_until(end + timedelta(seconds=release.metrics_delay_seconds))
            outcome, why = judge(metrics.sample(start, end), release)
            self.log(f"analysis at {step}%, {start:%H:%M}-{end:%H:%M}: {outcome}: {why}")
            if outcome == "fail":
                raise ReleaseFailed(f"{why} at {step}%")
            if outcome == "pass":
                return
            if inconclusive == release.inconclusive_limit:
                raise ReleaseFailed(
                    f"{inconclusive} inconclusive windows at {step}% (limit "
                    f"{release.inconclusive_limit}): no data is not a pass"
                )
            start = end

    def _abort(self, before: Mapping[str, Any]) -> None:
        """Weights to 100/0 first, in one update; only then the floors go."""
        self._edit("canary.weight", _rest_weight(self._entry()))
        self._apply("abort")
        self._restore(before, [f"{c}.minReplicas" for c in COLORS])
        self._apply("idle color back to its size")

    def _switch(
        self,
        color: str,
        active_url: str,
        rollback: bool,
        baseline: Mapping[str, Any] | None = None,
    ) -> int:
        """Scale the incoming color to the outgoing one's size, switch Services and weights
        (100/0), verify; then the outgoing color scales down after the delay, and the incoming
        one's floor goes once its HPA has seen real load. `baseline`: the entry to return to."""
        service = self.service
        previous = service.active_color
        version = getattr(service, color).version
        verb = "rolling back to" if rollback else "promoting"
        self.log(f"{verb} {color} ({version}); {previous} stays warm for "
                 f"{self.settings.release.scale_down_delay_seconds}s")  # fmt: skip
        before = dict(baseline or self._entry())
        try:
            size = self.backend.ready_replicas(self._deployment_urn(previous))
            target = max(size, service.replicas)
            self._hold({previous: max(size, 1), color: target}, wait_for=color)
            # Set again below on success; meanwhile it may not name the color becoming active.
            self._edit("previousColor", None)
            self._edit("activeColor", color)
            self._edit("canary.weight", _rest_weight(self._entry()))
            self._apply(f"switching the active Service to {color}")
            self._verify_active(active_url, color, version)
        except Exception as failure:  # any failure puts the previous color back
            self.log(f"FAILED: {_one_line(failure)}; switching back to {previous}")
            return self._recover(lambda: self._switch_back(before))
        self._edit("previousColor", None if rollback else previous)
        self._release_floors(before, previous, color)
        self.log(f"{color} is active")
        return EXIT_OK

    def _switch_back(self, before: Mapping[str, Any]) -> None:
        self._restore(before, ["activeColor", "previousColor"])
        self._edit("canary.weight", _rest_weight(self._entry()))
        self._apply("switching back, weights 100/0")
        self._restore(before, [f"{c}.minReplicas" for c in COLORS])
        self._apply("floors removed")

    def _hold(self, floors: Mapping[str, int], wait_for: str) -> None:
        """Floors under the colors' HPAs; then wait for `wait_for`'s pods to be ready."""
        changed = {c: n for c, n in floors.items() if n > self._floor(c)}
        if not changed:
            return
        for color, pods in changed.items():
            self._edit(f"{color}.minReplicas", pods)
        self._apply("floors " + ", ".join(f"{c} >= {n}" for c, n in changed.items()))
        if wait_for not in changed:
            return
        pods, urn = changed[wait_for], self._deployment_urn(wait_for)
        deadline = self.clock.now() + timedelta(seconds=self.settings.release.ready_timeout_seconds)
        while (ready := self.backend.ready_replicas(urn)) < pods:
            if self.clock.now() >= deadline:
                raise ReleaseFailed(f"{wait_for} has {ready} of {pods} pods ready in time")
            self.clock.sleep(POLL_SECONDS)
        self.log(f"{wait_for} has {ready} pods ready")

    def _floor(self, color: str) -> int:
        """What the color's HPA will not go below now."""
        service = self.service
        settings = getattr(service, color)
        base = service.replicas if color == service.active_color else service.preview_replica_count
        return max(base, settings.min_replicas or 0)

    def _release_floors(self, before: Mapping[str, Any], outgoing: str, incoming: str) -> None:
        """The outgoing color keeps its size for the delay, so its connections drain; the
        incoming one keeps its floor until its HPA's scale-down window holds real load."""
        release = self.settings.release
        try:
            self.clock.sleep(release.scale_down_delay_seconds)
            self._restore(before, [f"{outgoing}.minReplicas"])
            self._apply(f"{outgoing} down to {self.service.preview_replica_count} pods")
            self.clock.sleep(max(0, HPA_SCALE_DOWN_STABILIZATION_SECONDS
                                 - release.scale_down_delay_seconds))  # fmt: skip
            self._restore(before, [f"{incoming}.minReplicas"])
            self._apply(f"{incoming}'s HPA on its own")
        except Exception as exc:  # the release stands; the next `pulumi up` completes it
            self.log(f"WARNING: removing the floors failed ({_one_line(exc)}); they stay in "
                     "the stack file until the next release")  # fmt: skip

    def _recover(self, rollback: Callable[[], object]) -> int:
        try:
            rollback()
        except Exception as exc:  # reported as its own exit code
            self.log(f"ROLLBACK FAILED: {_one_line(exc)}; the stack needs an operator")
            return EXIT_ROLLBACK_FAILED
        return EXIT_ROLLED_BACK

    def _sleep_until(self, moment: datetime) -> None:
        seconds = (moment - self.clock.now()).total_seconds()
        if seconds > 0:
            self.clock.sleep(seconds)

    # -- gates ---------------------------------------------------------------------------
    def _get(self, url: str) -> Probe:
        return self.http(url, self.sign(url) if self.sign else {})

    def _wait_ready(self, url: str, color: str, version: str) -> None:
        timeout = self.settings.release.ready_timeout_seconds
        deadline = self.clock.now() + timedelta(seconds=timeout)
        while True:
            answer = self._get(f"{url}/health/ready")
            if answer.status == 200 and (answer.color, answer.version) == (color, version):
                self.log(f"{color} is ready ({version})")
                return
            if self.clock.now() >= deadline:
                raise ReleaseFailed(
                    f"{color} not ready after {timeout}s (last: HTTP {answer.status}, "
                    f"{answer.color} {answer.version})"
                )
            self.clock.sleep(POLL_SECONDS)

    def _smoke(self, url: str, color: str, version: str) -> None:
        command = self.settings.release.smoke_command
        if command:
            self.log(f"smoke test: {command}")
            if self.run_command(shlex.split(command), {"PREVIEW_URL": url}) != 0:
                raise ReleaseFailed("smoke command failed")
            return
        for path in ("/health/ready", "/api/v1/status"):
            answer = self._get(f"{url}{path}")
            if answer.status != 200 or (answer.color, answer.version) != (color, version):
                raise ReleaseFailed(
                    f"smoke test {path}: HTTP {answer.status} from {answer.color} {answer.version}"
                )
        self.log("smoke test passed")

    def _verify_active(self, url: str, color: str, version: str) -> None:
        for attempt in range(1, 4):
            answer = self.http(f"{url}/api/v1/status", {})
            ready = self.http(f"{url}/health/ready", {})
            if answer.status == 200 and ready.status == 200 and (
                answer.color, answer.version) == (color, version):  # fmt: skip
                self.log(f"verified: active endpoint serves {color} {version}")
                return
            self.log(f"verification attempt {attempt}: {answer.color} {answer.version}, "
                     f"ready HTTP {ready.status}")  # fmt: skip
            self.clock.sleep(POLL_SECONDS)
        raise ReleaseFailed(f"active endpoint does not serve {color} {version}")


def _next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


def _one_line(error: BaseException) -> str:
    """A Pulumi CLI failure as its error text on one line, anything else as its message."""
    if not isinstance(error, CommandError):
        return str(error)
    text = str(error).split(" stderr: ", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if "error" in line.lower()), 0)
    return "pulumi failed: " + " ".join(lines[first:])[:400]


def _rest_weight(entry: Mapping[str, Any]) -> int | None:
    """Weight 0 (all traffic to stable): written as 0 where the stack file sets a weight."""
    return 0 if _get_in(entry, "canary.weight") is not None else None


def _get_in(entry: Mapping[str, Any], path: str) -> Any:
    node: Any = entry
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _set_in(entry: dict[str, Any], path: str, value: str) -> None:
    *parents, leaf = path.split(".")
    node = entry
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def config_set_args(project: str, stack: str, path: str, value: str | int) -> list[str]:
    """`pulumi config set --path` with the value's own type (`--type string|int`)."""
    kind = "int" if isinstance(value, int) else "string"
    return ["config", "set", "--path", "--type", kind, f"{project}:{path}", "--plaintext",
            "--stack", stack, "--non-interactive", "--", str(value)]  # fmt: skip


def version_from_image(image: str) -> str:
    """A label-safe version: the tag, or (digest only) the digest's first 12 hex digits."""
    name, _, digest = image.partition("@sha256:")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    return tag or "sha256-" + digest[:12]


def _run_command(argv: list[str], env: dict[str, str]) -> int:
    import os

    return subprocess.run(argv, env={**os.environ, **env}, check=False).returncode  # noqa: S603 - argv, no shell  # nosec B603


def dry_run(command: str, stack: str, service: str | None, image: str | None,
            version: str | None, project_dir: Path) -> int:  # fmt: skip
    """Print what `command` would do, from the stack file alone."""
    loaded = load_stack_config(project_dir, stack)
    settings = parse_settings(loaded.project, stack, loaded.config, loaded.secret_keys)
    name = service or settings.api.service
    selected = next((s for s in settings.services if s.name == name), None)
    if selected is None:
        raise BadInput(f"unknown service {name}")
    active, idle = selected.active_color, selected.preview_color
    release = settings.release
    switch = [f"scale {idle} to the live size of {active} (at least {selected.replicas}), "
              "wait for its pods",
              f"set services.{name}.activeColor = {idle}, canary weight 0",
              "targeted pulumi up (listener weights 100/0, Services, HPAs, and the pod-delete "
              "experiment where the stack has one)",
              f"verify X-Color={idle} through the active endpoint",
              f"after {release.scale_down_delay_seconds}s: {active} back to "
              f"{selected.preview_replica_count} pods",
              f"on failure: switch back to {active}, weights 100/0, exit 1"]  # fmt: skip
    version = version or (version_from_image(image) if image else None)
    plans = {
        "status": [f"active {active} ({getattr(selected, active).version}), "
                   f"preview {idle} ({getattr(selected, idle).version}), "
                   f"weights {'/'.join(map(str, canary_weights(selected.canary.weight)))}"],
        "deploy": [f"set services.{name}.{idle}.image = {image}",
                   f"set services.{name}.{idle}.version = {version}", "pulumi up",
                   f"wait until {idle} is ready through the API's {PREVIEW_ROUTE_PREFIX} route",
                   "smoke test", "on failure: restore the idle color as it was, pulumi up, exit 1"],
        "promote": switch,
        "rollback": ([f"return to {selected.previous_color}", *switch[1:]]
                     if selected.previous_color else
                     ["refused: no previous release to return to (exit 2)"]),
        "check": [f"GET /health/ready and /api/v1/status through the active endpoint: "
                  f"{active} {getattr(selected, active).version}, up to 3 tries"],
        "canary": [f"weights {list(release.canary_steps[:-1])} to {idle}, "
                   f"{release.canary_pause_seconds}s windows, pods scaled with the weight",
                   f"gate per window on the canary target group: 5xx share <= "
                   f"{release.max_error_rate}, p95 <= {release.max_p95_latency_ms} ms, "
                   f"at least {release.min_requests_per_window} requests",
                   f"{release.inconclusive_limit} inconclusive windows (no data) abort",
                   "on breach or error: weights 100/0 at once, exit 1; after the last: promote"],
    }  # fmt: skip
    print(f"dry run: {command} on {stack}/{name} (nothing is changed)")
    for step in plans[command]:
        print(f"  - {step}")
    return EXIT_OK


def _canary_metrics(release: Release) -> CloudWatchMetrics:
    outputs = release.backend.outputs()
    suffixes = outputs.get("previewTargetGroupArnSuffixes") or {}
    canary_group = suffixes.get(release.service_name)
    if not canary_group or not outputs.get("loadBalancerArnSuffix"):
        raise BadInput(
            f"the stack exports no canary target group for {release.service_name}: "
            "run a full `pulumi up` first"
        )
    return CloudWatchMetrics(
        str(outputs["loadBalancerArnSuffix"]), str(canary_group), str(outputs["region"])
    )


def main(argv: Sequence[str] | None = None, backend: StackBackend | None = None,
         project_dir: Path = PROJECT_DIR, **release_options: Any) -> int:  # fmt: skip
    parser = argparse.ArgumentParser(prog="python -m infra.release", description=__doc__)
    parser.add_argument(
        "command", choices=["status", "check", "deploy", "promote", "rollback", "canary"]
    )
    parser.add_argument("--stack", required=True)
    parser.add_argument("--service", help="a services entry (default: the API's service)")
    parser.add_argument("--image", help="deploy: the image reference to put on the idle color")
    parser.add_argument("--version", dest="app_version", help="deploy: version label")
    parser.add_argument(
        "--preview-url",
        help=f"deploy: base URL reaching the preview color (default: the API's "
        f"{PREVIEW_ROUTE_PREFIX} route, SigV4-signed)",
    )
    parser.add_argument("--active-url", help="base URL reaching the active Service")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy" and not re.fullmatch(IMAGE_REFERENCE, args.image or ""):
            raise BadInput(f"--image: not an image reference: {args.image!r}")
        if args.dry_run:
            return dry_run(args.command, args.stack, args.service, args.image,
                           args.app_version, project_dir)  # fmt: skip
        if backend is None and args.stack not in available_stacks(project_dir):
            raise BadInput(f"unknown stack {args.stack}")
        release = Release(backend or PulumiStack(args.stack, project_dir), args.service,
                          **release_options)  # fmt: skip
        return _run(release, args)
    except (BadInput, StackFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InvalidConfig as exc:
        print("error: " + "; ".join(exc.lines), file=sys.stderr)
        return EXIT_BAD_INPUT
    except CommandError as exc:  # before anything was changed: login, stack, lock, CLI
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_PULUMI


def _run(release: Release, args: argparse.Namespace) -> int:
    if args.command == "status":
        return release.status()
    outputs = release.backend.outputs()
    active_url = (args.active_url or str(outputs.get("apiEndpoint", ""))).rstrip("/")
    if args.command == "deploy":
        preview_url = args.preview_url
        if not preview_url:
            if not outputs.get("apiEndpoint"):
                raise BadInput("deploy needs --preview-url, or a stack that exports apiEndpoint")
            preview_url = f"{outputs['apiEndpoint']}{PREVIEW_ROUTE_PREFIX}"
            if release.sign is None:
                release.sign = sigv4_signer(str(outputs["region"]))
        return release.deploy(args.image, args.app_version, preview_url.rstrip("/"))
    if not active_url:
        raise BadInput(f"{args.command} needs --active-url")
    if args.command == "check":
        return release.check(active_url)
    if args.command == "promote":
        return release.promote(active_url)
    if args.command == "rollback":
        return release.rollback(active_url)
    if release.metrics is None:
        release.metrics = _canary_metrics(release)
    return release.canary(active_url)


if __name__ == "__main__":
    sys.exit(main())
