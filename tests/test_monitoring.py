"""Monitoring: AWS-recommended alarms, the composite alarm, the dashboard and the log groups."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from infra.mock_engine import ProgramRun, ResourceRecord
from infra.settings import InvalidConfig
from infra.tiers import TIERS
from tests.aws_metrics import DOCUMENTED, REST_API_ONLY, is_statistic
from tests.conftest import PROJECT, ROOT, STACKS, RunStack, stack_yaml, unchanged_run

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
COMPOSITE = "aws:cloudwatch/compositeAlarm:CompositeAlarm"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
FILTER = "aws:cloudwatch/logMetricFilter:LogMetricFilter"
DB = "aws:rds/instance:Instance"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
GIB = 1024**3
# vCPUs and GiB of the tiers' default classes, from AWS's instance class table.
CLASS_FACTS = {"db.t4g.micro": (2, 1), "db.t4g.medium": (2, 4), "db.m7g.large": (2, 8)}
SERVICE = "analytics-api"


@pytest.fixture(scope="module")
def runs() -> Callable[[str], ProgramRun]:
    """The repository stacks' runs (tests here only read them)."""
    return unchanged_run


def alarms(run: ProgramRun) -> dict[str, ResourceRecord]:
    """Metric alarms by kind: the name without the `<project>-<stack>-` prefix."""
    prefix = f"{PROJECT}-{run.stack}-"
    return {r.inputs["name"].removeprefix(prefix): r for r in run.of_type(ALARM)}


def _statistic(alarm: ResourceRecord) -> str:
    inputs = alarm.inputs
    assert ("statistic" in inputs) != ("extendedStatistic" in inputs), alarm.name
    return str(inputs.get("statistic") or inputs["extendedStatistic"])


