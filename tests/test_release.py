"""Release tool against fakes that behave as AWS, Kubernetes and Pulumi do.

Happy paths end promoted; every fault ends with exit 1, the previous color active and the
weights at 100/0; refusals end with exit 2 and nothing changed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pulumi.automation._cmd import CommandResult
from pulumi.automation.errors import CommandError

from infra import release
from infra.release import CanaryWindow
from infra.settings import ReleaseSettings, parse_settings
from tests.conftest import stack_config, stack_yaml
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

# Staging and prod run only digest-pinned images (the tier's requireImageDigest).
DIGEST = "@sha256:" + "ab" * 32
NEW_IMAGE = f"210987654321.dkr.ecr.eu-west-1.amazonaws.com/analytics-api:2.0.0{DIGEST}"


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
        self.metrics = FakeMetrics(clock=self.clock)
        self.lines: list[str] = []

    def windows(self, *windows: CanaryWindow, error: bool = False) -> None:
        self.metrics = FakeMetrics(*windows, error=error, clock=self.clock)

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
    assert h.lines[0] == (
        f"[2026-12-01T09:00:00Z] staging/analytics-api: deploying {NEW_IMAGE} as 2.0.0 to the "
        "idle color green"
    )


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


def test_an_image_that_never_gets_ready_fails_the_up_and_is_restored(cluster: FakeCluster) -> None:
    """pulumi-kubernetes waits for a Deployment's rollout and fails the update when it does not
    become ready (Pulumi, "Kubernetes resource await logic"): the Automation API raises a
    CommandError, which the tool must treat as a failed gate and undo."""
    cluster.unready_versions.add("2.0.0")
    h = Harness(cluster)
    assert h.deploy() == 1
    assert h.active == "blue"
    assert h.stack.service()["green"]["version"] == "1.5.0"  # restored
    assert any("pulumi failed:" in line and "Timeout occurred" in line for line in h.lines)
    assert h.stack.ups == [None, None]  # the failed update, then the restore


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
        (NEW_IMAGE.replace(":2.0.0", ":latest"), "the `latest` tag moves"),
        (NEW_IMAGE.replace(DIGEST, ""), "pin the digest"),
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
    # Every step of the switch was a targeted update of the listener, Services, HPAs and the
    # pod-delete experiment (it selects the active color) only.
    switch_ups = h.stack.ups[1:]
    assert len(switch_ups) == 4  # floors, switch, outgoing color down, incoming floor off
    for targets in switch_ups:
        assert targets is not None
        assert sorted(u.rpartition("::")[2] for u in targets) == [
            "analytics-api-active", "analytics-api-blue", "analytics-api-green",
            "analytics-api-preview", "api", "chaos-pod-delete",
        ]  # fmt: skip
        assert all(u in h.stack.state for u in targets)


@pytest.mark.parametrize(("stack", "has_chaos"), [("prod", False), ("dev", True)])
def test_a_switch_in_a_stack_without_a_pod_delete_template_stays_targeted(
    cluster: FakeCluster, stack: str, has_chaos: bool
) -> None:
    """prod has no chaos templates unless `chaos.enabled` (infra/tiers.py); dev has its chaos
    component but no pod-delete (one pod per color, infra/chaos.py). Either way the switch
    targets no template, and a targeted update "skips creates of resources that are not
    targeted" (Pulumi, `pulumi up --target`), so none is asked for and no whole update is
    forced; the next whole update creates it, with the then active color, if it ever applies."""
    h = Harness(cluster, stack)
    assert bool([u for u in h.stack.state if u.endswith("::chaos")]) is has_chaos
    assert not [u for u in h.stack.state if u.endswith("::chaos-pod-delete")]
    assert h.deploy() == 0
    assert h.promote() == 0
    for targets in h.stack.ups[1:]:
        assert targets is not None
        assert not [u for u in targets if "chaos" in u]


def test_the_switch_never_leaves_the_active_color_with_fewer_ready_pods(
    cluster: FakeCluster,
) -> None:
    """Under load the HPA has scaled blue to 7 (prod: replicas 3, max 10). A Deployment under an
    HPA has no spec.replicas (Kubernetes, "Horizontal Pod Autoscaling: migrating Deployments to
    horizontal autoscaling"), so the size lives in the cluster: the tool reads it and puts a
    floor of 7 under both colors' HPAs before the Services switch. Green's HPA computed its
    scale-down history while idle, and the HPA scales down to the highest recommendation of
    its stabilization window (Kubernetes, "Horizontal Pod Autoscaling: stabilization window"):
    without the floor it would drop green to 3 as soon as traffic arrived. Blue goes down
    after scaleDownDelaySeconds (Argo Rollouts, BlueGreen strategy), green's floor after the
    window."""
    h = Harness(cluster, stack="prod")
    cluster.set_demand(7)
    assert h.promote() == 0
    assert min(cluster.active_capacity) >= 7
    assert cluster.size == {"blue": 3, "green": 7}
    delay = ReleaseSettings().scale_down_delay_seconds
    assert h.clock.slept[-2:] == [delay, 300 - delay]
    entry = h.stack.service()
    assert "minReplicas" not in entry["blue"]
    assert "minReplicas" not in entry["green"]


def test_a_switch_without_floors_would_lower_capacity(cluster: FakeCluster) -> None:
    """The capacity record itself works: a plain flip leaves green's HPA on its idle history."""
    h = Harness(cluster, stack="prod")
    cluster.set_demand(7)
    h.stack.set_path("services[0].activeColor", "green")
    h.stack.up()
    assert min(cluster.active_capacity) == 3


@pytest.mark.parametrize("floor", [None, 5, 12])
def test_the_fake_hpas_have_the_bounds_the_program_gives_them(
    run_stack: Any, floor: int | None
) -> None:
    """The fake cluster is only as good as its HPA bounds: they must be the program's."""
    from tests.release_fakes import _hpa_bounds

    services = copy.deepcopy(stack_yaml("prod")["config"]["analytics-platform:services"])
    if floor:
        services[0]["green"]["minReplicas"] = floor
        services[0]["blue"]["minReplicas"] = floor
    run = run_stack("prod", {"services": services})
    config, secret_keys = stack_config("prod", {"services": services})
    settings = parse_settings("analytics-platform", "prod", config, secret_keys).services[0]
    for hpa in run.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler"):
        color = hpa.name.rsplit("-", 1)[1]
        spec = hpa.inputs["spec"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == _hpa_bounds(settings, color)
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_promote_rolls_back_when_the_switch_fails(cluster: FakeCluster) -> None:
    h = Harness(cluster, fail_up_when=lambda s: s.active_color == "green")
    assert h.promote() == 1
    assert h.active == "blue"
    assert cluster.active_color == "blue"
    assert "previousColor" not in h.stack.service()
    assert "minReplicas" not in h.stack.service()["green"]


def test_promote_rolls_back_when_verification_fails(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    cluster.stale_selector = True  # the switch "succeeds" but traffic still reaches blue
    assert h.promote() == 1
    assert h.active == "blue"
    assert any("does not serve green" in line for line in h.lines)


def test_a_rollback_that_fails_too_exits_3(cluster: FakeCluster) -> None:
    h = Harness(cluster, fail_up_when=lambda s: s.green.min_replicas is not None)
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
    assert h.canary() == 0
    seen = [weight for weight, _sizes in cluster.history]
    steps = [w for i, w in enumerate(seen) if w and (i == 0 or seen[i - 1] != w)]
    assert steps == [5, 10, 25, 50]
    assert h.active == "green"
    assert cluster.weight == 0
    assert h.stack.service()["canary"]["weight"] == 0
    assert h.metrics.samples == 4


def test_a_canary_that_promotes_leaves_no_floor_behind(cluster: FakeCluster) -> None:
    """The promote after the last step returns the HPAs to the stack file as it was before the
    canary: the canary's own floors (matchTrafficWeight) and the switch's are all removed once
    the scale-down window has passed (Kubernetes, "Horizontal Pod Autoscaling")."""
    h = Harness(cluster, stack="prod")
    cluster.set_demand(8)
    before = copy.deepcopy(h.stack.service())
    assert "minReplicas" not in before["green"]
    assert h.canary() == 0
    entry = h.stack.service()
    assert "minReplicas" not in entry["green"]
    assert "minReplicas" not in entry["blue"]
    assert h.active == "green"


def test_a_canary_whose_promote_fails_returns_to_the_stack_file_before_the_canary(
    cluster: FakeCluster,
) -> None:
    h = Harness(cluster, stack="prod")
    cluster.set_demand(8)
    h.windows(HEALTHY, HEALTHY, HEALTHY, HEALTHY)
    before = copy.deepcopy(h.stack.service())
    cluster.stale_selector = True  # the switch "succeeds" but traffic still reaches blue
    assert h.canary() == 1
    after = h.stack.service()
    assert after.pop("canary") == {"weight": 0}  # the weight at rest, now written out
    assert after == before  # no floor of the canary's or the switch's is left


def test_canary_pods_follow_the_traffic_weight(cluster: FakeCluster) -> None:
    """Argo Rollouts' setCanaryScale matchTrafficWeight: at 50 % of 8 pods the canary runs 4."""
    h = Harness(cluster, stack="prod")
    cluster.set_demand(8)
    h.windows(HEALTHY, HEALTHY, HEALTHY, BREACH)
    assert h.canary() == 1
    assert max(sizes["green"] for _weight, sizes in cluster.history) == 4  # 50 % of 8
    assert cluster.size["green"] == 3  # previewReplicaCount again after the abort


def test_canary_windows_are_whole_minutes_read_after_cloudwatch_has_them(
    cluster: FakeCluster,
) -> None:
    """The load balancer publishes per-minute datapoints, and CloudWatch has them only after a
    delay (Elastic Load Balancing, "CloudWatch metrics for your Application Load Balancer"): a
    window starts on a minute after the weight moved, and is read metricsDelaySeconds after
    it ends, never earlier."""
    h = Harness(cluster)
    assert h.canary() == 0
    delay = ReleaseSettings().metrics_delay_seconds
    assert len(h.metrics.reads) == 4
    previous_end = None
    for start, end, read_at in h.metrics.reads:
        assert (start.second, end.second) == (0, 0)
        assert (end - start).total_seconds() == 60
        assert read_at is not None
        assert (read_at - end).total_seconds() >= delay
        assert previous_end is None or start >= previous_end
        previous_end = end


def test_a_canary_over_the_error_threshold_aborts_at_the_first_bad_window(
    cluster: FakeCluster,
) -> None:
    """HTTPCode_Target_5XX_Count / RequestCount of the canary target group (Elastic Load
    Balancing, "CloudWatch metrics for your Application Load Balancer")."""
    h = Harness(cluster)
    h.windows(HEALTHY, BREACH)
    assert h.canary() == 1
    assert h.metrics.samples == 2
    assert cluster.weight == 0
    assert h.stack.service()["canary"]["weight"] == 0
    assert h.active == "blue"
    assert any("ABORT: error rate 0.2000" in line and "at 10%" in line for line in h.lines)


def test_a_slow_canary_aborts(cluster: FakeCluster) -> None:
    """TargetResponseTime is in seconds; the gate is in milliseconds."""
    h = Harness(cluster)
    h.windows(SLOW)
    assert h.canary() == 1
    assert any("p95 response time 2500 ms" in line for line in h.lines)


def test_a_canary_whose_metrics_are_missing_aborts_and_rolls_back(cluster: FakeCluster) -> None:
    """The load balancer reports no metric when no request flows (Elastic Load Balancing,
    "CloudWatch metrics for your Application Load Balancer"): missing data is no evidence, so
    it is inconclusive, and inconclusiveLimit such windows abort (Argo Rollouts analysis)."""
    h = Harness(cluster)
    h.windows(NO_DATA)
    assert h.canary() == 1
    limit = ReleaseSettings().inconclusive_limit
    assert h.metrics.samples == limit
    assert cluster.weight == 0
    assert h.active == "blue"
    assert any("no data is not a pass" in line for line in h.lines)


def test_delayed_metrics_wait_instead_of_passing(cluster: FakeCluster) -> None:
    """One late window is inconclusive: the canary waits at the same weight, then goes on."""
    h = Harness(cluster)
    h.windows(NO_DATA, HEALTHY)
    assert h.canary() == 0
    assert h.metrics.samples == 5


def test_canary_aborts_when_metrics_cannot_be_read(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    h.windows(error=True)
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
    assert h.canary() == 0
    assert h.stack.ups[0] is None
    assert 5 in [weight for weight, _sizes in cluster.history]
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
        # The load balancer's own 502/503/504 for a crashing canary: no target 5xx at all.
        (release.CanaryWindow(100, None, 0.1, connection_errors=2), "fail"),
        (release.CanaryWindow(100, 1, 0.1, connection_errors=1), "fail"),
    ],
)
def test_each_window_is_judged_pass_fail_or_inconclusive(
    window: release.CanaryWindow, outcome: str
) -> None:
    assert release.judge(window, ReleaseSettings())[0] == outcome


@pytest.mark.parametrize(
    ("window", "verdict"),
    [
        (release.CanaryWindow(None, None, None),
         ("inconclusive", "0 requests to the canary (at least 10 needed to judge)")),
        (release.CanaryWindow(10, None, 0.1),  # exactly minRequestsPerWindow: enough
         ("pass", "error rate 0.0000, p95 100 ms over 10 requests")),
        (release.CanaryWindow(100, None, 0.1, connection_errors=1),
         ("pass", "error rate 0.0100, p95 100 ms over 100 requests")),
        (release.CanaryWindow(100, 3, 0.1),
         ("fail", "error rate 0.0300 over 0.01 (3 5xx and connection errors in 100 requests)")),
        (release.CanaryWindow(100, None, None),
         ("inconclusive", "no TargetResponseTime for the canary")),
        (release.CanaryWindow(100, 1, 1.5), ("fail", "p95 response time 1500 ms over 1000 ms")),
    ],
)  # fmt: skip
def test_each_verdict_says_what_it_saw(
    window: release.CanaryWindow, verdict: tuple[str, str]
) -> None:
    """A missing datapoint counts as none (a missing request count as no evidence); the
    message carries the numbers the verdict rests on."""
    assert release.judge(window, ReleaseSettings()) == verdict


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


PROD_PLANS = {
    "status": ["active blue (1.4.2), preview green (1.5.0), weights 100/0"],
    "deploy": [
        f"set services.analytics-api.green.image = {NEW_IMAGE}",
        "set services.analytics-api.green.version = 2.0.0",
        "pulumi up",
        "wait until green is ready through the API's /preview route",
        "smoke test",
        "on failure: restore the idle color as it was, pulumi up, exit 1",
    ],
    "promote": [
        "scale green to the live size of blue (at least 3), wait for its pods",
        "set services.analytics-api.activeColor = green, canary weight 0",
        "targeted pulumi up (listener weights 100/0, Services, HPAs, and the pod-delete "
        "experiment where the stack has one)",
        "verify X-Color=green through the active endpoint",
        "after 30s: blue back to 3 pods",
        "on failure: switch back to blue, weights 100/0, exit 1",
    ],
    "rollback": ["refused: no previous release to return to (exit 2)"],
    "check": [
        "GET /health/ready and /api/v1/status through the active endpoint: blue 1.4.2, up to 3 "
        "tries"
    ],
    "canary": [
        "weights [5, 10, 25, 50] to green, 60s windows, pods scaled with the weight",
        "gate per window on the canary target group: 5xx share <= 0.01, p95 <= 1000 ms, at "
        "least 10 requests",
        "3 inconclusive windows (no data) abort",
        "on breach or error: weights 100/0 at once, exit 1; after the last: promote",
    ],
}


@pytest.mark.parametrize("command", sorted(PROD_PLANS))
def test_each_dry_run_prints_its_whole_plan(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release.main([command, "--stack", "prod", "--dry-run", "--image", NEW_IMAGE]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"dry run: {command} on prod/analytics-api (nothing is changed)",
        *(f"  - {step}" for step in PROD_PLANS[command]),
    ]


def test_a_dry_run_rollback_returns_to_the_previous_color_and_switches(
    project_copy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = stack_yaml("prod")
    service = doc["config"]["analytics-platform:services"][0]
    service.update(activeColor="green", previousColor="blue")
    folder = project_copy("prod", doc)
    assert release.main(["rollback", "--stack", "prod", "--dry-run"], project_dir=folder) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  - return to blue",
        "  - set services.analytics-api.activeColor = blue, canary weight 0",
        "  - targeted pulumi up (listener weights 100/0, Services, HPAs, and the pod-delete "
        "experiment where the stack has one)",
        "  - verify X-Color=blue through the active endpoint",
        "  - after 30s: green back to 3 pods",
        "  - on failure: switch back to green, weights 100/0, exit 1",
    ]


def test_a_dry_run_of_an_unknown_service_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert release.main(["status", "--stack", "prod", "--dry-run", "--service", "nope"]) == 2
    assert "unknown service nope" in capsys.readouterr().err


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


# -- Pulumi and AWS edges ------------------------------------------------------------------------
def test_an_update_that_finds_the_stack_locked_waits_and_retries(cluster: FakeCluster) -> None:
    """Another update holds the lock (Automation API ConcurrentUpdateError): wait, retry."""
    h = Harness(cluster, locked_ups=2)
    assert h.deploy() == 0
    assert sum("another update holds the stack" in line for line in h.lines) == 2
    assert h.clock.slept[:2] == [30, 30]


def test_a_lock_that_never_clears_changes_nothing_and_exits_4(cluster: FakeCluster) -> None:
    h = Harness(cluster, locked_ups=1000)
    before = h.stack.service()
    assert h.deploy() == 4
    assert h.stack.service() == before
    assert any("stayed locked, nothing was changed" in line for line in h.lines)


def test_a_pulumi_failure_before_any_change_is_one_line_and_exit_4(
    cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    h = Harness(cluster)

    def no_login() -> Any:
        raise CommandError(CommandResult("", "error: PULUMI_ACCESS_TOKEN must be set", 255))

    h.stack.config = no_login  # type: ignore[method-assign]
    assert h.run("status") == 4
    err = capsys.readouterr().err.strip()
    assert err == "error: pulumi failed: error: PULUMI_ACCESS_TOKEN must be set"


@pytest.mark.parametrize(("value", "kind"), [("1234", "string"), ("2.0.0", "string"),
                                             ("true", "string"), (7, "int")])  # fmt: skip
def test_config_values_are_written_with_their_own_type(value: str | int, kind: str) -> None:
    """`pulumi config set --path` stores integers and true/false as numbers and booleans unless
    told the type (Pulumi CLI, `pulumi config set`: --type string|int)."""
    args = release.config_set_args("analytics-platform", "prod", "services[0].green.version",
                                   value)  # fmt: skip
    assert args[:5] == ["config", "set", "--path", "--type", kind]
    assert args[-2:] == ["--", str(value)]


def test_a_digit_only_tag_deploys_as_a_string_version(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    image = NEW_IMAGE.replace(":2.0.0", ":1234")
    assert h.deploy(image) == 0
    assert h.stack.service()["green"]["version"] == "1234"


def test_the_preview_route_is_signed_with_sigv4_for_execute_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IAM-authorised HTTP API routes take Signature Version 4 for service `execute-api` (API
    Gateway, "Controlling access to HTTP APIs with IAM authorization")."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    headers = release.sigv4_signer("eu-west-1")("https://abc.execute-api.eu-west-1.amazonaws.com"
                                                "/preview/health/ready")  # fmt: skip
    auth = headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in auth
    assert "X-Amz-Date" in headers


def test_cloudwatch_reads_the_canary_target_groups_own_metrics() -> None:
    """GetMetricData for AWS/ApplicationELB with TargetGroup + LoadBalancer (Elastic Load
    Balancing, "CloudWatch metrics for your Application Load Balancer"): checked against
    botocore's own model of the API by its Stubber."""
    from botocore.stub import Stubber

    metrics = release.CloudWatchMetrics("app/lb/1", "targetgroup/preview/2", "eu-west-1")
    start = datetime(2026, 12, 1, 9, 1, tzinfo=UTC)
    end = start + timedelta(minutes=1)
    dims = [{"Name": "TargetGroup", "Value": "targetgroup/preview/2"},
            {"Name": "LoadBalancer", "Value": "app/lb/1"}]  # fmt: skip
    queries = [
        {"Id": query_id, "MetricStat": {"Metric": {"Namespace": "AWS/ApplicationELB",
                                                   "MetricName": name, "Dimensions": dims},
                                        "Period": 60, "Stat": stat}, "ReturnData": True}
        for query_id, name, stat in (("requests", "RequestCount", "Sum"),
                                     ("errors", "HTTPCode_Target_5XX_Count", "Sum"),
                                     ("connections", "TargetConnectionErrorCount", "Sum"),
                                     ("p95", "TargetResponseTime", "p95"))
    ]  # fmt: skip
    with Stubber(metrics._cloudwatch) as stub:
        stub.add_response(
            "get_metric_data",
            {
                "MetricDataResults": [
                    {"Id": "requests", "Values": [640.0], "StatusCode": "Complete"},
                    {"Id": "errors", "Values": [], "StatusCode": "Complete"},
                    {"Id": "connections", "Values": [3.0], "StatusCode": "Complete"},
                    {"Id": "p95", "Values": [0.21], "StatusCode": "Complete"},
                ]
            },
            {"StartTime": start, "EndTime": end, "MetricDataQueries": queries},
        )
        window = metrics.sample(start, end)
        stub.assert_no_pending_responses()
    assert window == CanaryWindow(640.0, None, 0.21, connection_errors=3.0)
