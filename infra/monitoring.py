"""Monitoring: the alarms AWS recommends, one dashboard per stack, and the services' log groups.

Every alarm sends ALARM and OK to the alerts topic. The metric names and dimensions are those of
HTTP APIs (`5xx`, `4xx`, `Latency` with `ApiId` and `Stage`), not REST APIs' (`5XXError`,
`ApiName`): an alarm on a metric that is never published can never fire.

Thresholds come from the tier table (`infra/tiers.py`, `monitoring.*`) and can be overridden in
config; the metrics, statistics, periods and evaluation windows are here, as AWS recommends them.
Alarms and the dashboard build their metrics with the same functions (`rds_metric`,
`api_metric`), and the services' panels show exactly their alarms' metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_aws as aws

from infra.component import PlatformComponent, StackContext
from infra.rds_classes import InstanceClass
from infra.settings import MonitoringSettings
from infra.tracing import annotation_key, traces_console_url

PERIOD_SECONDS = 60
GIB = 1024**3
ERROR_LOG_PATTERN = '{ $.level = "error" }'
ERROR_LOG_METRIC = "ErrorLogEvents"
# RDS event categories sent to the alerts topic ("Amazon RDS event categories and event messages").
STORAGE_EVENT_CATEGORIES = ("low storage",)
COMPOSITE_RUNBOOK = (
    "Open the stack's dashboard; the alarm status widget shows which member alarm fired. "
    "Follow that alarm's runbook."
)

Comparison = Literal[
    "GreaterThanThreshold",
    "GreaterThanOrEqualToThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
]
MissingData = Literal["missing", "ignore", "breaching", "notBreaching"]


@dataclass(frozen=True)
class Metric:
    """One CloudWatch metric with its dimensions and the statistic read from it."""

    namespace: str
    name: str
    dimensions: Mapping[str, pulumi.Input[str]]
    # Average, Sum, Minimum, Maximum, SampleCount, or a percentile such as p90.
    statistic: str
    label: str
    # Set when a metric-math expression of the same widget reads it; hidden then.
    math_id: str | None = None

    @property
    def is_percentile(self) -> bool:
        return self.statistic.startswith("p")

    def widget_entry(self) -> list[Any]:
        """The dashboard body's form: [namespace, name, dim, value, ..., {options}]."""
        entry: list[Any] = [self.namespace, self.name]
        for key, value in self.dimensions.items():
            entry += [key, value]
        options: dict[str, Any] = {"stat": self.statistic, "label": self.label}
        if self.math_id is not None:
            options |= {"id": self.math_id, "visible": False}
        return [*entry, options]


@dataclass(frozen=True)
class Expression:
    """A CloudWatch metric-math line over the hidden metrics of its widget."""

    math_id: str
    expression: str
    label: str

    def widget_entry(self) -> list[Any]:
        return [{"expression": self.expression, "label": self.label, "id": self.math_id}]


def database_headroom(db: WatchedDatabase) -> list[Metric | Expression]:
    """What the instance leaves unused at its busiest: the right-sizing signal for its class."""
    memory = db.instance_class.memory_bytes
    return [
        rds_metric(db, "CPUUtilization", "Maximum", "CPU", math_id="cpu"),
        Expression("cpuHeadroom", "100 - cpu", "CPU headroom (%)"),
        rds_metric(db, "FreeableMemory", "Minimum", "Freeable memory", math_id="memory"),
        Expression("memoryHeadroom", f"100 * memory / {memory}", "Memory headroom (% of class)"),
    ]


def pods_against_limits(cluster: str, service: str) -> list[Metric | Expression]:
    """Container Insights publishes pod usage as metrics only against limits, per namespace."""
    dims = {"Namespace": service, "ClusterName": cluster}
    return [
        Metric("ContainerInsights", f"pod_{kind}_utilization_over_pod_limit", dims, stat, label)
        for kind in ("cpu", "memory")
        for stat, label in (("Average", f"{kind} average"), ("Maximum", f"{kind} peak minute"))
    ]