def expected(stack: str) -> dict[str, tuple[str, str, str, str, float]]:
    """kind -> (namespace, metric, statistic, comparison, threshold), from the tier table."""
    tier = TIERS[stack_yaml(stack)["config"]["analytics-platform:environment"]].defaults
    db, m = tier.database, tier.monitoring
    vcpus, gib = CLASS_FACTS[db.instance_class]
    max_connections = min(int(gib * GIB * 0.75 // 9_531_392), 5000)
    rows = {
        "database-cpu": ("AWS/RDS", "CPUUtilization", "Average", "GreaterThanThreshold",
                         m.database.cpu_percent),
        "database-free-storage": ("AWS/RDS", "FreeStorageSpace", "Minimum", "LessThanThreshold",
                                  m.database.free_storage_percent / 100
                                  * db.allocated_storage_gb * GIB),
        "database-freeable-memory": ("AWS/RDS", "FreeableMemory", "Average", "LessThanThreshold",
                                     m.database.freeable_memory_percent / 100 * gib * GIB),
        "database-connections": ("AWS/RDS", "DatabaseConnections", "Maximum",
                                 "GreaterThanThreshold",
                                 int(m.database.connections_percent / 100 * max_connections)),
        "database-read-latency": ("AWS/RDS", "ReadLatency", "p90", "GreaterThanThreshold",
                                  m.database.read_latency_p90_ms / 1000),
        "database-write-latency": ("AWS/RDS", "WriteLatency", "p90", "GreaterThanThreshold",
                                   m.database.write_latency_p90_ms / 1000),
        "api-5xx-rate": ("AWS/ApiGateway", "5xx", "Average", "GreaterThanThreshold",
                         m.api.server_error_rate),
        "api-4xx-rate": ("AWS/ApiGateway", "4xx", "Average", "GreaterThanThreshold",
                         m.api.client_error_rate),
        "api-latency-p90": ("AWS/ApiGateway", "Latency", "p90", "GreaterThanThreshold",
                            m.api.latency_p90_ms),
        f"{SERVICE}-unhealthy-hosts": ("AWS/ApplicationELB", "UnHealthyHostCount", "Maximum",
                                       "GreaterThanThreshold",
                                       m.load_balancer.max_unhealthy_hosts),
        f"{SERVICE}-healthy-hosts": ("AWS/ApplicationELB", "HealthyHostCount", "Minimum",
                                     "LessThanThreshold", 1),
        f"{SERVICE}-preview-unhealthy-hosts": ("AWS/ApplicationELB", "UnHealthyHostCount",
                                               "Maximum", "GreaterThanThreshold",
                                               m.load_balancer.max_unhealthy_hosts),
        f"{SERVICE}-preview-healthy-hosts": ("AWS/ApplicationELB", "HealthyHostCount", "Minimum",
                                             "LessThanThreshold", 1),
        f"{SERVICE}-error-logs": (f"{PROJECT}/{stack}/{SERVICE}", "ErrorLogEvents", "Sum",
                                  "GreaterThanThreshold",
                                  m.service.max_error_logs_per_minute),
    }  # fmt: skip
    if db.performance_insights:
        rows["database-load"] = ("AWS/RDS", "DBLoad", "Average", "GreaterThanThreshold",
                                 vcpus * m.database.load_per_vcpu)  # fmt: skip
    return rows


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_has_the_database_api_and_service_alarms(
    runs: Callable[[str], ProgramRun], stack: str
) -> None:
    run = runs(stack)
    assert set(alarms(run)) == set(expected(stack))
    [composite] = run.of_type(COMPOSITE)
    assert composite.inputs["alarmName"] == f"{PROJECT}-{stack}-{SERVICE}-unhealthy"
    run.one("aws:cloudwatch/dashboard:Dashboard")


def test_db_load_is_alarmed_only_where_performance_insights_publishes_it(
    runs: Callable[[str], ProgramRun],
) -> None:
    assert "database-load" not in alarms(runs("dev"))
    assert "database-load" in alarms(runs("prod"))


@pytest.mark.parametrize("stack", STACKS)
def test_each_alarm_watches_the_documented_metric_with_its_threshold_from_the_tier_table(
    runs: Callable[[str], ProgramRun], stack: str
) -> None:
    run = runs(stack)
    filters = _metric_filters(run)
    for kind, alarm in alarms(run).items():
        namespace, metric, statistic, comparison, threshold = expected(stack)[kind]
        inputs = alarm.inputs
        assert (inputs["namespace"], inputs["metricName"]) == (namespace, metric), kind
        assert _statistic(alarm) == statistic, kind
        assert is_statistic(statistic)
        assert inputs["comparisonOperator"] == comparison, kind
        assert inputs["threshold"] == pytest.approx(threshold), kind
        assert inputs["period"] == 60
        assert 1 <= inputs["datapointsToAlarm"] <= inputs["evaluationPeriods"]
        dimensions = frozenset(inputs.get("dimensions", {}))
        if namespace.startswith("AWS/"):
            assert dimensions in DOCUMENTED[namespace][metric], (kind, dimensions)
        else:  # a metric of our own: published by a metric filter of this stack
            assert (namespace, metric) in filters
            assert not dimensions
        assert not {inputs["metricName"], *dimensions} & REST_API_ONLY


@pytest.mark.parametrize("stack", STACKS)
def test_every_alarm_sends_alarm_and_ok_to_the_alerts_topic(
    runs: Callable[[str], ProgramRun], stack: str
) -> None:
    run = runs(stack)
    topic = run.one("aws:sns/topic:Topic", "alerts-topic").outputs["arn"]
    every = run.of_type(ALARM) + run.of_type(COMPOSITE)
    assert len(every) >= 12
    for alarm in every:
        assert alarm.inputs["alarmActions"] == [topic], alarm.name
        assert alarm.inputs["okActions"] == [topic], alarm.name
        assert alarm.inputs["alarmDescription"].count("Runbook: ") == 1


@pytest.mark.parametrize("stack", STACKS)
def test_every_alarm_chooses_how_missing_data_counts(
    runs: Callable[[str], ProgramRun], stack: str
) -> None:
    found = {kind: a.inputs["treatMissingData"] for kind, a in alarms(runs(stack)).items()}
    # Silence from a target group is an outage; silence from the API is no traffic.
    assert found[f"{SERVICE}-healthy-hosts"] == "breaching"
    assert found["api-5xx-rate"] == "notBreaching"
    assert found["database-cpu"] == "missing"
    assert set(found.values()) <= {"missing", "breaching", "notBreaching", "ignore"}


@pytest.mark.parametrize("stack", STACKS)
def test_alarm_dimensions_name_resources_of_the_same_stack(
    runs: Callable[[str], ProgramRun], stack: str
) -> None:
    run = runs(stack)
    known = _dimension_values(run)
    for kind, alarm in alarms(run).items():
        for key, value in alarm.inputs.get("dimensions", {}).items():
            assert value in known[key], (kind, key, value)


def _dimension_values(run: ProgramRun) -> dict[str, set[str]]:
    return {
        "DBInstanceIdentifier": {r.inputs["identifier"] for r in run.of_type(DB)},
        "ApiId": {r.id for r in run.of_type("aws:apigatewayv2/api:Api")},
        "Stage": {r.inputs["name"] for r in run.of_type("aws:apigatewayv2/stage:Stage")},
        "TargetGroup": {r.outputs["arnSuffix"] for r in run.of_type(TARGET_GROUP)},
        "LoadBalancer": {r.outputs["arnSuffix"] for r in run.of_type(LOAD_BALANCER)},
        "Namespace": {
            r.inputs["metadata"]["name"] for r in run.of_type("kubernetes:core/v1:Namespace")
        },
        "ClusterName": {stack_yaml(run.stack)["config"][f"{PROJECT}:kubernetes"]["clusterName"]},
    }


def _metric_filters(run: ProgramRun) -> set[tuple[str, str]]:
    """(namespace, metric) of every metric the stack's log metric filters publish."""
    return {
        (f.inputs["metricTransformation"]["namespace"], f.inputs["metricTransformation"]["name"])
        for f in run.of_type(FILTER)
    }


def test_thresholds_follow_config_overrides(run_stack: RunStack) -> None:
    run = run_stack(
        "prod",
        overrides={
            "monitoring": {
                "database": {"cpuPercent": 55, "readLatencyP90Ms": 8},
                "api": {"latencyP90Ms": 800, "serverErrorRate": 0.02},
                "loadBalancer": {"maxUnhealthyHosts": 1},
            }
        },
    )
    found = {kind: a.inputs["threshold"] for kind, a in alarms(run).items()}
    assert found["database-cpu"] == 55
    assert found["database-read-latency"] == pytest.approx(0.008)
    assert found["api-latency-p90"] == 800
    assert found["api-5xx-rate"] == pytest.approx(0.02)
    assert found[f"{SERVICE}-unhealthy-hosts"] == 1
    # what was not overridden keeps the tier's value
    prod = TIERS["prod"].defaults.monitoring
    assert found["api-4xx-rate"] == pytest.approx(prod.api.client_error_rate)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"api": {"serverErrorRate": 5}}, r"monitoring\.api\.serverErrorRate = 5: allowed: "),
        ({"database": {"cpuPercent": 0}}, r"monitoring\.database\.cpuPercent = 0: allowed: "),
        ({"database": {"cpuPct": 80}}, r"monitoring\.database\.cpuPct = 80: unknown key"),
    ],
)
def test_a_bad_threshold_is_a_clear_config_error(
    run_stack: RunStack, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidConfig, match=rf"stack dev: analytics-platform:{message}"):
        run_stack("dev", overrides={"monitoring": override})


