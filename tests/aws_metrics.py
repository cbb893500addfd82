"""CloudWatch metric names and dimension sets as AWS documents them, to check alarms against.

Kept apart from infra/ on purpose: the tests compare the program with this table, written from
the documentation, not from the program.

- AWS/RDS: https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-metrics.html
  (DBLoad: https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_PerfInsights.Cloudwatch.html)
- AWS/ApiGateway, HTTP APIs:
  https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-metrics.html
  (REST APIs use other names: 5XXError, 4XXError, and the ApiName dimension)
- AWS/ApplicationELB:
  https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-cloudwatch-metrics.html
- ContainerInsights ("Amazon EKS and Kubernetes Container Insights metrics"):
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Container-Insights-metrics-EKS.html
"""

from __future__ import annotations

import re

Dimensions = frozenset[str]

_RDS_INSTANCE: set[Dimensions] = {frozenset({"DBInstanceIdentifier"})}
_HTTP_API: set[Dimensions] = {
    frozenset({"ApiId"}),
    frozenset({"ApiId", "Stage"}),
    frozenset({"ApiId", "Stage", "Route"}),
}
_TARGET_GROUP: set[Dimensions] = {
    frozenset({"TargetGroup", "LoadBalancer"}),
    frozenset({"TargetGroup", "AvailabilityZone", "LoadBalancer"}),
}

_RDS_METRICS = (
    "CPUUtilization", "FreeStorageSpace", "FreeableMemory", "DatabaseConnections", "ReadLatency",
    "WriteLatency", "ReadIOPS", "WriteIOPS", "DiskQueueDepth", "SwapUsage", "DBLoad", "DBLoadCPU",
    "DBLoadNonCPU",
)  # fmt: skip

_POD: set[Dimensions] = {
    frozenset({"PodName", "Namespace", "ClusterName"}),
    frozenset({"Namespace", "ClusterName"}),
    frozenset({"Service", "Namespace", "ClusterName"}),
    frozenset({"ClusterName"}),
}
_POD_METRICS = (
    "pod_cpu_utilization", "pod_memory_utilization", "pod_cpu_utilization_over_pod_limit",
    "pod_memory_utilization_over_pod_limit",
)  # fmt: skip

# namespace -> metric -> the dimension sets it is published with
DOCUMENTED: dict[str, dict[str, set[Dimensions]]] = {
    "AWS/RDS": dict.fromkeys(_RDS_METRICS, _RDS_INSTANCE),
    "AWS/ApiGateway": dict.fromkeys(
        ("4xx", "5xx", "Count", "IntegrationLatency", "Latency", "DataProcessed"), _HTTP_API
    ),
    "AWS/ApplicationELB": {
        "HealthyHostCount": _TARGET_GROUP,
        "UnHealthyHostCount": _TARGET_GROUP,
        "HTTPCode_Target_5XX_Count": _TARGET_GROUP | {frozenset({"LoadBalancer"})},
        "TargetResponseTime": _TARGET_GROUP | {frozenset({"LoadBalancer"})},
        "RequestCount": _TARGET_GROUP | {frozenset({"LoadBalancer"})},
    },
    # Against requests there is no metric: only the performance log events carry
    # pod_cpu_request and pod_memory_request.
    "ContainerInsights": dict.fromkeys(_POD_METRICS, _POD),
}

REST_API_ONLY = {"5XXError", "4XXError", "ApiName"}

_STATISTICS = {"SampleCount", "Average", "Sum", "Minimum", "Maximum"}
_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?|100)$")


def is_statistic(value: str) -> bool:
    return value in _STATISTICS or bool(_PERCENTILE.match(value))