def pods_against_requests_query(cluster: str, service: str) -> str:
    """Usage over requests exists only in Container Insights' performance log events
    (`pod_cpu_request`, `pod_memory_request`), so a Logs Insights query computes it."""
    return (
        f"SOURCE '/aws/containerinsights/{cluster}/performance' "
        f'| filter Type = "Pod" and Namespace = "{service}" '
        "| stats avg(100 * pod_cpu_usage_total / pod_cpu_request) as cpuOfRequest, "
        "avg(100 * pod_memory_working_set / pod_memory_request) as memoryOfRequest by bin(5m)"
    )


@dataclass(frozen=True)
class AlarmSpec:
    """A metric alarm, as data. `kind` names it in the README's runbook table."""

    kind: str
    metric: Metric
    comparison: Comparison
    threshold: float
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing_data: MissingData
    summary: str
    runbook: str


@dataclass(frozen=True)
class WatchedDatabase:
    identifier: str
    instance_class: InstanceClass
    allocated_storage_gb: int
    # Storage autoscaling's ceiling.
    max_allocated_storage_gb: int
    # The identifier as the created instance reports it: RDS refuses an event subscription to
    # a source that does not exist yet (SourceNotFound).
    instance_identifier: pulumi.Input[str]
    # DBLoad is published only while Performance Insights is on.
    performance_insights: bool


@dataclass(frozen=True)
class WatchedApi:
    api_id: pulumi.Input[str]
    stage: pulumi.Input[str]
    # The service the API fronts.
    service: str
    load_balancer_arn_suffix: pulumi.Input[str]
    # Per API-fronted service: the stable target group (active Service) ...
    target_group_arn_suffixes: Mapping[str, pulumi.Input[str]]
    # ... and the canary target group (preview Service).
    preview_target_group_arn_suffixes: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


def rds_metric(
    db: WatchedDatabase, name: str, statistic: str, label: str, math_id: str | None = None
) -> Metric:
    dims = {"DBInstanceIdentifier": db.identifier}
    return Metric("AWS/RDS", name, dims, statistic, label, math_id)


def api_metric(api: WatchedApi, name: str, statistic: str, label: str) -> Metric:
    """An HTTP API metric of the stage (HTTP APIs: `ApiId` and `Stage`, not REST's `ApiName`)."""
    dims = {"ApiId": api.api_id, "Stage": api.stage}
    return Metric("AWS/ApiGateway", name, dims, statistic, label)