def test_composite_alarm_combines_the_services_health_alarms_but_not_4xx(
    runs: Callable[[str], ProgramRun],
) -> None:
    run = runs("prod")
    arns = {kind: a.outputs["arn"] for kind, a in alarms(run).items()}
    rule = run.one(COMPOSITE).inputs["alarmRule"]
    members = re.findall(r'ALARM\("([^"]+)"\)', rule)
    assert rule == " OR ".join(f'ALARM("{arn}")' for arn in members)
    assert set(members) == {
        arns[k]
        for k in ("api-5xx-rate", "api-latency-p90", f"{SERVICE}-error-logs",
                  f"{SERVICE}-healthy-hosts", f"{SERVICE}-unhealthy-hosts")
    }  # fmt: skip


def test_each_service_gets_its_log_group_error_alarm_and_composite(run_stack: RunStack) -> None:
    services = copy.deepcopy(stack_yaml("staging")["config"]["analytics-platform:services"])
    services.append({"name": "reports", "blue": {"version": "1.0.0"},
                     "green": {"version": "1.0.0"}})  # fmt: skip
    run = run_stack("staging", overrides={"services": services})
    group = run.one(LOG_GROUP, "monitoring-logs-reports")
    assert group.inputs["name"] == "/analytics-platform/staging/reports"
    assert "reports-error-logs" in alarms(run)
    # no load balancer in front of it: no host alarms
    assert "reports-healthy-hosts" not in alarms(run)
    composites = {c.inputs["alarmName"]: c for c in run.of_type(COMPOSITE)}
    reports = composites[f"{PROJECT}-staging-reports-unhealthy"]
    assert (
        reports.inputs["alarmRule"]
        == f'ALARM("{alarms(run)["reports-error-logs"].outputs["arn"]}")'
    )
    assert run.outputs["applicationLogGroups"]["reports"] == "/analytics-platform/staging/reports"


