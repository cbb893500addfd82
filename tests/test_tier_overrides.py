"""Every tier default can be overridden, and the override is what reaches the resource.

The repository stacks all run with their tier's defaults, so a component that hard-coded a
value equal to the default would pass every other test. One dev stack here overrides every
leaf of `TierDefaults` (infra/tiers.py) with a value no tier uses, and each is checked where it
lands; a new tier default without a case here fails the first test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from infra.mock_engine import ProgramRun
from infra.tiers import TIERS
from tests.conftest import PROJECT, shared_program_run, stack_config, stack_yaml
from tests.test_monitoring import GIB, SERVICE, alarms

DB = "aws:rds/instance:Instance"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
REPLICATION = "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication"
# db.t4g.medium: 2 vCPUs, 4 GiB (AWS, "Amazon RDS DB instance classes: hardware specifications")
VCPUS, MEMORY_GIB = 2, 4
ALLOCATED_GB = 33
# RDS for PostgreSQL max_connections: LEAST({DBInstanceClassMemory/9531392}, 5000)
MAX_CONNECTIONS = min(int(MEMORY_GIB * GIB * 0.75 // 9_531_392), 5000)

OVERRIDES: dict[str, Any] = {
    "protectStatefulResources": True,
    "kmsDeletionWindowDays": 9,
    "logRetentionDays": 14,
    "database": {
        "instanceClass": "db.t4g.medium", "allocatedStorageGb": ALLOCATED_GB,
        "maxAllocatedStorageGb": 77, "backupRetentionDays": 4, "multiAz": True,
        "deletionProtection": True, "finalSnapshot": True, "performanceInsights": True,
        "monitoringIntervalSeconds": 15,
        "disasterRecovery": {"enabled": True, "region": "us-east-1", "retentionDays": 11},
    },
    "api": {"throttlingBurstLimit": 77, "throttlingRateLimit": 33.5},
    "serviceDefaults": {"replicas": 2, "previewReplicaCount": 3, "maxReplicas": 5},
    "monitoring": {
        "database": {"cpuPercent": 61, "freeStoragePercent": 12, "freeableMemoryPercent": 30,
                     "connectionsPercent": 70, "readLatencyP90Ms": 33, "writeLatencyP90Ms": 44,
                     "loadPerVcpu": 1.5},
        "api": {"serverErrorRate": 0.03, "clientErrorRate": 0.2, "latencyP90Ms": 1234},
        "loadBalancer": {"maxUnhealthyHosts": 2},
        "service": {"maxErrorLogsPerMinute": 7},
    },
    "image": {"keepTaggedImages": 12},
    "costs": {"monthlyBudgetUsd": 444, "anomalyThresholdUsd": 55},
    "chaos": {"enabled": False},
    "tracing": {"samplingRatio": 0.5},
}  # fmt: skip


def _db(run: ProgramRun) -> Mapping[str, Any]:
    return run.one(DB, "database").inputs


def _threshold(kind: str) -> Callable[[ProgramRun], Any]:
    return lambda run: alarms(run)[kind].inputs["threshold"]


def _hpa(color: str) -> Callable[[ProgramRun], Any]:
    def bounds(run: ProgramRun) -> tuple[int, int]:
        spec = run.one(HPA, f"{SERVICE}-{color}").inputs["spec"]
        return spec["minReplicas"], spec["maxReplicas"]

    return bounds


def _kept_tagged(run: ProgramRun) -> Any:
    policy = json.loads(run.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    return [r["selection"]["countNumber"] for r in policy["rules"] if r["rulePriority"] == 2]


def _sampler_args(run: ProgramRun) -> set[str]:
    """OTEL_TRACES_SAMPLER_ARG of both colors' app containers."""
    return {
        env["value"]
        for color in ("blue", "green")
        for env in run.one("kubernetes:apps/v1:Deployment", f"{SERVICE}-{color}").inputs["spec"][
            "template"]["spec"]["containers"][0]["env"]
        if env["name"] == "OTEL_TRACES_SAMPLER_ARG"
    }  # fmt: skip