def database_alarms(db: WatchedDatabase, settings: MonitoringSettings) -> list[AlarmSpec]:
    """AWS's recommended RDS alarms, with thresholds scaled to the instance class."""
    t = settings.database

    def rds(name: str, statistic: str, label: str) -> Metric:
        return rds_metric(db, name, statistic, label)

    # RDS publishes these every minute while the instance runs. A gap means it is stopped,
    # rebooting or failing over: the API and load balancer alarms page for that, so a gap here
    # is left as INSUFFICIENT_DATA (visible on the dashboard) instead of a page with the wrong
    # cause ("missing").
    alarms = [
        AlarmSpec(
            "database-cpu",
            rds("CPUUtilization", "Average", "CPU %"),
            "GreaterThanThreshold",
            t.cpu_percent,
            5,
            5,
            "missing",
            f"Database CPU above {t.cpu_percent:g}% for 5 minutes.",
            "Find the top statements in Performance Insights; tune or kill them, "
            "or move to a larger instance class.",
        ),
        AlarmSpec(
            "database-free-storage",
            rds("FreeStorageSpace", "Minimum", "Free storage (bytes)"),
            "LessThanThreshold",
            # An absolute floor: autoscaling keeps at least 10 % of the current allocation free
            # until it reaches its ceiling, so less than this share of the first allocation
            # free means it has not kept up (six hours between modifications) or cannot grow.
            # Nearing the ceiling itself is RDS's own "low storage" event (storage_events).
            t.free_storage_percent / 100 * db.allocated_storage_gb * GIB,
            5,
            5,
            "missing",
            f"Less than {t.free_storage_percent / 100 * db.allocated_storage_gb:g} GiB free: "
            f"storage autoscaling (up to {db.max_allocated_storage_gb} GiB) has not kept up "
            "or has reached its ceiling.",
            "Check the database's events for storage autoscaling (RDS-EVENT-0223 to 0225); raise "
            "maxAllocatedStorageGb, or find what grows (bloat, WAL, temp files).",
        ),
        AlarmSpec(
            "database-freeable-memory",
            rds("FreeableMemory", "Average", "Freeable memory (bytes)"),
            "LessThanThreshold",
            t.freeable_memory_percent / 100 * db.instance_class.memory_bytes,
            15,
            15,
            "missing",
            f"Freeable memory below {t.freeable_memory_percent:g}% of the instance's memory.",
            "Look for too many connections or large work_mem sorts; scale up the instance class "
            "if the working set has grown.",
        ),
        AlarmSpec(
            "database-connections",
            rds("DatabaseConnections", "Maximum", "Connections"),
            "GreaterThanThreshold",
            int(t.connections_percent / 100 * db.instance_class.max_connections),
            5,
            5,
            "missing",
            f"Connections above {t.connections_percent:g}% of max_connections "
            f"(about {db.instance_class.max_connections}).",
            "Find the client holding connections (pg_stat_activity); check pool sizes "
            "and replica counts.",
        ),
        AlarmSpec(
            "database-read-latency",
            rds("ReadLatency", "p90", "Read latency p90 (s)"),
            "GreaterThanThreshold",
            t.read_latency_p90_ms / 1000,
            5,
            5,
            "missing",
            f"p90 read latency above {t.read_latency_p90_ms:g} ms.",
            "Check read IOPS and throughput against gp3 limits and for sequential scans; "
            "add indexes or provision more IOPS.",
        ),
        AlarmSpec(
            "database-write-latency",
            rds("WriteLatency", "p90", "Write latency p90 (s)"),
            "GreaterThanThreshold",
            t.write_latency_p90_ms / 1000,
            5,
            5,
            "missing",
            f"p90 write latency above {t.write_latency_p90_ms:g} ms.",
            "Check write IOPS, checkpoints and autovacuum; provision more IOPS "
            "or batch the writes.",
        ),
    ]
    if db.performance_insights:
        # DBLoad exists only with Performance Insights; without it the alarm could never fire.
        alarms.append(
            AlarmSpec(
                "database-load",
                rds("DBLoad", "Average", "Average active sessions"),
                "GreaterThanThreshold",
                db.instance_class.vcpus * t.load_per_vcpu,
                15,
                15,
                "missing",
                f"More active sessions than {t.load_per_vcpu:g} per vCPU "
                f"({db.instance_class.vcpus} vCPUs) for 15 minutes.",
                "Open Performance Insights: the top wait events say whether it is CPU, I/O "
                "or locks; fix the top statement.",
            )
        )
    return alarms