@pytest.mark.parametrize(("stack", "days"), [("dev", 7), ("staging", 30), ("prod", 365)])
def test_log_groups_exist_first_with_the_tiers_retention_and_the_platform_key(
    runs: Callable[[str], ProgramRun], stack: str, days: int
) -> None:
    run = runs(stack)
    key = run.one("aws:kms/key:Key", "platform-key").outputs["arn"]
    groups = {g.inputs["name"]: g for g in run.of_type(LOG_GROUP)}
    db_id = run.one(DB).inputs["identifier"]
    assert set(groups) == {
        f"/aws/rds/instance/{db_id}/postgresql",
        f"/aws/rds/instance/{db_id}/upgrade",
        f"/aws/apigateway/{PROJECT}-{stack}-api/access",
        f"/{PROJECT}/{stack}/{SERVICE}",
    } | ({f"/{PROJECT}/{stack}/chaos"} if TIERS[stack].defaults.chaos.enabled else set())
    for group in groups.values():
        assert group.inputs["retentionInDays"] == days
        assert group.inputs["kmsKeyId"] == key
        assert group.protect is (stack == "prod")
    # RDS writes its exports only after its log groups exist.
    database = run.one(DB)
    for export in ("postgresql", "upgrade"):
        assert groups[f"/aws/rds/instance/{db_id}/{export}"].urn in database.dependencies


def test_the_platform_key_lets_cloudwatch_logs_of_this_region_and_account_use_it(
    runs: Callable[[str], ProgramRun],
) -> None:
    policy = json.loads(runs("prod").one("aws:kms/key:Key", "platform-key").inputs["policy"])
    [logs] = [s for s in policy["Statement"] if s["Sid"] == "AllowCloudWatchLogsOfThisAccount"]
    assert logs["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}
    assert {"kms:Encrypt*", "kms:Decrypt*", "kms:GenerateDataKey*"} <= set(logs["Action"])
    assert logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"] == (
        "arn:aws:logs:eu-west-1:123456789012:log-group:*"
    )


def _dashboard(run: ProgramRun) -> dict[str, Any]:
    record = run.one("aws:cloudwatch/dashboard:Dashboard")
    assert record.inputs["dashboardName"] == f"{PROJECT}-{run.stack}-monitoring-dashboard"
    return json.loads(record.inputs["dashboardBody"])


@pytest.mark.parametrize("stack", STACKS)
def test_every_dashboard_metric_is_documented_and_names_a_resource_of_the_stack(
    runs: Callable[[str], ProgramRun], stack: str
) -> None:
    run = runs(stack)
    known = _dimension_values(run)
    filters = _metric_filters(run)
    metrics = [
        entry
        for widget in _dashboard(run)["widgets"]
        if widget["type"] == "metric"
        for entry in widget["properties"]["metrics"]
    ]
    assert len(metrics) >= 12
    ids = {entry[-1].get("id") for entry in metrics}
    for entry in metrics:
        if len(entry) == 1:  # metric math over the widget's hidden metrics
            assert set(re.findall(r"[a-z][A-Za-z]*", entry[0]["expression"])) <= ids, entry
            continue
        namespace, name, *pairs, options = entry
        dimensions = dict(zip(pairs[::2], pairs[1::2], strict=True))
        assert is_statistic(options["stat"]), entry
        if namespace in DOCUMENTED:
            assert frozenset(dimensions) in DOCUMENTED[namespace][name], entry
            for key, value in dimensions.items():
                assert value in known[key], entry
        else:
            assert (namespace, name) in filters, entry


