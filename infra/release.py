"""Release tool: blue/green deploy, promote, rollback and canary for one service of a stack.

    python -m infra.release status   --stack NAME [--service NAME]
    python -m infra.release deploy   --stack NAME --image REF [--version V] --preview-url URL
    python -m infra.release promote  --stack NAME [--active-url URL]
    python -m infra.release rollback --stack NAME
    python -m infra.release canary   --stack NAME --active-url URL

Built on Pulumi's Automation API behind `StackBackend`: select the stack, set config, `up`
(targeted where only the color switch changes). Every step is logged with a timestamp; `--dry-run`
reads Pulumi.NAME.yaml and prints the plan, without a Pulumi CLI. Exit codes: 0 success,
1 failed and rolled back, 2 bad input.

Vocabulary from Argo Rollouts: the active Service serves traffic, the preview Service reaches the
idle color; `promote` switches them, `abort` (on any failure) leaves or puts the previous color
back.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess  # runs the operator's own smoke command, never a shell  # nosec B404
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from infra.settings import (
    IMAGE_REFERENCE,
    InvalidConfig,
    ServiceSettings,
    StackSettings,
    parse_settings,
)
from infra.stackfiles import StackFileError, available_stacks, load_stack_config

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_ROLLED_BACK, EXIT_BAD_INPUT = 0, 1, 2
# Kubernetes objects a color switch touches: selectors, replicas, the HPA's target, the canary.
SWITCH_TYPES = (
    "kubernetes:core/v1:Service",
    "kubernetes:apps/v1:Deployment",
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
    "kubernetes:networking.k8s.io/v1:Ingress",
)


class BadInput(Exception):
    """Bad input: exit 2 with a one-line message."""


class ReleaseFailed(Exception):
    """A gate failed; the caller rolls back and exits 1."""


class StackBackend(Protocol):
    """The part of a Pulumi stack the release tool uses."""

    project: str
    name: str

    def config(self) -> tuple[dict[str, str], list[str]]:
        """Config as the engine hands it to a program (`ns:key` -> text) and the secret keys."""
        ...

    def set_path(self, path: str, value: str) -> None:
        """Set one project config value by path, e.g. `services[0].activeColor`."""
        ...

    def up(self, targets: Sequence[str] | None = None) -> None: ...

    def resource_urns(self) -> list[str]: ...

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
class MetricSample:
    error_rate: float
    p95_latency_ms: float


class Metrics(Protocol):
    def sample(self, window_seconds: int) -> MetricSample: ...


class PulumiStack:
    """StackBackend on the Automation API, over the project in this repository."""

    def __init__(self, stack: str, work_dir: Path = PROJECT_DIR) -> None:
        if shutil.which("pulumi") is None:
            raise BadInput("no Pulumi CLI on PATH: install it, or use --dry-run")
        from pulumi import automation as auto

        self._auto = auto
        self._stack = auto.select_stack(stack_name=stack, work_dir=str(work_dir))
        self.project = self._stack.workspace.project_settings().name
        self.name = stack

    def config(self) -> tuple[dict[str, str], list[str]]:
        values = self._stack.get_all_config()
        return (
            {k: v.value for k, v in values.items() if not v.secret},
            [k for k, v in values.items() if v.secret],
        )

    def set_path(self, path: str, value: str) -> None:
        self._stack.set_config(
            f"{self.project}:{path}", self._auto.ConfigValue(value=value), path=True
        )

    def up(self, targets: Sequence[str] | None = None) -> None:
        self._stack.up(
            target=list(targets) if targets else None,
            on_output=print,
            color="never",
            show_secrets=False,
        )

    def resource_urns(self) -> list[str]:
        deployment = self._stack.export_stack().deployment or {}
        return [str(r["urn"]) for r in deployment.get("resources", [])]

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self._stack.outputs().items() if not v.secret}


class CloudWatchMetrics:
    """The API's 5xx rate and p95 latency, from the HTTP API's CloudWatch metrics."""

    def __init__(self, api_id: str, stage: str, region: str) -> None:
        import boto3  # only the canary needs AWS access

        self._cloudwatch = boto3.client("cloudwatch", region_name=region)
        self._dimensions = [
            {"Name": "ApiId", "Value": api_id},
            {"Name": "Stage", "Value": stage},
        ]

    def sample(self, window_seconds: int) -> MetricSample:
        end = datetime.now(UTC)
        start = datetime.fromtimestamp(end.timestamp() - max(window_seconds, 60), UTC)
        queries = [
            ("errors", "5xx", "Average"),
            ("latency", "Latency", "p95"),
        ]
        response = self._cloudwatch.get_metric_data(
            StartTime=start,
            EndTime=end,
            MetricDataQueries=[
                {
                    "Id": query_id,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/ApiGateway",
                            "MetricName": metric,
                            "Dimensions": self._dimensions,
                        },
                        "Period": max(window_seconds, 60),
                        "Stat": stat,
                    },
                }
                for query_id, metric, stat in queries
            ],
        )
        values = {r["Id"]: (r["Values"] or [0.0])[0] for r in response["MetricDataResults"]}
        return MetricSample(error_rate=values["errors"], p95_latency_ms=values["latency"])


@dataclass(frozen=True)
class Probe:
    status: int
    color: str | None
    version: str | None


def probe(url: str) -> Probe:
    if not url.startswith(("http://", "https://")):
        return Probe(0, None, None)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http(s) URLs the operator gave  # nosec B310
            return Probe(response.status, response.headers.get("X-Color"),
                         response.headers.get("X-Version"))  # fmt: skip
    except urllib.error.HTTPError as error:
        return Probe(error.code, error.headers.get("X-Color"), error.headers.get("X-Version"))
    except (urllib.error.URLError, OSError):
        return Probe(0, None, None)


class Release:
    def __init__(
        self,
        backend: StackBackend,
        service: str | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        log: Callable[[str], None] = print,
        http: Callable[[str], Probe] = probe,
        run_command: Callable[[list[str], dict[str, str]], int] | None = None,
    ) -> None:
        self.backend = backend
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self._log = log
        self.http = http
        self.run_command = run_command or _run_command
        self.settings = self._read_settings()
        names = [s.name for s in self.settings.services]
        self.service_name = service or self.settings.api.service
        if self.service_name not in names:
            raise BadInput(f"unknown service {self.service_name}; services: {', '.join(names)}")
        self.index = names.index(self.service_name)

    # -- state ---------------------------------------------------------------------------
    def _read_settings(self) -> StackSettings:
        values, secret_keys = self.backend.config()
        try:
            return parse_settings(self.backend.project, self.backend.name, values, secret_keys)
        except InvalidConfig as exc:
            raise BadInput("; ".join(exc.lines)) from None

    @property
    def service(self) -> ServiceSettings:
        return self.settings.services[self.index]

    def log(self, message: str) -> None:
        stamp = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        self._log(f"[{stamp}] {self.backend.name}/{self.service_name}: {message}")

    def _set(self, key: str, value: str) -> None:
        self.backend.set_path(f"services[{self.index}].{key}", value)

    def _switch_targets(self) -> list[str]:
        marker = "delivery:BlueGreenService$"
        return [
            urn
            for urn in self.backend.resource_urns()
            if marker in urn
            and urn.split("::")[-2].split("$")[-1] in SWITCH_TYPES
            and urn.split("::")[-1].startswith(self.service_name)
        ]

    def _set_active(self, color: str) -> None:
        self._set("activeColor", color)
        targets = self._switch_targets()
        self.log(f"switching the active Service to {color} ({len(targets)} objects, targeted up)")
        self.backend.up(targets)
        self.settings = self._read_settings()

    # -- commands ------------------------------------------------------------------------
    def status(self) -> int:
        service = self.service
        self.log(
            f"active {service.active_color} ({getattr(service, service.active_color).version}), "
            f"preview {service.preview_color} "
            f"({getattr(service, service.preview_color).version}), "
            f"canary weight {service.canary.weight if service.canary.enabled else 0}"
        )
        return EXIT_OK

    def deploy(self, image: str, version: str | None, preview_url: str) -> int:
        idle = self.service.preview_color
        before = getattr(self.service, idle)
        version = version or version_from_image(image)
        self.log(f"deploying {image} as {version} to the idle color {idle}")
        self._set(f"{idle}.image", image)
        self._set(f"{idle}.version", version)
        scaled_up = self.service.preview_replica_count == 0
        if scaled_up:
            # An idle color with no pods cannot be checked; it keeps one pod from now on.
            self.log(f"{idle} runs no pods (previewReplicaCount 0): scaling it to 1")
            self._set("previewReplicaCount", "1")
        try:
            self.backend.up()
            self._wait_ready(preview_url, idle, version)
            self._smoke(preview_url, idle, version)
        except ReleaseFailed as failure:
            self.log(f"FAILED: {failure}; restoring {idle} to {before.version}")
            self._set(f"{idle}.version", before.version)
            if before.image:
                self._set(f"{idle}.image", before.image)
            if scaled_up:
                self._set("previewReplicaCount", "0")
            self.backend.up()
            return EXIT_ROLLED_BACK
        self.log(f"{idle} runs {version} and passed its checks; promote when ready")
        return EXIT_OK

    def promote(self, active_url: str) -> int:
        previous, new = self.service.active_color, self.service.preview_color
        version = getattr(self.service, new).version
        self.log(f"promoting {new} ({version}); {previous} stays warm for rollback")
        try:
            self._guarded_switch(new)
            self._verify_active(active_url, new, version)
        except ReleaseFailed as failure:
            self.log(f"FAILED: {failure}; rolling back to {previous}")
            self._guarded_switch(previous)
            return EXIT_ROLLED_BACK
        self.log(f"{new} is active")
        return EXIT_OK

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

    def rollback(self) -> int:
        previous = self.service.preview_color
        self.log(f"rolling back to {previous}")
        self._set_active(previous)
        self.log(f"{previous} is active")
        return EXIT_OK

    def canary(self, active_url: str) -> int:
        release = self.settings.release
        if self.metrics is None:
            raise BadInput("canary needs metrics (CloudWatch); none configured")
        preview = self.service.preview_color
        self._set("canary.enabled", "true")
        try:
            for step in release.canary_steps:
                if step == 100:
                    break
                self.log(f"canary weight {step}% to {preview}")
                self._set("canary.weight", str(step))
                self._up_switch_targets()
                self.clock.sleep(release.canary_pause_seconds)
                sample = self.metrics.sample(release.canary_pause_seconds)
                self.log(
                    f"error rate {sample.error_rate:.4f} (max {release.max_error_rate}), "
                    f"p95 {sample.p95_latency_ms:.0f} ms (max {release.max_p95_latency_ms})"
                )
                if sample.error_rate > release.max_error_rate:
                    raise ReleaseFailed(f"error rate {sample.error_rate:.4f} at {step}%")
                if sample.p95_latency_ms > release.max_p95_latency_ms:
                    raise ReleaseFailed(f"p95 latency {sample.p95_latency_ms:.0f} ms at {step}%")
        except Exception as failure:  # any breach or error aborts the canary
            self.log(f"ABORT: {failure}; canary weight back to 0")
            self._set("canary.weight", "0")
            self._up_switch_targets()
            return EXIT_ROLLED_BACK
        self.log("canary reached 100%: promoting")
        self._set("canary.weight", "0")
        return self.promote(active_url)

    # -- gates ---------------------------------------------------------------------------
    def _up_switch_targets(self) -> None:
        self.backend.up(self._switch_targets())

    def _guarded_switch(self, color: str) -> None:
        try:
            self._set_active(color)
        except ReleaseFailed:
            raise
        except Exception as exc:
            raise ReleaseFailed(f"switch to {color} failed: {exc}") from exc

    def _wait_ready(self, url: str, color: str, version: str) -> None:
        deadline = self.settings.release.ready_timeout_seconds
        waited = 0.0
        while True:
            answer = self.http(f"{url}/health/ready")
            if answer.status == 200 and (answer.color, answer.version) == (color, version):
                self.log(f"{color} is ready ({version})")
                return
            if waited >= deadline:
                raise ReleaseFailed(
                    f"{color} not ready after {deadline}s (last: HTTP {answer.status}, "
                    f"{answer.color} {answer.version})"
                )
            self.clock.sleep(5)
            waited += 5

    def _smoke(self, url: str, color: str, version: str) -> None:
        command = self.settings.release.smoke_command
        if command:
            self.log(f"smoke test: {command}")
            if self.run_command(shlex.split(command), {"PREVIEW_URL": url}) != 0:
                raise ReleaseFailed("smoke command failed")
            return
        for path in ("/health/ready", "/api/v1/status"):
            answer = self.http(f"{url}{path}")
            if answer.status != 200 or (answer.color, answer.version) != (color, version):
                raise ReleaseFailed(
                    f"smoke test {path}: HTTP {answer.status} from {answer.color} {answer.version}"
                )
        self.log("smoke test passed")

    def _verify_active(self, url: str, color: str, version: str) -> None:
        for attempt in range(1, 4):
            answer = self.http(f"{url}/api/v1/status")
            ready = self.http(f"{url}/health/ready")
            if answer.status == 200 and ready.status == 200 and (
                answer.color, answer.version) == (color, version):  # fmt: skip
                self.log(f"verified: active endpoint serves {color} {version}")
                return
            self.log(f"verification attempt {attempt}: {answer.color} {answer.version}, "
                     f"ready HTTP {ready.status}")  # fmt: skip
            self.clock.sleep(5)
        raise ReleaseFailed(f"active endpoint does not serve {color} {version}")


def version_from_image(image: str) -> str:
    """A label-safe version: the tag, or the digest's first 12 hex digits."""
    if "@sha256:" in image:
        return "sha256-" + image.split("@sha256:")[1][:12]
    return image.rsplit("/", 1)[-1].partition(":")[2]