def api_alarms(api: WatchedApi, settings: MonitoringSettings) -> list[AlarmSpec]:
    """HTTP API alarms: the Average of 5xx / 4xx is the share of requests that failed."""
    t = settings.api

    def gateway(name: str, statistic: str, label: str) -> Metric:
        return api_metric(api, name, statistic, label)

    # HTTP APIs publish nothing for a minute without requests: no traffic is no errors and
    # no latency ("notBreaching"); a dead backend still shows as 5xx from the gateway.
    return [
        AlarmSpec(
            "api-5xx-rate",
            gateway("5xx", "Average", "5xx rate"),
            "GreaterThanThreshold",
            t.server_error_rate,
            3,
            3,
            "notBreaching",
            f"More than {t.server_error_rate:.0%} of requests answered 5xx for 3 minutes.",
            "Check the service's pods and the last release; `python -m infra.release rollback` "
            "if it started with a promotion.",
        ),
        AlarmSpec(
            "api-4xx-rate",
            gateway("4xx", "Average", "4xx rate"),
            "GreaterThanThreshold",
            t.client_error_rate,
            5,
            5,
            "notBreaching",
            f"More than {t.client_error_rate:.0%} of requests answered 4xx for 5 minutes.",
            "Look at the access logs' routeKey and status: a client bug, a removed route, "
            "or throttling (429).",
        ),
        AlarmSpec(
            "api-latency-p90",
            gateway("Latency", "p90", "Latency p90 (ms)"),
            "GreaterThanThreshold",
            t.latency_p90_ms,
            5,
            5,
            "notBreaching",
            f"p90 latency above {t.latency_p90_ms:g} ms for 5 minutes.",
            "Compare with IntegrationLatency: if the backend is slow, check the database "
            "alarms and the pods' CPU; otherwise check throttling.",
        ),
    ]


def target_group_metric(
    api: WatchedApi, target_group: pulumi.Input[str], name: str, statistic: str, label: str
) -> Metric:
    """A target group's metric (AWS/ApplicationELB: `TargetGroup` with `LoadBalancer`)."""
    dims = {"TargetGroup": target_group, "LoadBalancer": api.load_balancer_arn_suffix}
    return Metric("AWS/ApplicationELB", name, dims, statistic, label)


def target_group_alarms(
    service: str,
    load_balancer: pulumi.Input[str],
    target_group: pulumi.Input[str],
    settings: MonitoringSettings,
    preview: bool = False,
) -> list[AlarmSpec]:
    """Host alarms of one target group: the stable one (the active Service) or the canary one
    (the preview Service, which must stay healthy for a canary, a promote or a rollback)."""
    dims = {"TargetGroup": target_group, "LoadBalancer": load_balancer}
    limit = settings.load_balancer.max_unhealthy_hosts
    kind = f"{service}-preview" if preview else service
    color = "idle (preview)" if preview else "active"
    impact, remedy = (
        ("a canary, promote or rollback to the idle color would fail",
         "deploy a working image to the idle color.")
        if preview
        else ("the API cannot reach it", "roll back if a switch caused it.")
    )  # fmt: skip
    return [
        AlarmSpec(
            f"{kind}-unhealthy-hosts",
            Metric("AWS/ApplicationELB", "UnHealthyHostCount", dims, "Maximum", "Unhealthy"),
            "GreaterThanThreshold",
            limit,
            3,
            3,
            # The healthy-hosts alarm covers a target group that reports nothing at all.
            "notBreaching",
            f"More than {limit} of {service}'s nodes fail the /health/ready check of the "
            f"{color} color.",
            f"kubectl -n <service> get pods: are the {color} color's pods ready? Check the "
            "NodePort and the nodes' security group.",
        ),
        AlarmSpec(
            f"{kind}-healthy-hosts",
            Metric("AWS/ApplicationELB", "HealthyHostCount", dims, "Minimum", "Healthy"),
            "LessThanThreshold",
            1,
            3,
            3,
            # The load balancer reports its target groups every minute; silence means the
            # target group lost its targets or its load balancer.
            "breaching",
            f"No healthy target behind the {color} color of {service}: {impact}.",
            "Check the TargetGroupBinding and the AWS Load Balancer Controller's logs, then "
            f"the {'preview' if preview else 'active'} Service's selector; {remedy}",
        ),
    ]


def service_error_alarm(service: str, namespace: str, settings: MonitoringSettings) -> AlarmSpec:
    limit = settings.service.max_error_logs_per_minute
    return AlarmSpec(
        f"{service}-error-logs",
        Metric(namespace, ERROR_LOG_METRIC, {}, "Sum", "Error log events"),
        "GreaterThanThreshold",
        limit,
        3,
        3,
        # The metric filter publishes only when error lines are logged: silence is no errors.
        "notBreaching",
        f"{service} logs more than {limit} errors a minute.",
        "Read the service's log group for the error; roll back if it began with a release.",
    )