@pytest.mark.parametrize("stack", STACKS)
def test_dashboard_shows_api_database_hosts_and_every_alarms_status(
    runs: Callable[[str], ProgramRun], stack: str
) -> None:
    run = runs(stack)
    widgets = _dashboard(run)["widgets"]
    shown = {
        (entry[0], entry[1])
        for w in widgets
        if w["type"] == "metric"
        for entry in w["properties"]["metrics"]
        if len(entry) > 1
    }
    assert {("AWS/ApiGateway", m) for m in ("Count", "5xx", "4xx", "Latency")} <= shown
    # What an operator reads, top to bottom (the third widget is the traces' markdown links).
    assert [w["properties"].get("title") for w in widgets] == [
        "API traffic and errors", "API latency (ms)", None, "Database CPU (%)",
        "Database connections", "Database free storage (bytes)", "Database latency p90 (s)",
        "Target groups: requests and 5xx", "Target groups: response time p95 (s)",
        f"{SERVICE}: hosts and errors", "Right-sizing: database headroom",
        f"Right-sizing: {SERVICE} pods against limits (%)",
        f"Right-sizing: {SERVICE} pods against requests (%)", "Alarm status",
    ]  # fmt: skip
    [traffic] = [w for w in widgets if w["properties"].get("title") == "API traffic and errors"]
    assert [(m[1], m[-1]["stat"], m[-1]["label"]) for m in traffic["properties"]["metrics"]] == [
        ("Count", "Sum", "Requests"),
        ("5xx", "Sum", "5xx"),
        ("4xx", "Sum", "4xx"),
    ]
    database = ("CPUUtilization", "DatabaseConnections", "FreeStorageSpace", "ReadLatency",
                "WriteLatency")  # fmt: skip
    assert {("AWS/RDS", m) for m in database} <= shown
    assert ("AWS/ApplicationELB", "HealthyHostCount") in shown
    [status] = [w for w in widgets if w["type"] == "alarm"]
    every = {a.outputs["arn"] for a in run.of_type(ALARM) + run.of_type(COMPOSITE)}
    assert set(status["properties"]["alarms"]) == every
    for widget in widgets:
        assert widget["x"] + widget["width"] <= 24
        if widget["type"] == "metric":
            assert widget["properties"]["region"] == "eu-west-1"
    places = [(w["x"], w["y"]) for w in widgets]
    assert len(places) == len(set(places))


