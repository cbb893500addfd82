"""Release tool against fakes that behave as AWS, Kubernetes and Pulumi do.

Happy paths end promoted; every fault ends with exit 1, the previous color active and the
weights at 100/0; refusals end with exit 2 and nothing changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from infra import release
from infra.settings import ReleaseSettings
from tests.release_fakes import (
    BREACH,
    HEALTHY,
    NO_DATA,
    SLOW,
    FakeClock,
    FakeCluster,
    FakeMetrics,
    FakeStack,
    fake_signer,
)

NEW_IMAGE = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/analytics-api:2.0.0"


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    cluster = FakeCluster()
    yield cluster
    cluster.close()


class Harness:
    def __init__(self, cluster: FakeCluster, stack: str = "staging", **options: Any) -> None:
        self.cluster = cluster
        self.stack = FakeStack(stack, cluster, **options)
        self.clock = FakeClock()
        self.metrics = FakeMetrics()
        self.lines: list[str] = []

    def run(self, *argv: str, **options: Any) -> int:
        return release.main(
            [*argv, "--stack", self.stack.name],
            backend=self.stack,
            clock=self.clock,
            metrics=self.metrics,
            log=self.lines.append,
            sign=fake_signer,
            **options,
        )

    def deploy(self, image: str = NEW_IMAGE, *extra: str) -> int:
        return self.run("deploy", "--image", image, *extra)

    def promote(self) -> int:
        return self.run("promote")

    def canary(self) -> int:
        return self.run("canary")

    @property
    def active(self) -> str:
        return str(self.stack.service()["activeColor"])


# -- deploy -----------------------------------------------------------------------------------
def test_deploy_checks_the_new_color_through_the_signed_preview_route(
    cluster: FakeCluster,
) -> None:
    """The API's /preview route is IAM-authorised: unsigned requests get 403 (API Gateway,
    "Controlling access to HTTP APIs with IAM authorization"); signed ones reach the preview
    target group through the listener's header rule, before any user request does."""
    h = Harness(cluster)
    assert h.deploy() == 0
    assert h.stack.service()["green"] == {"version": "2.0.0", "image": NEW_IMAGE}
    assert h.active == "blue"
    assert cluster.requests == {"blue": 0, "green": 0}  # no user-path request went anywhere
    assert any("green is ready (2.0.0)" in line for line in h.lines)
    assert any("smoke test passed" in line for line in h.lines)


def test_deploy_without_a_signature_cannot_reach_the_preview_color(cluster: FakeCluster) -> None:
    """Without SigV4 the preview route answers 403, so the gate fails and the deploy is undone."""
    h = Harness(cluster)
    h.stack._config["analytics-platform:release"] = '{"readyTimeoutSeconds": 10}'
    code = release.main(["deploy", "--stack", "staging", "--image", NEW_IMAGE],
                        backend=h.stack, clock=h.clock, log=h.lines.append,
                        sign=lambda _url: {})  # fmt: skip
    assert code == 1
    assert any("last: HTTP 403" in line for line in h.lines)


def test_a_failed_deploy_restores_the_idle_color_exactly_even_without_an_image_before(
    cluster: FakeCluster,
) -> None:
    """Regression: the idle color had no image of its own (it ran the stack's image); a failed
    deploy must remove the failed image, or a later promote makes it live."""
    h = Harness(cluster, stack="dev")
    assert "image" not in h.stack.service()["green"]
    cluster.unready_versions.add("2.0.0")
    assert h.deploy() == 1
    assert h.stack.service()["green"] == {"version": "0.1.0"}
    assert h.stack.ups[-1] is None  # the restore was applied


def test_deploy_fails_when_the_idle_color_never_gets_ready(cluster: FakeCluster) -> None:
    cluster.unready_versions.add("2.0.0")
    h = Harness(cluster)
    assert h.deploy() == 1
    assert h.active == "blue"
    assert h.stack.service()["green"]["version"] == "1.5.0"  # restored
    assert sum(h.clock.slept) >= 600  # waited the configured timeout, on the fake clock only


def test_deploy_fails_when_the_smoke_test_fails(cluster: FakeCluster) -> None:
    cluster.broken_versions.add("2.0.0")
    h = Harness(cluster)
    assert h.deploy() == 1
    assert h.active == "blue"
    assert any("smoke test /api/v1/status: HTTP 500" in line for line in h.lines)