# config path -> (what the run shows, the value it must show)
LANDS: dict[str, tuple[Callable[[ProgramRun], Any], Any]] = {
    "protectStatefulResources": (lambda r: r.one(DB, "database").protect, True),
    "kmsDeletionWindowDays": (
        lambda r: r.one("aws:kms/key:Key", "alerts-key").inputs["deletionWindowInDays"], 9),
    "logRetentionDays": (
        lambda r: r.one("aws:cloudwatch/logGroup:LogGroup", "api-access-logs").inputs[
            "retentionInDays"], 14),
    "database.instanceClass": (lambda r: _db(r)["instanceClass"], "db.t4g.medium"),
    "database.allocatedStorageGb": (lambda r: _db(r)["allocatedStorage"], ALLOCATED_GB),
    "database.maxAllocatedStorageGb": (lambda r: _db(r)["maxAllocatedStorage"], 77),
    "database.backupRetentionDays": (lambda r: _db(r)["backupRetentionPeriod"], 4),
    "database.multiAz": (lambda r: _db(r)["multiAz"], True),
    "database.deletionProtection": (lambda r: _db(r)["deletionProtection"], True),
    "database.finalSnapshot": (lambda r: _db(r)["skipFinalSnapshot"], False),
    "database.performanceInsights": (lambda r: _db(r)["performanceInsightsEnabled"], True),
    "database.monitoringIntervalSeconds": (lambda r: _db(r)["monitoringInterval"], 15),
    "database.disasterRecovery.enabled": (
        lambda r: r.one(REPLICATION).inputs["retentionPeriod"], 11),
    "api.throttlingBurstLimit": (
        lambda r: r.one("aws:apigatewayv2/stage:Stage").inputs["defaultRouteSettings"][
            "throttlingBurstLimit"], 77),
    "api.throttlingRateLimit": (
        lambda r: r.one("aws:apigatewayv2/stage:Stage").inputs["defaultRouteSettings"][
            "throttlingRateLimit"], 33.5),
    "serviceDefaults.replicas": (_hpa("blue"), (2, 5)),
    "serviceDefaults.previewReplicaCount": (_hpa("green"), (3, 3)),
    "serviceDefaults.maxReplicas": (_hpa("blue"), (2, 5)),
    "monitoring.database.cpuPercent": (_threshold("database-cpu"), 61),
    "monitoring.database.freeStoragePercent": (
        _threshold("database-free-storage"), pytest.approx(0.12 * ALLOCATED_GB * GIB)),
    "monitoring.database.freeableMemoryPercent": (
        _threshold("database-freeable-memory"), pytest.approx(0.30 * MEMORY_GIB * GIB)),
    "monitoring.database.connectionsPercent": (
        _threshold("database-connections"), int(0.70 * MAX_CONNECTIONS)),
    "monitoring.database.readLatencyP90Ms": (
        _threshold("database-read-latency"), pytest.approx(0.033)),
    "monitoring.database.writeLatencyP90Ms": (
        _threshold("database-write-latency"), pytest.approx(0.044)),
    "monitoring.database.loadPerVcpu": (_threshold("database-load"), pytest.approx(1.5 * VCPUS)),
    "monitoring.api.serverErrorRate": (_threshold("api-5xx-rate"), pytest.approx(0.03)),
    "monitoring.api.clientErrorRate": (_threshold("api-4xx-rate"), pytest.approx(0.2)),
    "monitoring.api.latencyP90Ms": (_threshold("api-latency-p90"), 1234),
    "monitoring.loadBalancer.maxUnhealthyHosts": (_threshold(f"{SERVICE}-unhealthy-hosts"), 2),
    "monitoring.service.maxErrorLogsPerMinute": (_threshold(f"{SERVICE}-error-logs"), 7),
    "image.keepTaggedImages": (_kept_tagged, [12]),
    "costs.monthlyBudgetUsd": (
        lambda r: r.one("aws:budgets/budget:Budget").inputs["limitAmount"], "444"),
    "costs.anomalyThresholdUsd": (
        lambda r: r.one("aws:costexplorer/anomalySubscription:AnomalySubscription").inputs[
            "thresholdExpression"]["dimension"]["values"], ["55"]),
    "chaos.enabled": (
        lambda r: len(r.of_type("aws:fis/experimentTemplate:ExperimentTemplate")), 0),
    "tracing.samplingRatio": (_sampler_args, {"0.5"}),
}  # fmt: skip


def _leaves(value: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, item in value.items():
        if isinstance(item, Mapping):
            yield from _leaves(item, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_tier_default_has_an_override_case() -> None:
    defaults = TIERS["dev"].defaults.model_dump(by_alias=True)
    assert set(_leaves(defaults)) == set(LANDS)
    overridden = set(_leaves(OVERRIDES)) - {"database.disasterRecovery.region",
                                            "database.disasterRecovery.retentionDays"}  # fmt: skip
    assert overridden == set(LANDS)
    for path in LANDS:  # every override differs from the dev default it replaces
        value: Any = OVERRIDES
        default: Any = defaults
        for step in path.split("."):
            value, default = value[step], default[step]
        assert value != default, path


@pytest.fixture
def overridden() -> ProgramRun:
    """One run for every case: the dev stack with every tier default overridden (shared)."""
    image = {**stack_yaml("dev")["config"][f"{PROJECT}:image"], **OVERRIDES["image"]}
    return shared_program_run("dev", *stack_config("dev", {**OVERRIDES, "image": image}))


@pytest.mark.parametrize("path", sorted(LANDS))
def test_each_override_reaches_its_resource(overridden: ProgramRun, path: str) -> None:
    show, expected = LANDS[path]
    assert show(overridden) == expected