@dataclass
class _Layout:
    """Places widgets left to right, two to a row, on CloudWatch's 24-column grid."""

    width: int = 12
    height: int = 6
    _next: int = 0
    widgets: list[dict[str, Any]] = field(default_factory=list)

    def add(self, widget_type: str, properties: dict[str, Any], full_row: bool = False) -> None:
        if full_row and self._next % 2:
            self._next += 1
        column, row = self._next % 2, self._next // 2
        self.widgets.append(
            {
                "type": widget_type,
                "x": 0 if full_row else column * self.width,
                "y": row * self.height,
                "width": 24 if full_row else self.width,
                "height": self.height,
                "properties": properties,
            }
        )
        self._next += 2 if full_row else 1


class Monitoring(PlatformComponent):
    dashboard_name: pulumi.Output[str]
    application_log_groups: dict[str, pulumi.Output[str]]
    alarm_arns: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        settings: MonitoringSettings,
        *,
        region: str,
        topic_arn: pulumi.Input[str],
        logs_key_arn: pulumi.Input[str],
        database: WatchedDatabase,
        api: WatchedApi,
        services: Sequence[str],
        ctx: StackContext,
        sampling_ratio: float,
        cluster_name: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("monitoring:Monitoring", name, ctx, opts)
        self._cluster_name = cluster_name
        self._settings = settings
        self._sampling_ratio = sampling_ratio
        self._topic_arn = topic_arn
        self.alarm_arns = {}
        self.application_log_groups = {}
        specs_by_service: dict[str, list[AlarmSpec]] = {}

        for service in services:
            # The cluster's log shipper writes each namespace (= service) here.
            group = self.log_group(
                f"{name}-logs-{service}", f"/{ctx.project}/{ctx.stack}/{service}", logs_key_arn
            )
            self.application_log_groups[service] = group.name
            metric_namespace = f"{ctx.project}/{ctx.stack}/{service}"
            aws.cloudwatch.LogMetricFilter(
                f"{name}-{service}-errors",
                name=self.physical_name(f"{service}-errors", max_length=512),
                log_group_name=group.name,
                pattern=ERROR_LOG_PATTERN,
                metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                    name=ERROR_LOG_METRIC, namespace=metric_namespace, value="1", unit="Count"
                ),
                opts=self.child_opts(),
            )
            specs_by_service[service] = [service_error_alarm(service, metric_namespace, settings)]

        for service, suffix in api.target_group_arn_suffixes.items():
            specs_by_service.setdefault(service, []).extend(
                target_group_alarms(service, api.load_balancer_arn_suffix, suffix, settings)
            )
        # The canary target group alarms on its own: the idle color serves no user at rest, so
        # it does not make the service unhealthy, but it must be fit to take traffic.
        preview_specs = [
            spec
            for service, suffix in api.preview_target_group_arn_suffixes.items()
            for spec in target_group_alarms(
                service, api.load_balancer_arn_suffix, suffix, settings, preview=True
            )
        ]
        platform_specs = (
            database_alarms(database, settings) + api_alarms(api, settings) + preview_specs
        )
        for spec in platform_specs:
            self._alarm(spec)
        for service, specs in specs_by_service.items():
            members = [self._alarm(spec) for spec in specs]
            if service == api.service:
                # 4xx are the clients' doing; they page on their own but don't make the
                # service unhealthy.
                members += [self.alarm_arns["api-5xx-rate"], self.alarm_arns["api-latency-p90"]]
            self._composite(service, members)

        self._storage_events(database)
        dashboard = aws.cloudwatch.Dashboard(
            name,
            dashboard_name=self.physical_name("dashboard", max_length=255),
            dashboard_body=pulumi.Output.from_input(
                self._dashboard(region, database, api, specs_by_service)
            ).apply(lambda body: json.dumps(body, sort_keys=True)),
            opts=self.child_opts(),
        )
        self.dashboard_name = dashboard.dashboard_name
        self.finish(
            {
                "dashboardName": self.dashboard_name,
                "applicationLogGroups": self.application_log_groups,
                "alarmArns": self.alarm_arns,
            }
        )

    def _traces_markdown(self, region: str, service: str) -> str:
        """Links from the latency panels to the traces behind them: the X-Ray console's trace
        list, filtered ("Using filter expressions", "Console deep linking", X-Ray Developer
        Guide) to the service's requests slower than its latency alarm, per color by the
        annotation the collector indexes (infra/tracing.py)."""
        slow_seconds = f"{self._settings.api.latency_p90_ms / 1000:g}"
        slow = f'service("{service}") {{ responsetime > {slow_seconds} }}'
        color = annotation_key("deployment.color")
        by_color = {c: f'{slow} AND annotation.{color} = "{c}"' for c in ("blue", "green")}
        links = [f"[all colors]({traces_console_url(region, slow)})"] + [
            f"[{c}]({traces_console_url(region, expression)})" for c, expression in by_color.items()
        ]
        faults = traces_console_url(region, f'service("{service}") {{ fault = true }}')
        return "\n\n".join(
            [
                f"## Traces of {service} (AWS X-Ray, last hour)",
                f"App time over the latency alarm's threshold ({slow_seconds} s; the alarm "
                "measures the whole API Gateway path, the app's segment only its own part): "
                + " · ".join(links),
                f"[5xx responses]({faults})",
                f"The app samples {self._sampling_ratio:.0%} of new traces "
                f"(`tracing.samplingRatio`); a canary's color: "
                f'`annotation.{color} = "green"`.',
            ]
        )

    def _storage_events(self, database: WatchedDatabase) -> None:
        """RDS's "low storage" events to the alerts topic: storage full, over 90 % used, and
        storage autoscaling unable to grow or about to reach its maximum. No metric carries the
        allocated storage, so these events are how the ceiling is watched."""
        aws.rds.EventSubscription(
            f"{self.resource_name}-database-storage",
            name=self.physical_name("database-storage", max_length=255),
            sns_topic=self._topic_arn,
            source_type="db-instance",
            source_ids=[database.instance_identifier],
            event_categories=list(STORAGE_EVENT_CATEGORIES),
            tags=self.tags(),
            opts=self.child_opts(),
        )

    def _alarm(self, spec: AlarmSpec) -> pulumi.Output[str]:
        metric = spec.metric
        alarm = aws.cloudwatch.MetricAlarm(
            f"{self.resource_name}-{spec.kind}",
            name=self.ctx.physical_name(spec.kind, max_length=255),
            alarm_description=f"{spec.summary} Runbook: {spec.runbook}",
            namespace=metric.namespace,
            metric_name=metric.name,
            dimensions=dict(metric.dimensions) or None,
            statistic=None if metric.is_percentile else metric.statistic,
            extended_statistic=metric.statistic if metric.is_percentile else None,
            period=PERIOD_SECONDS,
            evaluation_periods=spec.evaluation_periods,
            datapoints_to_alarm=spec.datapoints_to_alarm,
            comparison_operator=spec.comparison,
            threshold=spec.threshold,
            treat_missing_data=spec.treat_missing_data,
            alarm_actions=[self._topic_arn],
            ok_actions=[self._topic_arn],
            tags=self.tags(),
            opts=self.child_opts(),
        )
        self.alarm_arns[spec.kind] = alarm.arn
        return alarm.arn

    def _composite(self, service: str, members: Sequence[pulumi.Output[str]]) -> None:
        kind = f"{service}-unhealthy"
        alarm = aws.cloudwatch.CompositeAlarm(
            f"{self.resource_name}-{kind}",
            alarm_name=self.ctx.physical_name(kind, max_length=255),
            alarm_description=(
                f"{service} is unhealthy: one of its alarms is in ALARM. Runbook: "
                f"{COMPOSITE_RUNBOOK}"
            ),
            alarm_rule=pulumi.Output.all(*members).apply(
                lambda arns: " OR ".join(f'ALARM("{arn}")' for arn in arns)
            ),
            alarm_actions=[self._topic_arn],
            ok_actions=[self._topic_arn],
            tags=self.tags(),
            opts=self.child_opts(),
        )
        self.alarm_arns[kind] = alarm.arn

    def _dashboard(
        self,
        region: str,
        database: WatchedDatabase,
        api: WatchedApi,
        specs_by_service: Mapping[str, Sequence[AlarmSpec]],
    ) -> dict[str, Any]:
        def gateway(name: str, statistic: str, label: str) -> Metric:
            return api_metric(api, name, statistic, label)

        def rds(name: str, statistic: str, label: str) -> Metric:
            return rds_metric(database, name, statistic, label)

        panels: list[tuple[str, Sequence[Metric | Expression]]] = [
            ("API traffic and errors", [gateway("Count", "Sum", "Requests"),
                                        gateway("5xx", "Sum", "5xx"),
                                        gateway("4xx", "Sum", "4xx")]),
            ("API latency (ms)", [gateway("Latency", "p50", "p50"),
                                  gateway("Latency", "p90", "p90"),
                                  gateway("Latency", "p99", "p99"),
                                  gateway("IntegrationLatency", "p90", "Integration p90")]),
            ("Database CPU (%)", [rds("CPUUtilization", "Average", "CPU")]),
            ("Database connections", [rds("DatabaseConnections", "Maximum", "Connections")]),
            ("Database free storage (bytes)", [rds("FreeStorageSpace", "Minimum", "Free")]),
            ("Database latency p90 (s)", [rds("ReadLatency", "p90", "Read"),
                                          rds("WriteLatency", "p90", "Write")]),
        ]  # fmt: skip
        # Stable and canary target groups side by side: what the canary analysis compares.
        canaries = api.preview_target_group_arn_suffixes.items()
        groups = [*api.target_group_arn_suffixes.items(),
                  *((f"{service} canary", group) for service, group in canaries)]  # fmt: skip
        panels += [
            ("Target groups: requests and 5xx", [
                target_group_metric(api, suffix, metric, "Sum", f"{group} {label}")
                for group, suffix in groups
                for metric, label in (("RequestCount", "requests"),
                                      ("HTTPCode_Target_5XX_Count", "5xx"))]),
            ("Target groups: response time p95 (s)", [
                target_group_metric(api, suffix, "TargetResponseTime", "p95", group)
                for group, suffix in groups]),
        ]  # fmt: skip
        for service, specs in specs_by_service.items():
            panels.append((f"{service}: hosts and errors", [s.metric for s in specs]))
        panels.append(("Right-sizing: database headroom", database_headroom(database)))
        cluster = self._cluster_name
        if cluster is not None:
            panels += [
                (f"Right-sizing: {service} pods against limits (%)",
                 pods_against_limits(cluster, service))
                for service in specs_by_service
            ]  # fmt: skip

        layout = _Layout()
        for index, (title, metrics) in enumerate(panels):
            layout.add(
                "metric",
                {
                    "title": title,
                    "region": region,
                    "view": "timeSeries",
                    "period": PERIOD_SECONDS,
                    "metrics": [m.widget_entry() for m in metrics],
                },
            )
            if index == 1:  # beside the API's latency, below it on the grid
                layout.add("text", {"markdown": self._traces_markdown(region, api.service)})
        for service in specs_by_service if cluster is not None else ():
            layout.add(
                "log",
                {
                    "title": f"Right-sizing: {service} pods against requests (%)",
                    "region": region,
                    "view": "timeSeries",
                    "query": pods_against_requests_query(str(cluster), service),
                },
            )
        layout.add(
            "alarm",
            {"title": "Alarm status", "alarms": list(self.alarm_arns.values())},
            full_row=True,
        )
        return {"widgets": layout.widgets}