def test_readme_runbook_lists_every_alarm_with_what_to_do(
    runs: Callable[[str], ProgramRun],
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Alarm runbook", 1)[1].split("\n## ", 1)[0]
    rows = {
        cells[0].strip("` "): cells
        for line in section.splitlines()
        if line.startswith("| `")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    run = runs("prod")
    every = {**alarms(run), f"{SERVICE}-unhealthy": run.one(COMPOSITE)}
    for kind, alarm in every.items():
        row = kind.replace(SERVICE, "<service>")
        assert row in rows, f"README runbook has no row for {row}"
        # The page carries the same "what to do" as the README.
        runbook = alarm.inputs["alarmDescription"].split("Runbook: ", 1)[1]
        assert rows[row][-1].replace("`", "") == runbook.replace(SERVICE, "<service>").replace(
            "`", ""
        ), row


def test_the_canary_target_group_has_its_own_host_alarms_and_dashboard_panels(
    runs: Callable[[str], ProgramRun],
) -> None:
    """Target-group metrics carry `TargetGroup` and `LoadBalancer` (Elastic Load Balancing,
    "CloudWatch metrics for your Application Load Balancer"): the canary group's alarms and
    panels name the canary group itself, and its alarms stay out of the service's composite
    (the idle color serves no user at rest)."""
    run = runs("prod")
    preview = run.one(TARGET_GROUP, "api-analytics-api-preview").outputs["arnSuffix"]
    stable = run.one(TARGET_GROUP, "api-analytics-api").outputs["arnSuffix"]
    lb = run.one(LOAD_BALANCER).outputs["arnSuffix"]
    found = alarms(run)
    for kind in (f"{SERVICE}-preview-healthy-hosts", f"{SERVICE}-preview-unhealthy-hosts"):
        assert found[kind].inputs["dimensions"] == {"TargetGroup": preview, "LoadBalancer": lb}
    assert found[f"{SERVICE}-healthy-hosts"].inputs["dimensions"]["TargetGroup"] == stable
    rule = run.one(COMPOSITE).inputs["alarmRule"]
    assert found[f"{SERVICE}-preview-healthy-hosts"].outputs["arn"] not in rule
    panels = {w["properties"]["title"]: w["properties"]["metrics"]
              for w in _dashboard(run)["widgets"] if w["type"] == "metric"}  # fmt: skip
    requests = panels["Target groups: requests and 5xx"]
    shown = {(m[1], m[3]) for m in requests}
    assert shown == {(metric, group) for group in (stable, preview)
                     for metric in ("RequestCount", "HTTPCode_Target_5XX_Count")}  # fmt: skip
    latency = panels["Target groups: response time p95 (s)"]
    assert {(m[1], m[3], m[-1]["stat"]) for m in latency} == {
        ("TargetResponseTime", stable, "p95"), ("TargetResponseTime", preview, "p95")
    }  # fmt: skip


@pytest.mark.parametrize("stack", STACKS)
def test_storage_nearing_the_autoscaling_ceiling_pages_through_rds_events(
    run_stack: RunStack, stack: str
) -> None:
    """ "Managing capacity automatically with Amazon RDS storage autoscaling": RDS grows storage
    when less than 10 % is free, up to the maximum storage threshold, and notifies when the
    allocation nears that maximum (RDS-EVENT-0224/0225) or autoscaling cannot act (0223);
    "Amazon RDS event categories and event messages" puts these, storage full (0007) and 90 %
    used (0089) under "low storage". No CloudWatch metric carries the allocated storage, so the
    FreeStorageSpace alarm alone, a share of the first allocation, cannot see the ceiling."""
    run = run_stack(stack)
    [subscription] = run.of_type("aws:rds/eventSubscription:EventSubscription")
    assert subscription.inputs["snsTopic"] == run.outputs["alertsTopicArn"]
    assert subscription.inputs["sourceType"] == "db-instance"
    instance = run.one("aws:rds/instance:Instance")
    assert subscription.inputs["sourceIds"] == [instance.id]
    # RDS refuses a subscription to a source that does not exist yet (SourceNotFound).
    assert instance.urn in subscription.dependencies
    assert subscription.inputs["eventCategories"] == ["low storage"]
    db = run.one("aws:rds/instance:Instance").inputs
    [alarm] = [a for a in run.of_type(ALARM) if a.name == "monitoring-database-free-storage"]
    assert f"up to {db['maxAllocatedStorage']:g} GiB" in alarm.inputs["alarmDescription"]
    assert alarm.inputs["threshold"] < 0.1 * db["allocatedStorage"] * GIB + 1


def _widget(run: ProgramRun, title: str) -> dict[str, Any]:
    [widget] = [w for w in _dashboard(run)["widgets"] if w["properties"].get("title") == title]
    return widget


@pytest.mark.parametrize(("stack", "memory_gib"), [("dev", 1), ("staging", 4), ("prod", 8)])
def test_the_dashboard_shows_the_databases_headroom_against_its_class(
    runs: Callable[[str], ProgramRun], stack: str, memory_gib: int
) -> None:
    """CloudWatch "Use metric math" (expressions over metrics with `id`, hidden with
    `visible: false`) and the RDS metrics `CPUUtilization` (%) and `FreeableMemory` (bytes):
    the busiest minute's unused CPU and the lowest free memory as a share of the class's memory,
    what a smaller or larger class would be chosen by."""
    metrics = _widget(runs(stack), "Right-sizing: database headroom")["properties"]["metrics"]
    identifier = f"{PROJECT}-{stack}-database"
    assert metrics == [
        ["AWS/RDS", "CPUUtilization", "DBInstanceIdentifier", identifier,
         {"id": "cpu", "label": "CPU", "stat": "Maximum", "visible": False}],
        [{"expression": "100 - cpu", "id": "cpuHeadroom", "label": "CPU headroom (%)"}],
        ["AWS/RDS", "FreeableMemory", "DBInstanceIdentifier", identifier,
         {"id": "memory", "label": "Freeable memory", "stat": "Minimum", "visible": False}],
        [{"expression": f"100 * memory / {memory_gib * 1024**3}", "id": "memoryHeadroom",
          "label": "Memory headroom (% of class)"}],
    ]  # fmt: skip


@pytest.mark.parametrize("stack", STACKS)
def test_the_dashboard_shows_each_services_pods_against_their_limits_and_requests(
    runs: Callable[[str], ProgramRun], stack: str
) -> None:
    """ "Amazon EKS and Kubernetes Container Insights metrics": pod usage is published as
    metrics only over the pods' limits (`pod_cpu_utilization_over_pod_limit`,
    `pod_memory_utilization_over_pod_limit`, per Namespace and ClusterName); "Relevant fields
    in performance log events for Amazon EKS and Kubernetes": `pod_cpu_usage_total`,
    `pod_cpu_request`, `pod_memory_working_set`, `pod_memory_request` are log fields of
    `/aws/containerinsights/<cluster>/performance`, so usage over requests is a Logs Insights
    query (dashboard `log` widget, `SOURCE '<group>' | ...`)."""
    run = runs(stack)
    cluster = stack_yaml(stack)["config"][f"{PROJECT}:kubernetes"]["clusterName"]
    limits = _widget(run, "Right-sizing: analytics-api pods against limits (%)")
    assert {(m[1], m[-1]["stat"]) for m in limits["properties"]["metrics"]} == {
        (f"pod_{kind}_utilization_over_pod_limit", stat)
        for kind in ("cpu", "memory")
        for stat in ("Average", "Maximum")
    }
    for metric in limits["properties"]["metrics"]:
        assert metric[:1] + metric[2:6] == [
            "ContainerInsights", "Namespace", "analytics-api", "ClusterName", cluster
        ]  # fmt: skip
    requests = _widget(run, "Right-sizing: analytics-api pods against requests (%)")
    assert requests["type"] == "log"
    query = requests["properties"]["query"]
    assert query.startswith(f"SOURCE '/aws/containerinsights/{cluster}/performance' |")
    assert 'filter Type = "Pod" and Namespace = "analytics-api"' in query
    assert "100 * pod_cpu_usage_total / pod_cpu_request" in query
    assert "100 * pod_memory_working_set / pod_memory_request" in query


@pytest.mark.parametrize("stack", STACKS)
def test_the_services_error_lines_become_the_metric_its_alarm_watches(
    runs: Callable[[str], ProgramRun],
    stack: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CloudWatch Logs, "Filter pattern syntax for metric filters": `{ $.level = "error" }`
    matches a JSON log event whose `level` is exactly "error"; each match adds the metric
    transformation's value (1) to the metric the service's error alarm reads. The app writes
    one JSON object a line, `level` first (app/analytics_api.py, log)."""
    monkeypatch.syspath_prepend(str(ROOT / "app"))
    from analytics_api import log  # pyright: ignore[reportMissingImports]

    run = runs(stack)
    [error_filter] = run.of_type(FILTER)
    group = f"/{PROJECT}/{stack}/{SERVICE}"
    assert error_filter.inputs["name"] == f"{PROJECT}-{stack}-monitoring-{SERVICE}-errors"
    assert error_filter.inputs["logGroupName"] == group
    assert error_filter.inputs["pattern"] == '{ $.level = "error" }'
    transformation = error_filter.inputs["metricTransformation"]
    alarm = alarms(run)[f"{SERVICE}-error-logs"].inputs
    assert (transformation["namespace"], transformation["name"]) == (
        alarm["namespace"],
        alarm["metricName"],
    )
    assert (transformation["value"], transformation["unit"]) == ("1", "Count")
    log("error", event="request failed")
    assert json.loads(capsys.readouterr().err)["level"] == "error"