def _run_command(argv: list[str], env: dict[str, str]) -> int:
    import os

    return subprocess.run(argv, env={**os.environ, **env}, check=False).returncode  # noqa: S603 - argv, no shell  # nosec B603


def dry_run(command: str, stack: str, service: str | None, image: str | None,
            project_dir: Path) -> int:  # fmt: skip
    """Print what `command` would do, from the stack file alone."""
    loaded = load_stack_config(project_dir, stack)
    settings = parse_settings(loaded.project, stack, loaded.config, loaded.secret_keys)
    name = service or settings.api.service
    selected = next((s for s in settings.services if s.name == name), None)
    if selected is None:
        raise BadInput(f"unknown service {name}")
    active, idle = selected.active_color, selected.preview_color
    plans = {
        "status": [f"active {active} ({getattr(selected, active).version}), "
                   f"preview {idle} ({getattr(selected, idle).version})"],
        "deploy": [f"set services.{name}.{idle}.image = {image}", "pulumi up",
                   f"wait until {idle} is ready through the preview Service", "smoke test",
                   "on failure: restore the previous image, pulumi up, exit 1"],
        "promote": [f"set services.{name}.activeColor = {idle}",
                    "targeted pulumi up (Services, Deployments, HPA, Ingresses)",
                    f"verify X-Color={idle} through the active endpoint",
                    f"on failure: switch back to {active}, exit 1"],
        "rollback": [f"set services.{name}.activeColor = {idle}", "targeted pulumi up"],
        "check": [f"GET /health/ready and /api/v1/status through the active endpoint: "
                  f"{active} {getattr(selected, active).version}, up to 3 tries"],
        "canary": [f"weights {list(settings.release.canary_steps)} to {idle}, "
                   f"{settings.release.canary_pause_seconds}s apart",
                   f"gate: 5xx rate <= {settings.release.max_error_rate}, "
                   f"p95 <= {settings.release.max_p95_latency_ms} ms",
                   "on breach: weight 0, exit 1; at 100: promote"],
    }  # fmt: skip
    print(f"dry run: {command} on {stack}/{name} (nothing is changed)")
    for step in plans[command]:
        print(f"  - {step}")
    return EXIT_OK


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
    parser.add_argument("--preview-url", help="base URL reaching the preview Service")
    parser.add_argument("--active-url", help="base URL reaching the active Service")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy" and not re.fullmatch(IMAGE_REFERENCE, args.image or ""):
            raise BadInput(f"--image: not an image reference: {args.image!r}")
        if args.dry_run:
            return dry_run(args.command, args.stack, args.service, args.image, project_dir)
        if backend is None and args.stack not in available_stacks(project_dir):
            raise BadInput(f"unknown stack {args.stack}")
        release = Release(backend or PulumiStack(args.stack, project_dir), args.service,
                          **release_options)  # fmt: skip
        if args.command == "status":
            return release.status()
        if args.command == "rollback":
            return release.rollback()
        active_url = args.active_url or str(release.backend.outputs().get("apiEndpoint", ""))
        if args.command == "deploy":
            if not args.preview_url:
                raise BadInput(
                    "deploy needs --preview-url (e.g. a port-forward to the preview Service)"
                )
            return release.deploy(args.image, args.app_version, args.preview_url.rstrip("/"))
        if not active_url:
            raise BadInput(f"{args.command} needs --active-url")
        if args.command == "check":
            return release.check(active_url.rstrip("/"))
        if args.command == "promote":
            return release.promote(active_url.rstrip("/"))
        if release.metrics is None:
            outputs = release.backend.outputs()
            release.metrics = CloudWatchMetrics(
                str(outputs["apiId"]), str(outputs["apiStageName"]), str(outputs["region"])
            )
        return release.canary(active_url.rstrip("/"))
    except (BadInput, StackFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InvalidConfig as exc:
        print("error: " + "; ".join(exc.lines), file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