def test_a_configured_smoke_command_gets_the_preview_url(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    h.stack._config["analytics-platform:release"] = '{"smokeCommand": "check-it --fast"}'
    seen: list[tuple[list[str], dict[str, str]]] = []

    def fake_command(argv: list[str], env: dict[str, str]) -> int:
        seen.append((argv, env))
        return 1

    assert h.run("deploy", "--image", NEW_IMAGE, run_command=fake_command) == 1
    assert seen == [(["check-it", "--fast"], {"PREVIEW_URL": cluster.url("api") + "/preview"})]


def test_deploy_honours_version(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    assert h.deploy(NEW_IMAGE, "--version", "2.0.0-rc1") == 0
    assert h.stack.service()["green"]["version"] == "2.0.0-rc1"
    assert cluster.pods["green"].version == "2.0.0-rc1"


def test_deploy_refuses_a_version_that_is_no_label_value(
    cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    h = Harness(cluster)
    assert h.deploy(NEW_IMAGE, "--version", "2.0 final") == 2
    assert "green.version" in capsys.readouterr().err
    assert h.stack.ups == []


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (NEW_IMAGE.replace(":2.0.0", ":latest"), "not latest"),
        (NEW_IMAGE.replace(":2.0.0", ""), "not latest or none"),
    ],
)
def test_deploy_refuses_images_the_stack_config_refuses(
    cluster: FakeCluster, image: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same rule as stack config: a moving tag is not a release."""
    h = Harness(cluster)
    assert h.deploy(image, "--version", "2.0.0") == 2
    assert says in capsys.readouterr().err
    assert h.stack.ups == []
    assert h.stack.service()["green"]["version"] == "1.5.0"


# -- promote and rollback ------------------------------------------------------------------------
def test_deploy_then_promote_ends_with_the_new_version_active(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    assert h.deploy() == 0
    assert h.promote() == 0
    assert h.active == "green"
    assert cluster.active_color == "green"
    assert h.stack.service()["previousColor"] == "blue"
    assert any("verified: active endpoint serves green 2.0.0" in line for line in h.lines)
    assert all(line.startswith("[2026-12-01T") for line in h.lines)
    # The switch was a targeted update of the listener, the Services and the HPAs only.
    switch = [u for u in h.stack.ups if u is not None][-2]
    assert sorted(u.rpartition("::")[2] for u in switch) == [
        "analytics-api-active", "analytics-api-blue", "analytics-api-green",
        "analytics-api-preview", "api",
    ]  # fmt: skip


def test_the_switch_never_leaves_the_active_color_with_fewer_ready_pods(
    cluster: FakeCluster,
) -> None:
    """Under load the HPA has scaled blue to 7 (prod: replicas 3, max 10). A Deployment under an
    HPA has no spec.replicas (Kubernetes, "Horizontal Pod Autoscaling: migrating Deployments to
    horizontal autoscaling"), so the size lives in the cluster: the tool reads it, brings green
    to 7 before the Services switch, and scales blue down only after scaleDownDelaySeconds
    (Argo Rollouts, BlueGreen strategy)."""
    h = Harness(cluster, stack="prod")
    cluster.size["blue"] = 7
    assert h.promote() == 0
    assert min(cluster.active_capacity) >= 7
    assert cluster.size == {"blue": 3, "green": 7}
    delay = ReleaseSettings().scale_down_delay_seconds
    assert delay in h.clock.slept
    assert "previewReplicaCount" not in h.stack.service()  # the override is gone again


def test_a_switch_that_lowered_capacity_would_be_caught(cluster: FakeCluster) -> None:
    """The capacity record itself works: flipping without scaling first drops to 3 pods."""
    h = Harness(cluster, stack="prod")
    cluster.size["blue"] = 7
    h.stack.set_path("services[0].activeColor", "green")
    h.stack.up()
    assert min(cluster.active_capacity) == 3


def test_promote_rolls_back_when_the_switch_fails(cluster: FakeCluster) -> None:
    h = Harness(cluster, fail_up_when=lambda s: s.active_color == "green")
    assert h.promote() == 1
    assert h.active == "blue"
    assert cluster.active_color == "blue"
    assert "previousColor" not in h.stack.service()
    assert "previewReplicaCount" not in h.stack.service()


def test_promote_rolls_back_when_verification_fails(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    cluster.stale_selector = True  # the switch "succeeds" but traffic still reaches blue
    assert h.promote() == 1
    assert h.active == "blue"
    assert any("does not serve green" in line for line in h.lines)


def test_a_rollback_that_fails_too_exits_3(cluster: FakeCluster) -> None:
    h = Harness(cluster, fail_up_when=lambda s: s.preview_replica_count > 1)
    assert h.promote() == 3
    assert any("ROLLBACK FAILED" in line for line in h.lines)


def test_rollback_returns_to_the_previous_release(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    assert h.deploy() == 0
    assert h.promote() == 0
    assert h.run("rollback") == 0
    assert h.active == "blue"
    assert cluster.active_color == "blue"
    assert "previousColor" not in h.stack.service()  # a second rollback would roll forward
    assert h.run("rollback") == 2


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_rollback_with_no_previous_release_exits_2_and_says_what_is_active(
    cluster: FakeCluster, stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing was promoted: the idle color holds a never-served build (prod: 1.5.0), so a
    "rollback" there would be a roll forward. Refused, nothing changed."""
    h = Harness(cluster, stack=stack)
    assert h.run("rollback") == 2
    err = capsys.readouterr().err
    assert "nothing to roll back to: blue" in err
    assert "is active" in err
    assert h.stack.ups == []
    assert h.active == "blue"


# -- canary --------------------------------------------------------------------------------------
def test_a_healthy_canary_walks_the_listener_weights_and_promotes(cluster: FakeCluster) -> None:
    """ALB forward actions split requests between target groups by weight (Elastic Load
    Balancing, "Listeners for your Application Load Balancers: forward actions")."""
    h = Harness(cluster)
    seen: list[int] = []
    original = cluster.apply

    def record(settings: Any, parts: set[str]) -> None:
        original(settings, parts)
        seen.append(cluster.weight)

    cluster.apply = record  # type: ignore[method-assign]
    assert h.canary() == 0
    steps = [w for i, w in enumerate(seen) if w and (i == 0 or seen[i - 1] != w)]
    assert steps == [5, 10, 25, 50]
    assert h.active == "green"
    assert cluster.weight == 0
    assert h.stack.service()["canary"]["weight"] == 0
    assert h.metrics.samples == 4


def test_canary_pods_follow_the_traffic_weight(cluster: FakeCluster) -> None:
    """Argo Rollouts' setCanaryScale matchTrafficWeight: at 50 % of 8 pods the canary runs 4."""
    h = Harness(cluster, stack="prod")
    cluster.size["blue"] = 8
    sizes: list[int] = []
    original = cluster.apply

    def record(settings: Any, parts: set[str]) -> None:
        original(settings, parts)
        sizes.append(cluster.size["green"])

    cluster.apply = record  # type: ignore[method-assign]
    h.metrics = FakeMetrics(HEALTHY, HEALTHY, HEALTHY, BREACH)
    assert h.canary() == 1
    assert max(sizes) == 4  # 50 % of 8
    assert cluster.size["green"] == 3  # previewReplicaCount again after the abort


def test_a_canary_over_the_error_threshold_aborts_at_the_first_bad_window(
    cluster: FakeCluster,
) -> None:
    """HTTPCode_Target_5XX_Count / RequestCount of the canary target group (Elastic Load
    Balancing, "CloudWatch metrics for your Application Load Balancer")."""
    h = Harness(cluster)
    h.metrics = FakeMetrics(HEALTHY, BREACH)
    assert h.canary() == 1
    assert h.metrics.samples == 2
    assert cluster.weight == 0
    assert h.stack.service()["canary"]["weight"] == 0
    assert h.active == "blue"
    assert any("ABORT: 5xx rate 0.2000" in line and "at 10%" in line for line in h.lines)


def test_a_slow_canary_aborts(cluster: FakeCluster) -> None:
    """TargetResponseTime is in seconds; the gate is in milliseconds."""
    h = Harness(cluster)
    h.metrics = FakeMetrics(SLOW)
    assert h.canary() == 1
    assert any("p95 response time 2500 ms" in line for line in h.lines)


def test_a_canary_whose_metrics_are_missing_aborts_and_rolls_back(cluster: FakeCluster) -> None:
    """The load balancer reports no metric when no request flows (Elastic Load Balancing,
    "CloudWatch metrics for your Application Load Balancer"): missing data is no evidence, so
    it is inconclusive, and inconclusiveLimit such windows abort (Argo Rollouts analysis)."""
    h = Harness(cluster)
    h.metrics = FakeMetrics(NO_DATA)
    assert h.canary() == 1
    limit = ReleaseSettings().inconclusive_limit
    assert h.metrics.samples == limit
    assert cluster.weight == 0
    assert h.active == "blue"
    assert any("no data is not a pass" in line for line in h.lines)


def test_delayed_metrics_wait_instead_of_passing(cluster: FakeCluster) -> None:
    """One late window is inconclusive: the canary waits at the same weight, then goes on."""
    h = Harness(cluster)
    h.metrics = FakeMetrics(NO_DATA, HEALTHY)
    assert h.canary() == 0
    assert h.metrics.samples == 5


def test_canary_aborts_when_metrics_cannot_be_read(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    h.metrics = FakeMetrics(error=True)
    assert h.canary() == 1
    assert h.stack.service()["canary"]["weight"] == 0
    assert h.active == "blue"


def test_the_first_canary_on_a_stack_without_its_objects_creates_them(
    cluster: FakeCluster,
) -> None:
    """`pulumi up --target` skips creating resources it does not target (Pulumi CLI, `pulumi up
    --target`); the stack was deployed before the per-color HPAs and the weighted listener
    existed, so the first step is a whole update, and the weights reach the load balancer."""
    h = Harness(cluster, not_yet_created=("::analytics-api-green", "::api"))
    seen: list[int] = []
    original = cluster.apply

    def record(settings: Any, parts: set[str]) -> None:
        original(settings, parts)
        seen.append(cluster.weight)

    cluster.apply = record  # type: ignore[method-assign]
    assert h.canary() == 0
    assert h.stack.ups[0] is None
    assert 5 in seen
    assert any("new to the stack: whole update" in line for line in h.lines)


# -- analysis, status, CLI -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("window", "outcome"),
    [
        (release.CanaryWindow(None, None, None), "inconclusive"),
        (release.CanaryWindow(9, None, 0.1), "inconclusive"),  # below minRequestsPerWindow
        (release.CanaryWindow(100, None, 0.1), "pass"),  # no 5xx datapoint: none happened
        (release.CanaryWindow(100, 1, 0.1), "pass"),
        (release.CanaryWindow(100, 2, 0.1), "fail"),  # 2 % > 1 %
        (release.CanaryWindow(100, None, None), "inconclusive"),
        (release.CanaryWindow(100, None, 1.0), "pass"),  # exactly the limit
        (release.CanaryWindow(100, None, 1.001), "fail"),
    ],
)
def test_each_window_is_judged_pass_fail_or_inconclusive(
    window: release.CanaryWindow, outcome: str
) -> None:
    assert release.judge(window, ReleaseSettings())[0] == outcome


def test_status_shows_colors_versions_weights_and_rollback_target(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    assert h.run("status") == 0
    assert (
        "active blue (1.4.2), preview green (1.5.0), weights 100/0, rollback to none"
        in (h.lines[-1])
    )


def test_dry_run_prints_the_plan_without_a_pulumi_cli(capsys: pytest.CaptureFixture[str]) -> None:
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = ""
    try:
        assert release.main(["promote", "--stack", "prod", "--dry-run"]) == 0
        assert release.main(["rollback", "--stack", "prod", "--dry-run"]) == 0
    finally:
        os.environ["PATH"] = path
    out = capsys.readouterr().out
    assert "dry run: promote on prod/analytics-api" in out
    assert "set services.analytics-api.activeColor = green, canary weight 0" in out
    assert "refused: no previous release to return to (exit 2)" in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["status", "--stack", "nope"], "unknown stack nope"),
        (["deploy", "--stack", "dev", "--image", "not an image"], "not an image reference"),
        (["status", "--stack", "dev"], "no Pulumi CLI on PATH"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = "/nonexistent"
    try:
        assert release.main(argv) == 2
    finally:
        os.environ["PATH"] = path
    err = capsys.readouterr().err
    assert says in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_version_comes_from_the_image_tag_or_digest() -> None:
    assert release.version_from_image(NEW_IMAGE) == "2.0.0"
    digest = "r.example.com/a/b@sha256:" + "ab" * 32
    assert release.version_from_image(digest) == "sha256-abababababab"


def test_check_passes_when_the_active_endpoint_serves_the_active_color(
    cluster: FakeCluster,
) -> None:
    h = Harness(cluster)
    assert h.run("check") == 0
    assert any("verified: active endpoint serves blue" in line for line in h.lines)


def test_check_fails_when_the_active_endpoint_serves_another_color(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    # The preview Service answers with green: not what the stack says is active.
    assert h.run("check", "--active-url", cluster.url("preview")) == 1
    assert any(line.endswith("active endpoint does not serve blue 1.4.2") for line in h.lines)
