"""Release tool: happy paths end promoted; every fault ends with exit 1 and the previous color."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from infra import release
from tests.release_fakes import FakeClock, FakeCluster, FakeMetrics, FakeStack

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

    def run(self, *argv: str) -> int:
        return release.main(
            [*argv, "--stack", self.stack.name],
            backend=self.stack,
            clock=self.clock,
            metrics=self.metrics,
            log=self.lines.append,
        )

    def deploy(self, image: str = NEW_IMAGE) -> int:
        return self.run("deploy", "--image", image, "--preview-url", self.cluster.url("preview"))

    def promote(self) -> int:
        return self.run("promote", "--active-url", self.cluster.url("active"))

    @property
    def active(self) -> str:
        return str(self.stack.service()["activeColor"])


def test_deploy_then_promote_ends_with_the_new_version_active(cluster: FakeCluster) -> None:
    h = Harness(cluster, stack="dev")  # staging runs only digest-pinned images
    assert h.deploy() == 0
    assert h.stack.service()["green"] == {"version": "2.0.0", "image": NEW_IMAGE}
    assert h.active == "blue"
    assert h.promote() == 0
    assert h.active == "green"
    assert cluster.active_color == "green"
    assert any("verified: active endpoint serves green 2.0.0" in line for line in h.lines)
    assert all(line.startswith("[2026-12-01T") for line in h.lines)
    # The switch was a targeted update of the service's Kubernetes objects only.
    targeted = h.stack.ups[-1]
    assert targeted is not None
    assert {urn.rpartition("::")[2] for urn in targeted} >= {
        "analytics-api-active", "analytics-api-preview", "analytics-api-blue",
        "analytics-api-green", "analytics-api",
    }  # fmt: skip
    assert all("kubernetes:" in urn for urn in targeted)


def test_deploy_gives_an_idle_color_without_pods_one_pod(cluster: FakeCluster) -> None:
    h = Harness(cluster, stack="dev")
    assert h.deploy() == 0
    assert h.stack.service()["previewReplicaCount"] == 1
    cluster.unready_versions.add("3.0.0")
    assert h.deploy(NEW_IMAGE.replace("2.0.0", "3.0.0")) == 1
    assert h.stack.service()["green"]["version"] == "2.0.0"


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

    code = release.main(
        ["deploy", "--stack", "staging", "--image", NEW_IMAGE, "--preview-url",
         cluster.url("preview")],
        backend=h.stack, clock=h.clock, log=h.lines.append, run_command=fake_command,
    )  # fmt: skip
    assert code == 1
    assert seen == [(["check-it", "--fast"], {"PREVIEW_URL": cluster.url("preview")})]


def test_promote_rolls_back_when_the_switch_fails(cluster: FakeCluster) -> None:
    h = Harness(cluster, fail_up_when=lambda service: service["activeColor"] == "green")
    assert h.promote() == 1
    assert h.active == "blue"
    assert cluster.active_color == "blue"
    assert any("switch to green failed" in line for line in h.lines)


def test_promote_rolls_back_when_verification_fails(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    cluster.stale_selector = True  # the switch "succeeds" but traffic still reaches blue
    assert h.promote() == 1
    assert h.active == "blue"
    assert any("does not serve green" in line for line in h.lines)


def test_rollback_switches_back_in_one_step(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    assert h.promote() == 0
    ups_before = len(h.stack.ups)
    assert h.run("rollback") == 0
    assert h.active == "blue"
    assert cluster.active_color == "blue"
    assert len(h.stack.ups) == ups_before + 1


def test_canary_walks_the_weights_and_promotes_at_100(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    assert h.run("canary", "--active-url", cluster.url("active")) == 0
    weights = [line for line in h.lines if "canary weight" in line and "%" in line]
    assert [w.split("canary weight ")[1].split("%")[0] for w in weights] == ["5", "10", "25", "50"]
    assert h.clock.slept[:4] == [60, 60, 60, 60]
    assert h.active == "green"
    assert h.stack.service()["canary"]["weight"] == 0


@pytest.mark.parametrize("breach_at", [1, 3])
def test_canary_aborts_to_weight_zero_on_a_metric_breach(
    cluster: FakeCluster, breach_at: int
) -> None:
    h = Harness(cluster)
    h.metrics = FakeMetrics(breach_at=breach_at)
    assert h.run("canary", "--active-url", cluster.url("active")) == 1
    assert h.metrics.samples == breach_at
    assert h.stack.service()["canary"]["weight"] == 0
    assert h.active == "blue"
    assert any("ABORT: error rate" in line for line in h.lines)


def test_canary_aborts_when_metrics_cannot_be_read(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    h.metrics = FakeMetrics(error=True)
    assert h.run("canary", "--active-url", cluster.url("active")) == 1
    assert h.stack.service()["canary"]["weight"] == 0
    assert h.active == "blue"


def test_status_shows_colors_versions_and_canary_weight(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    assert h.run("status") == 0
    assert "active blue (1.4.2), preview green (1.5.0), canary weight 0" in h.lines[-1]


def test_dry_run_prints_the_plan_without_a_pulumi_cli(capsys: pytest.CaptureFixture[str]) -> None:
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = ""
    try:
        assert release.main(["promote", "--stack", "prod", "--dry-run"]) == 0
    finally:
        os.environ["PATH"] = path
    out = capsys.readouterr().out
    assert "dry run: promote on prod/analytics-api" in out
    assert "set services.analytics-api.activeColor = green" in out


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
    assert h.run("check", "--active-url", cluster.url("active")) == 0
    assert any("verified: active endpoint serves blue" in line for line in h.lines)


def test_check_fails_when_the_active_endpoint_serves_another_color(cluster: FakeCluster) -> None:
    h = Harness(cluster)
    # The preview Service answers with green: not what the stack says is active.
    assert h.run("check", "--active-url", cluster.url("preview")) == 1
    assert any(line.endswith("active endpoint does not serve blue 1.4.2") for line in h.lines)
