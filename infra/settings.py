"""Typed stack settings: every config key the program reads, validated once, at the edge.

The stack's `environment` picks a tier (see `infra/tiers.py`); the tier's defaults fill every key
the stack file leaves out, and the tier's policy floors are checked after that. Secrets are never
part of these models: they are read with `get_secret` and stay `Output`s.
"""

from __future__ import annotations

import json
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator

# IMAGE_REFERENCE is re-exported for the release tool; its image rule is validate_image_reference.
from infra.config_rules import (
    IMAGE_REFERENCE as IMAGE_REFERENCE,
)
from infra.config_rules import (
    MIN_WINDOW_MINUTES,
    PathError,
    daily_window,
    known_region,
    quantity,
    region_of_arn,
    repeated,
    validate_image_reference,
    validate_third_party_image,
    weekly_window,
    windows_overlap,
)
from infra.model import ConfigModel
from infra.rds_classes import INSTANCE_CLASSES
from infra.tiers import TIERS, Environment, Tier

AccountId = Annotated[str, Field(pattern=r"^\d{12}$")]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")]
# AWS tag values: letters, digits, spaces and + - = . _ : / @, up to 256 characters.
TagValue = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\w .:/=+@-]+$")]
Region = Annotated[str, AfterValidator(known_region)]
SubnetId = Annotated[str, Field(pattern=r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$")]
# The retention periods CloudWatch Logs accepts (PutRetentionPolicy, retentionInDays).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)  # fmt: skip


def _log_retention(days: int) -> int:
    # Not a Literal: config values arrive as text ("14"), which a Literal of ints never matches.
    if days not in LOG_RETENTION_DAYS:
        raise ValueError("allowed: " + ", ".join(map(str, LOG_RETENTION_DAYS)))
    return days


LogRetentionDays = Annotated[int, AfterValidator(_log_retention)]


def _folded(entry: Any) -> Any:
    return entry.lower() if isinstance(entry, str) else entry


def _no_repeats(entries: tuple[Any, ...]) -> tuple[Any, ...]:
    # Case-insensitively: the same address or id in another case is the same entry to AWS.
    again = repeated(entries, key=_folded)
    if again:
        raise ValueError(f"{again[0]} is listed twice; list each entry once")
    return entries


Emails = Annotated[tuple[Email, ...], AfterValidator(_no_repeats)]
AccountIds = Annotated[tuple[AccountId, ...], AfterValidator(_no_repeats)]
SubnetIds = Annotated[tuple[SubnetId, ...], AfterValidator(_no_repeats)]


class TagSettings(ConfigModel):
    """Who owns and pays for the stack; goes onto every taggable AWS resource."""

    owner: TagValue
    cost_center: TagValue


class AwsSettings(ConfigModel):
    """The explicit AWS provider. Default providers are not used.

    No role to assume: the caller's credentials are the role, chosen per operation (the
    workflows' OIDC roles: read-only for preview and drift, the deploy role for up and releases).
    A role in stack config would be assumed by every operation that builds the provider, a
    refresh or a preview included, so the read-only roles would need to assume it.
    """

    region: Region
    # The provider refuses to touch any other account: a prod stack can never land in dev.
    allowed_account_ids: AccountIds = ()


class KubernetesSettings(ConfigModel):
    """The explicit Kubernetes provider: the EKS cluster `clusterName`, reached with the AWS
    provider's own credentials; or the secret `kubeconfig`; or a kubeconfig `context`."""

    context: str | None = Field(default=None, min_length=1, max_length=253)
    # The EKS cluster (required; in the stack's account and region). The provider is built from
    # it when neither the secret kubeconfig nor a context is set, and the services' Pod Identity
    # associations are made in it. It also identifies the cluster to Pulumi, so that new
    # credentials update the provider instead of replacing every Kubernetes object.
    cluster_name: str | None = Field(default=None, pattern=r"^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$")
    # The cluster's Kubernetes minor version; every object is checked against its schema.
    version: str = Field(default="1.34", pattern=r"^1\.(2[5-9]|3[0-7])$")


# SNS's hard limit on the total retry time of an HTTP/S delivery policy.
SNS_MAX_RETRY_SECONDS = 3600


class DeliveryRetrySettings(ConfigModel):
    """SNS retries for the HTTPS paging subscription, within SNS's documented limits."""

    num_retries: int = Field(default=10, ge=0, le=100)
    min_delay_seconds: int = Field(default=20, ge=1, le=SNS_MAX_RETRY_SECONDS)
    max_delay_seconds: int = Field(default=600, ge=1, le=SNS_MAX_RETRY_SECONDS)

    @property
    def worst_case_seconds(self) -> float:
        """An upper bound of the backoff phase's total: the exponential curve from the minimum
        to the maximum delay stays under the straight line between them."""
        return self.num_retries * (self.min_delay_seconds + self.max_delay_seconds) / 2

    @model_validator(mode="after")
    def _within_sns_limits(self) -> DeliveryRetrySettings:
        if self.min_delay_seconds > self.max_delay_seconds:
            raise PathError(
                "minDelaySeconds",
                self.min_delay_seconds,
                f"must not exceed maxDelaySeconds ({self.max_delay_seconds})",
            )
        if self.worst_case_seconds > SNS_MAX_RETRY_SECONDS:
            raise ValueError(
                f"numRetries x (minDelaySeconds + maxDelaySeconds) / 2 = "
                f"{self.worst_case_seconds:g} s of retries; SNS allows at most "
                f"{SNS_MAX_RETRY_SECONDS} s in total: lower numRetries or the delays"
            )
        return self


class PagingSettings(ConfigModel):
    """An incident tool whose SNS integration confirms its subscription itself.

    Only these may get an HTTPS subscription: SNS delivers nothing to an endpoint until it
    answers the SubscriptionConfirmation, which chat webhooks (Slack, Teams) cannot do. The
    integration URL holds the tool's integration key, so it is the secret
    `alertsPagingEndpoint`.
    """

    service: Literal["pagerduty", "opsgenie"]
    delivery_retry: DeliveryRetrySettings = DeliveryRetrySettings()


ChatName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")]


class SlackChannelSettings(ConfigModel):
    """A Slack channel reached through AWS Chatbot (the workspace is authorized in its console)."""

    name: ChatName
    # The Slack workspace (team) id AWS Chatbot shows after the authorization, e.g. T07EA123LEP.
    workspace_id: str = Field(pattern=r"^[A-Z0-9]{1,255}$")
    # The channel id at the end of the channel's link, e.g. C07EZ1ABC23.
    channel_id: str = Field(pattern=r"^[A-Za-z0-9]{1,255}$")


Uuid = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]


class TeamsChannelSettings(ConfigModel):
    """A Microsoft Teams channel reached through AWS Chatbot (the team is authorized first)."""

    name: ChatName
    team_id: Uuid
    tenant_id: Uuid
    # As in the channel's link, e.g. 19%3ab6ef35dc342d56ba5654e6fc6d25a071%40thread.tacv2.
    channel_id: str = Field(pattern=r"^[A-Za-z0-9:%@._-]{1,255}$")


class ChatbotSettings(ConfigModel):
    """Chat channels subscribed to the alerts topic through AWS Chatbot."""

    slack: tuple[SlackChannelSettings, ...] = ()
    teams: tuple[TeamsChannelSettings, ...] = ()

    @model_validator(mode="after")
    def _names_unique(self) -> ChatbotSettings:
        names = [c.name for c in (*self.slack, *self.teams)]
        if len(set(names)) != len(names):
            raise ValueError("each slack and teams channel needs its own name")
        return self


class AlertsSettings(ConfigModel):
    """Who gets paged: email addresses, chat channels through AWS Chatbot, an incident tool."""

    emails: Emails = ()
    chatbot: ChatbotSettings = ChatbotSettings()
    # With it, the secret `alertsPagingEndpoint` is the tool's SNS integration URL.
    paging: PagingSettings | None = None

    @property
    def chat_channels(self) -> int:
        return len(self.chatbot.slack) + len(self.chatbot.teams)


class NetworkSettings(ConfigModel):
    """The existing VPC that holds the Kubernetes cluster."""

    vpc_id: str = Field(pattern=r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$")
    # Private subnets in distinct AZs: the database subnet group, the VPC link and the internal
    # load balancer all span them. The AZs are checked against AWS at deploy time.
    private_subnet_ids: SubnetIds = Field(min_length=2)
    # The cluster nodes' security group: the only source the database accepts.
    cluster_node_security_group_id: str = Field(pattern=r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")


class DisasterRecoverySettings(ConfigModel):
    """RDS automated backups replicated to a second region."""

    enabled: bool
    region: Region = "eu-central-1"
    retention_days: int = Field(default=7, ge=1, le=35)


class DatabaseSettings(ConfigModel):
    """RDS for PostgreSQL. Tier-dependent keys come from the tier table."""

    # A major version ("18") lets RDS pick and upgrade the minor; the parameter group family
    # follows the major.
    engine_version: str = Field(default="18", pattern=r"^\d{2}(\.\d+)?$")
    instance_class: str = Field(pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    allocated_storage_gb: int = Field(ge=20, le=65536)
    # Storage autoscaling ceiling.
    max_allocated_storage_gb: int = Field(ge=20, le=65536)
    backup_retention_days: int = Field(ge=1, le=35)
    multi_az: bool
    deletion_protection: bool
    final_snapshot: bool
    performance_insights: bool
    # Enhanced monitoring interval; 0 turns it off.
    monitoring_interval_seconds: Literal[0, 1, 5, 10, 15, 30, 60]
    disaster_recovery: DisasterRecoverySettings
    database_name: str = Field(default="analytics", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    master_username: str = Field(default="analytics_admin", pattern=r"^[a-z][a-z0-9_]{0,15}$")
    port: int = Field(default=5432, ge=1150, le=65535)
    # Statements slower than this are logged (log_min_duration_statement).
    slow_statement_ms: int = Field(default=500, ge=0, le=3_600_000)
    # Daily, UTC, hh:mm-hh:mm; weekly, UTC, ddd:hh:mm-ddd:hh:mm. Each at least 30 minutes, and
    # apart: RDS refuses a backup window that overlaps the maintenance window.
    backup_window: str = "02:00-03:00"
    maintenance_window: str = "sun:03:30-sun:04:30"

    @property
    def major_version(self) -> str:
        return self.engine_version.split(".")[0]

    @model_validator(mode="after")
    def _autoscaling_above_allocated(self) -> DatabaseSettings:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise PathError(
                "maxAllocatedStorageGb",
                self.max_allocated_storage_gb,
                f"must be at least allocatedStorageGb ({self.allocated_storage_gb})",
            )
        return self

    @model_validator(mode="after")
    def _windows_apart(self) -> DatabaseSettings:
        """RDS CreateDBInstance: PreferredBackupWindow / PreferredMaintenanceWindow."""
        windows = []
        for key, value, parse, shape in (
            ("backupWindow", self.backup_window, daily_window, "hh:mm-hh:mm, UTC"),
            ("maintenanceWindow", self.maintenance_window, weekly_window,
             "ddd:hh:mm-ddd:hh:mm, UTC, days mon to sun, e.g. sun:03:30-sun:04:30"),
        ):  # fmt: skip
            try:
                start, length = parse(value)
            except ValueError:
                raise PathError(key, value, f"allowed: {shape}") from None
            if length < MIN_WINDOW_MINUTES:
                raise PathError(key, value, f"must be at least {MIN_WINDOW_MINUTES} minutes long")
            windows.append((start, length))
        if windows_overlap(windows[0], windows[1]):
            raise PathError(
                "backupWindow",
                self.backup_window,
                f"overlaps maintenanceWindow ({self.maintenance_window}); RDS needs them apart",
            )
        return self


class CustomDomainSettings(ConfigModel):
    domain_name: str = Field(pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
    # A regional ACM certificate for domainName, in the stack's region.
    certificate_arn: str = Field(
        pattern=r"^arn:aws(-[a-z]+)*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$"
    )


AcmCertificateArn = Annotated[
    str, Field(pattern=r"^arn:aws(-[a-z]+)*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")
]
DomainName = Annotated[str, Field(pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")]


class LoadBalancerTlsSettings(ConfigModel):
    """TLS on the hop from the API gateway's VPC link to the internal load balancer."""

    # An ACM certificate in the stack's region, for serverName: the HTTPS listener presents it.
    certificate_arn: AcmCertificateArn
    # The name API Gateway sends (SNI) and checks the listener's certificate against.
    server_name: DomainName


class ApiSettings(ConfigModel):
    """The HTTP API in front of the analytics API, and its private path into the cluster."""

    throttling_burst_limit: int = Field(ge=1, le=5000)
    throttling_rate_limit: float = Field(gt=0, le=10000)
    # The Kubernetes service the API fronts, and the NodePorts its active (stable target group)
    # and preview (canary target group) Services listen on.
    service: str = Field(default="analytics-api", pattern=r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
    node_port: int = Field(default=30080, ge=30000, le=32767)
    preview_node_port: int = Field(default=30081, ge=30000, le=32767)
    custom_domain: CustomDomainSettings | None = None
    # Without it the internal hop is plain HTTP inside the VPC; prod requires it.
    load_balancer_tls: LoadBalancerTlsSettings | None = None

    @model_validator(mode="after")
    def _distinct_node_ports(self) -> ApiSettings:
        if self.node_port == self.preview_node_port:
            raise ValueError(
                f"nodePort and previewNodePort must differ (both {self.node_port}): each "
                "target group reaches its own Service"
            )
        return self


# The environment variable a build's tag comes from (CI: the commit, github.sha).
IMAGE_TAG_VARIABLE = "IMAGE_TAG"
COMMIT_ID = r"[0-9a-f]{7,40}"


class ImageSettings(ConfigModel):
    """The analytics API image: built and pushed to the stack's ECR repository, or given.

    A build is tagged with the commit it is built from (the IMAGE_TAG environment variable,
    read in `load_settings`), never with a tag from a stack file.
    """

    build: bool = False
    context: str = "app"
    dockerfile: str = "Dockerfile"
    platform: Literal["linux/amd64", "linux/arm64"] = "linux/amd64"
    # Used when build is off: a digest (`…@sha256:…`) pins exactly what runs; a tag is allowed
    # where the tier allows it (ECR tags are immutable here), never `latest` or none.
    # infra/config_rules.py: validate_image_reference, checked with the tier's floors.
    reference: str | None = Field(default=None, min_length=1)
    # None: tagged images never expire (the tier's default for stacks that run promoted
    # releases from their own repository).
    keep_tagged_images: int | None = Field(default=30, ge=1, le=1000)
    untagged_expiry_days: int = Field(default=7, ge=1, le=365)
    # Accounts whose promote step may copy images out of this repository (pull only).
    pull_account_ids: tuple[AccountId, ...] = ()

    @model_validator(mode="after")
    def _reference_when_not_building(self) -> ImageSettings:
        if not self.build and self.reference is None:
            raise ValueError("set build: true, or a reference to an existing image")
        return self


Quantity = Annotated[str, Field(pattern=r"^\d+(\.\d+)?(m|Ki|Mi|Gi)?$")]
# Kubernetes label values: what a version may look like.
LabelValue = Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")]


class ColorSettings(ConfigModel):
    """What one color runs. Without an image, the stack's image (image.*) is used."""

    version: LabelValue
    # The same rule as image.reference (validate_image_reference), checked with the tier's floors.
    image: str | None = Field(default=None, min_length=1)
    # Release state: a floor under this color's HPA, written by the release tool around a
    # traffic move and removed after it (an HPA's scale-down history is from before the move).
    min_replicas: int | None = Field(default=None, ge=1, le=200)


class ResourceSettings(ConfigModel):
    cpu_request: Quantity = "250m"
    memory_request: Quantity = "256Mi"
    cpu_limit: Quantity = "1"
    memory_limit: Quantity = "512Mi"

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceSettings:
        # The API server refuses a container whose request exceeds its limit.
        for request_key, request, limit_key, limit in (
            ("cpuRequest", self.cpu_request, "cpuLimit", self.cpu_limit),
            ("memoryRequest", self.memory_request, "memoryLimit", self.memory_limit),
        ):
            if quantity(request) > quantity(limit):
                raise PathError(request_key, request, f"must not exceed {limit_key} ({limit})")
        return self


class CanarySettings(ConfigModel):
    """The share of the API's requests the load balancer sends to the preview color.

    The listener forwards with weights to the stable target group (active Service) and the
    canary target group (preview Service): `100 - weight` and `weight`. 0 at rest; the release
    tool walks it through `release.canarySteps` and puts it back to 0 on promote or abort.
    """

    weight: int = Field(default=0, ge=0, le=100)


class ServiceTierSettings(ConfigModel):
    """Per-service replica counts; `serviceDefaults` sets them for every service."""

    replicas: int = Field(ge=1, le=100)
    # How many pods the idle color keeps running (Argo Rollouts: previewReplicaCount). Each
    # color is scaled by its own HorizontalPodAutoscaler, whose minReplicas must be at least 1
    # (0 needs the alpha HPAScaleToZero gate); the canary target group and the preview route
    # need a ready pod behind them anyway.
    preview_replica_count: int = Field(ge=1, le=200)
    max_replicas: int = Field(ge=1, le=200)


# Namespaces a service may not take: Kubernetes' own and the trace collector's (infra/tracing.py).
RESERVED_NAMESPACES = frozenset({"default", "tracing"})


class ServiceSettings(ConfigModel):
    """One blue/green service: two Deployments, an active and a preview Service."""

    name: str = Field(pattern=r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
    active_color: Literal["blue", "green"] = "blue"
    blue: ColorSettings
    green: ColorSettings
    replicas: int = Field(ge=1, le=100)
    preview_replica_count: int = Field(ge=1, le=200)
    max_replicas: int = Field(ge=1, le=200)
    target_cpu_percent: int = Field(default=70, ge=10, le=100)
    port: int = Field(default=8080, ge=1024, le=65535)
    resources: ResourceSettings = ResourceSettings()
    # Feature flags, handed to the pods as FEATURE_<NAME> settings.
    features: dict[
        Annotated[str, Field(pattern=r"^[a-z][a-zA-Z0-9_]{0,62}$")], bool | int | str
    ] = Field(default_factory=dict)
    canary: CanarySettings = CanarySettings()
    # Release state, written by the release tool: the color that served before the last
    # promote, i.e. what `rollback` returns to. Unset when there is nothing to return to.
    previous_color: Literal["blue", "green"] | None = None

    @property
    def preview_color(self) -> Literal["blue", "green"]:
        return "green" if self.active_color == "blue" else "blue"

    @model_validator(mode="after")
    def _replica_bounds(self) -> ServiceSettings:
        # The service's name is its namespace: one the cluster or the platform owns would be
        # declared twice, and destroying either owner would delete the other's objects.
        if self.name in RESERVED_NAMESPACES or self.name.startswith("kube-"):
            raise PathError(
                "name",
                self.name,
                "is a namespace the cluster or the platform owns (default, kube-*, "
                f"{', '.join(sorted(RESERVED_NAMESPACES - {'default'}))}); choose another name",
            )
        if self.max_replicas < self.replicas:
            raise PathError(
                "maxReplicas", self.max_replicas, f"must be at least replicas ({self.replicas})"
            )
        if self.previous_color == self.active_color:
            raise ValueError(
                f"previousColor ({self.previous_color}) must be the idle color, not the active one"
            )
        return self


class ReleaseSettings(ConfigModel):
    """How `python -m infra.release` gates a release. Read by the release tool only."""

    # Canary weights walked in order; the last must be 100.
    canary_steps: tuple[int, ...] = (5, 10, 25, 50, 100)
    canary_pause_seconds: int = Field(default=60, ge=0, le=3600)
    # A canary window fails when the canary target group's 5xx share or p95 response time
    # exceeds these.
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p95_latency_ms: int = Field(default=1000, ge=1, le=60_000)
    # A window with fewer requests than this to the canary target group (or with no data at
    # all) is inconclusive, never a pass; this many inconclusive windows abort the canary.
    min_requests_per_window: int = Field(default=10, ge=1, le=1_000_000)
    inconclusive_limit: int = Field(default=3, ge=1, le=100)
    # After a switch, the outgoing color keeps its size this long so its connections drain
    # (Argo Rollouts: scaleDownDelaySeconds).
    scale_down_delay_seconds: int = Field(default=30, ge=0, le=3600)
    # CloudWatch receives the load balancer's per-minute metrics late: a window is read only
    # this long after it ends.
    metrics_delay_seconds: int = Field(default=120, ge=0, le=900)
    # How long an update that another update holds the stack for is retried.
    concurrent_update_wait_seconds: int = Field(default=600, ge=0, le=3600)
    ready_timeout_seconds: int = Field(default=600, ge=1, le=3600)
    # Run instead of the built-in smoke test, with PREVIEW_URL in its environment.
    smoke_command: str | None = None

    @model_validator(mode="after")
    def _steps_end_at_100(self) -> ReleaseSettings:
        steps = self.canary_steps
        if not steps or steps[-1] != 100 or list(steps) != sorted(set(steps)) or steps[0] < 1:
            raise PathError(
                "canarySteps", list(steps), "must rise strictly from at least 1 and end at 100"
            )
        return self


class DatabaseAlarmSettings(ConfigModel):
    """RDS alarm thresholds. Shares scale with the instance class (infra/rds_classes.py)."""

    # CPUUtilization (Average) above this percentage.
    cpu_percent: float = Field(gt=0, le=100)
    # FreeStorageSpace (Minimum) below this share of the allocated storage.
    free_storage_percent: float = Field(gt=0, lt=100)
    # FreeableMemory (Average) below this share of the instance class's memory.
    freeable_memory_percent: float = Field(gt=0, lt=100)
    # DatabaseConnections (Maximum) above this share of the default max_connections.
    connections_percent: float = Field(gt=0, le=100)
    # ReadLatency / WriteLatency at p90, in milliseconds.
    read_latency_p90_ms: float = Field(gt=0, le=10_000)
    write_latency_p90_ms: float = Field(gt=0, le=10_000)
    # DBLoad (Average active sessions) above this many per vCPU.
    load_per_vcpu: float = Field(gt=0, le=10)


class ApiAlarmSettings(ConfigModel):
    """HTTP API alarm thresholds: error rates are the share of requests (Average of 5xx / 4xx)."""

    server_error_rate: float = Field(gt=0, le=1)
    client_error_rate: float = Field(gt=0, le=1)
    latency_p90_ms: float = Field(gt=0, le=30_000)


class LoadBalancerAlarmSettings(ConfigModel):
    # UnHealthyHostCount (Maximum) above this, per target group.
    max_unhealthy_hosts: int = Field(ge=0, le=100)


class ServiceAlarmSettings(ConfigModel):
    # Log events with "level": "error" per minute, per service, above which it alarms.
    max_error_logs_per_minute: int = Field(ge=0, le=100_000)


class PrometheusSettings(ConfigModel):
    """How Prometheus finds the pods' /metrics."""

    # false: `prometheus.io/*` pod annotations; true: a ServiceMonitor, for clusters that run
    # the Prometheus operator (its CRD must be installed).
    service_monitor: bool = False
    # Labels the operator's serviceMonitorSelector matches, e.g. {release: kube-prometheus-stack}.
    service_monitor_labels: dict[
        Annotated[
            str,
            Field(pattern=r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"),
        ],
        Annotated[str, Field(pattern=r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")],
    ] = Field(default_factory=dict)
    scrape_interval_seconds: int = Field(default=30, ge=5, le=300)


class MonitoringSettings(ConfigModel):
    """Alarm thresholds (from the tier table unless set) and Prometheus scraping."""

    database: DatabaseAlarmSettings
    api: ApiAlarmSettings
    load_balancer: LoadBalancerAlarmSettings
    service: ServiceAlarmSettings
    prometheus: PrometheusSettings = PrometheusSettings()


# AWS Budgets: at most 5 notifications per budget; one is the forecast alert.
MAX_ACTUAL_COST_ALERTS = 4


class CostSettings(ConfigModel):
    """The stack's monthly budget and its anomaly alert, in USD (from the tier table unless set).

    Costs are the stack's by its `Stack` cost allocation tag (activate it once per payer
    account: Billing console, Cost allocation tags)."""

    monthly_budget_usd: float = Field(gt=0, le=1_000_000)
    # Percentages of the budget whose crossing by actual spend alerts, rising.
    actual_alert_percents: tuple[int, ...] = Field(
        default=(80, 100), min_length=1, max_length=MAX_ACTUAL_COST_ALERTS
    )
    # The month's forecast above this percentage of the budget alerts.
    forecast_alert_percent: int = Field(default=100, ge=1, le=1000)
    # A cost anomaly whose total impact reaches this many USD alerts at once.
    anomaly_threshold_usd: float = Field(gt=0, le=100_000)

    @model_validator(mode="after")
    def _percents_rise(self) -> CostSettings:
        percents = self.actual_alert_percents
        if list(percents) != sorted(set(percents)) or not 1 <= percents[0] <= percents[-1] <= 1000:
            raise PathError(
                "actualAlertPercents",
                list(percents),
                "must rise strictly, each from 1 to 1000 (percent of monthlyBudgetUsd)",
            )
        return self


class ChaosSettings(ConfigModel):
    """AWS FIS experiment templates (infra/chaos.py). Off in prod unless set: a template that
    exists can be started by anyone allowed fis:StartExperiment."""

    enabled: bool


def _ratio(value: float) -> float:
    # A ValueError of our own: pydantic's range words ("less than or equal to 1") do not say
    # what the number means.
    if not 0 <= value <= 1:
        raise ValueError(
            "allowed: a sampling ratio from 0 (no new traces) to 1 (every trace), "
            "e.g. 0.25 samples one trace in four"
        )
    return value


SamplingRatio = Annotated[float, AfterValidator(_ratio)]
# AWS Distro for OpenTelemetry collector v0.49.0, tagged 2026-07-14 (OpenTelemetry Collector
# v0.156.0; its AWS SDK for Go v2 reads EKS Pod Identity credentials). README: Tracing. Its
# command line disables the exporter.xray.allowDot gate (infra/tracing.py): another release
# (here or in a stack's tracing.collectorImage) must be checked for that gate first, as a
# release where it is stable or gone refuses the flag and its pods never start.
COLLECTOR_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0"


class TracingSettings(ConfigModel):
    """The cluster's trace collector (infra/tracing.py) and how much the app samples."""

    # From the tier table unless set: OTEL_TRACES_SAMPLER_ARG of every app pod.
    sampling_ratio: SamplingRatio
    # A version tag or a digest, never `latest` (config_rules.validate_third_party_image).
    collector_image: str = Field(default=COLLECTOR_IMAGE, min_length=1)
    # Two, so that a node drain or a rollout never leaves the apps without a collector.
    collector_replicas: int = Field(default=2, ge=1, le=10)


_DEFAULT_SERVICES = [
    {"name": "analytics-api", "blue": {"version": "0.1.0"}, "green": {"version": "0.1.0"}}
]


class StackSettings(ConfigModel):
    """Every non-secret key under the project namespace."""

    environment: Environment
    tags: TagSettings
    aws: AwsSettings
    network: NetworkSettings
    image: ImageSettings
    kubernetes: KubernetesSettings = KubernetesSettings()
    alerts: AlertsSettings = AlertsSettings()
    # From the tier table unless set:
    protect_stateful_resources: bool
    kms_deletion_window_days: int = Field(ge=7, le=30)
    log_retention_days: LogRetentionDays
    database: DatabaseSettings
    api: ApiSettings
    service_defaults: ServiceTierSettings
    services: tuple[ServiceSettings, ...] = Field(min_length=1)
    monitoring: MonitoringSettings
    release: ReleaseSettings = ReleaseSettings()
    costs: CostSettings
    chaos: ChaosSettings
    tracing: TracingSettings
    # The secret keys this stack cannot run without. A stack file never carries a placeholder
    # ciphertext (the engine decrypts every `secure:` value first); it names the key here, a real
    # run stops with the command that sets it, and the offline preview uses a stand-in.
    required_secrets: tuple[Literal["alertsPagingEndpoint", "kubeconfig"], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _services_take_the_defaults(cls, data: Any) -> Any:
        """Each service entry starts from `serviceDefaults` (the tier's unless set)."""
        if not isinstance(data, dict):
            return data
        defaults = data.get("serviceDefaults")
        services = data.get("services", _DEFAULT_SERVICES)
        if isinstance(defaults, dict) and isinstance(services, list):
            data = {
                **data,
                "services": [
                    {**defaults, **entry} if isinstance(entry, dict) else entry
                    for entry in services
                ],
            }
        return data

    @model_validator(mode="after")
    def _api_fronts_a_known_service(self) -> StackSettings:
        names = [s.name for s in self.services]
        again = repeated(names)
        if again:
            raise PathError(
                f"services[{names.index(again[0], names.index(again[0]) + 1)}].name",
                again[0],
                "is the name of an earlier service; each service needs its own name",
            )
        if self.api.service not in names:
            raise PathError(
                "api.service", self.api.service, "must name one of services: " + ", ".join(names)
            )
        return self


# Keys whose values are secrets: read with get_secret, never validated, logged or printed.
SECRET_KEYS: tuple[str, ...] = ("alertsPagingEndpoint", "kubeconfig")
# How an operator sets each one; `pulumi config set` reads the value from stdin when piped.
SECRET_SET_COMMANDS: dict[str, str] = {
    "alertsPagingEndpoint": (
        "pulumi config set --secret alertsPagingEndpoint "
        "https://events.pagerduty.com/integration/<key>/enqueue"
    ),
    "kubeconfig": "pulumi config set --secret kubeconfig < kubeconfig.yaml",
}
# Keys this program no longer reads, and what replaces them.
RETIRED_KEYS: dict[str, str] = {
    "alertsWebhookUrl": (
        "removed: chat webhooks cannot confirm SNS subscriptions, so nothing was ever "
        "delivered; use alerts.chatbot (Slack or Teams through AWS Chatbot), or alerts.paging "
        "with the secret alertsPagingEndpoint (PagerDuty, Opsgenie)"
    ),
}
# Namespaces besides the project's that a stack file may use (engine options such as
# pulumi:disable-default-providers). Provider namespaces such as aws: are refused: the program
# configures its providers explicitly, so `aws:region` would be silently ignored.
FOREIGN_NAMESPACES_ALLOWED: tuple[str, ...] = ("pulumi",)


@dataclass(frozen=True)
class StackSecrets:
    alerts_paging_endpoint: pulumi.Output[str] | None
    kubeconfig: pulumi.Output[str] | None


@dataclass(frozen=True)
class Settings:
    project: str
    stack: str
    config: StackSettings
    tier: Tier
    secrets: StackSecrets
    # The tag a build is pushed under: the commit it is built from. None when not building.
    image_tag: str | None = None

    @property
    def environment(self) -> Environment:
        return self.config.environment


@dataclass(frozen=True)
class Problem:
    """One invalid config value: where it is, what it was, and what is allowed."""

    path: str
    value: str | None  # None when the key is not set at all
    allowed: str

    def render(self, project: str, stack: str) -> str:
        shown = "(not set)" if self.value is None else self.value
        key = self.path if ":" in self.path else f"{project}:{self.path}"
        return f"stack {stack}: {key} = {shown}: {self.allowed}"


class InvalidConfig(pulumi.RunError):
    """Raised before any resource is registered. Pulumi prints it without a traceback."""

    def __init__(self, project: str, stack: str, problems: Iterable[Problem]) -> None:
        self.lines = [p.render(project, stack) for p in problems]
        super().__init__(
            f"invalid config for stack {stack} ({len(self.lines)} problem(s)):\n"
            + "\n".join(self.lines)
        )


def parse_settings(
    project: str,
    stack: str,
    values: Mapping[str, str],
    secret_keys: Iterable[str],
) -> StackSettings:
    """Validate raw config as Pulumi passes it: `ns:key` -> string (objects as JSON strings).

    `secret_keys` names the keys that are secret; their values are never read here.
    Raises InvalidConfig listing every problem found.
    """
    secret = set(secret_keys)
    raw, problems = _project_values(project, values, secret)
    present_secrets = {k.partition(":")[2] for k in secret if k.partition(":")[0] == project}

    unparsable = {p.path for p in problems}
    environment = raw.get("environment")
    tier = next((t for name, t in TIERS.items() if name == environment), None)
    # An invalid environment is reported by the model; the dev defaults stand in so that the
    # rest of the config is still checked in the same run.
    merged = _deep_merge(
        (tier or TIERS["dev"]).defaults.model_dump(by_alias=True, mode="json"), raw
    )
    settings: StackSettings | None = None
    try:
        settings = StackSettings.model_validate(merged)
    except ValidationError as exc:
        # A key whose text did not parse is reported once, not again as missing.
        problems.extend(
            p
            for p in _from_validation_error(exc)
            if re.split(r"[.\[]", p.path)[0] not in unparsable
        )
    if settings is not None and tier is not None:
        problems.extend(_policy_problems(settings, tier, present_secrets))
    if problems or settings is None:
        raise InvalidConfig(project, stack, problems)
    return settings


def load_settings() -> Settings:
    """Read and validate the current stack's config from the Pulumi runtime."""
    project, stack = pulumi.get_project(), pulumi.get_stack()
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    secret_keys = {k for k in keys if runtime_config.is_config_secret(k)}
    values = {k: runtime_config.get_config(k) for k in keys - secret_keys}
    config = parse_settings(project, stack, values, secret_keys)
    cfg = pulumi.Config(project)
    return Settings(
        project=project,
        stack=stack,
        config=config,
        tier=TIERS[config.environment],
        image_tag=build_tag(project, stack, config.image, os.environ.get(IMAGE_TAG_VARIABLE)),
        secrets=StackSecrets(
            alerts_paging_endpoint=cfg.get_secret("alertsPagingEndpoint"),
            kubeconfig=cfg.get_secret("kubeconfig"),
        ),
    )


def build_tag(project: str, stack: str, image: ImageSettings, given: str | None) -> str | None:
    """The tag a build is pushed under: the commit id CI passes in, checked.

    A fixed tag such as `dev-local` would make the second build of a changed app fail to push
    (the repository's tags are immutable) and would not say what the image was built from.
    """
    if not image.build:
        return None
    if given is None or re.fullmatch(COMMIT_ID, given) is None:
        raise InvalidConfig(project, stack, [Problem(
            f"env:{IMAGE_TAG_VARIABLE}", None if given is None else _show(given),
            "image.build tags each image with the commit it is built from; allowed: a git "
            "commit id (7 to 40 lowercase hex digits), e.g. IMAGE_TAG=$(git rev-parse HEAD)",
        )])  # fmt: skip
    return given


def _project_values(
    project: str, values: Mapping[str, str], secret: set[str]
) -> tuple[dict[str, Any], list[Problem]]:
    raw: dict[str, Any] = {}
    problems: list[Problem] = []
    for full_key in sorted(set(values) | secret):
        namespace, _, key = full_key.partition(":")
        if namespace != project:
            if namespace not in FOREIGN_NAMESPACES_ALLOWED:
                problems.append(
                    Problem(
                        full_key,
                        "(secret)" if full_key in secret else _show(values[full_key]),
                        f"unknown key; this program configures its providers explicitly, so "
                        f"use the {project}:aws and {project}:kubernetes keys instead",
                    )
                )
            continue
        if key in RETIRED_KEYS:
            # It may hold a credential in plaintext: never echoed.
            problems.append(Problem(key, "(not shown)", RETIRED_KEYS[key]))
            continue
        if key in SECRET_KEYS:
            if full_key not in secret:
                problems.append(
                    Problem(
                        key,
                        "(plaintext, not shown)",
                        f"must be a secret: pulumi config set --secret {key} ...",
                    )
                )
            continue
        if full_key in secret:
            problems.append(
                Problem(
                    key,
                    "(secret)",
                    "must not be a secret; only these keys are secrets: " + ", ".join(SECRET_KEYS),
                )
            )
            continue
        text = values[full_key]
        if text.lstrip()[:1] in ("{", "["):
            try:
                raw[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(
                    Problem(key, _show(text), f"not a valid object or list ({exc.msg})")
                )
        else:
            raw[key] = text
    return raw, problems


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_LABEL = "up to 63 letters, digits, - _ or ., starting and ending with a letter or digit"
# Each pattern of this file, in the words an error shows instead of the regular expression.
# fmt: off
_SHAPES: dict[str, str] = {
    r"^\d{12}$": 'a 12-digit AWS account id, quoted in YAML ("012345678901")',
    r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$": "an email address such as oncall@example.com",
    r"^[\w .:/=+@-]+$": "letters, digits, spaces and + - = . _ : / @ (an AWS tag value)",
    r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$": "a subnet id: subnet- and 8 or 17 hex digits",
    r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$":
        "an IAM role ARN: arn:aws:iam::<12-digit account>:role/<name>",
    r"^1\.(2[5-9]|3[0-7])$":
        'a Kubernetes minor version from 1.25 to 1.37, quoted in YAML ("1.30")',
    r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$": "a VPC id: vpc- and 8 or 17 hex digits",
    r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$": "a security group id: sg- and 8 or 17 hex digits",
    r"^\d{2}(\.\d+)?$": 'a PostgreSQL major version ("18") or major.minor ("18.1"), quoted in YAML',
    r"^db\.[a-z0-9]+\.[a-z0-9]+$": "an RDS instance class such as db.t4g.micro",
    r"^[a-z][a-z0-9_]{0,62}$": "a lowercase letter, then up to 62 lowercase letters, digits or _",
    r"^[a-z][a-z0-9_]{0,15}$": "a lowercase letter, then up to 15 lowercase letters, digits or _",
    r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$":
        "a lowercase DNS name such as api.example.com",
    r"^arn:aws(-[a-z]+)*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$":
        "an ACM certificate ARN: arn:aws:acm:<region>:<account>:certificate/<id>",
    r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$":
        "a lowercase letter, then up to 39 lowercase letters, digits or -, not ending in -",
    r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$":
        "an image tag: up to 128 letters, digits, _ . or -, not starting with . or -",
    r"^\d+(\.\d+)?(m|Ki|Mi|Gi)?$": "a Kubernetes quantity such as 250m, 0.5, 1, 256Mi or 1Gi",
    r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$": "a Kubernetes label value: " + _LABEL,
    r"^[A-Za-z0-9-]{1,64}$": "an HTTP header name: up to 64 letters, digits or -",
    r"^[a-z][a-zA-Z0-9_]{0,62}$": "a lowercase letter, then up to 62 letters, digits or _",
    r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$":
        "a Kubernetes label key: an optional DNS prefix and /, then " + _LABEL,
    r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$":
        "a Kubernetes label value: empty, or " + _LABEL,
}
# fmt: on


_MESSAGE_PREFIXES = ("Input should be ", "Value error, ", "String should ", "Tuple should ")


def _from_validation_error(exc: ValidationError) -> list[Problem]:
    problems = [_problem(err) for err in exc.errors(include_url=False)]
    # A list whose entry failed also reports itself (e.g. "at least 1 item"): only the entry's
    # own line is the real one.
    return [
        p
        for p in problems
        if not any(q.path.startswith((f"{p.path}.", f"{p.path}[")) for q in problems)
    ]


def _problem(err: Any) -> Problem:
    loc, kind, value = err["loc"], err["type"], err.get("input")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, PathError):  # a cross-field rule that names the key to change
        path = ".".join(part for part in (_path(loc), cause.key) if part)
        return Problem(path, _show(cause.value), str(cause))
    path = _path(loc)
    if kind == "missing":
        return Problem(path, None, "required key is not set")
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc[:-1]))
        return Problem(path, _show(value), f"unknown key; allowed keys here: {allowed}")
    if kind == "string_type" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return Problem(path, _show(value), "YAML read this as a number; quote it in the stack file")
    if kind == "string_pattern_mismatch":
        shape = _SHAPES.get(str((err.get("ctx") or {}).get("pattern")), "the documented shape")
        return Problem(path, _show(value), f"allowed: {shape}")
    message = (
        err["msg"].replace("a valid tuple", "a list").replace("a valid dictionary", "a mapping")
    )
    for prefix in _MESSAGE_PREFIXES:
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    # A rule's own ValueError already says what is wrong and what is allowed.
    return Problem(path, _show(value), message if kind == "value_error" else f"allowed: {message}")


def _policy_problems(settings: StackSettings, tier: Tier, secrets: set[str]) -> list[Problem]:
    """The tier's floors, and rules that span several keys."""
    env, policy, db = settings.environment, tier.policy, settings.database
    lb_tls_arn = settings.api.load_balancer_tls and settings.api.load_balancer_tls.certificate_arn
    # arn:<partition>:acm:<region>:<account>:certificate/<id>
    lb_tls_region = lb_tls_arn.split(":")[3] if lb_tls_arn else None
    domain = settings.api.custom_domain
    safety = f"production safety: a {env} stack"
    # (broken, key path, its value, why and what is allowed)
    checks: list[tuple[bool, str, Any, str]] = [
        (policy.require_protect and not settings.protect_stateful_resources,
         "protectStatefulResources", False,
         f"{safety} must protect stateful resources; allowed: true"),
        (settings.kms_deletion_window_days < policy.min_kms_deletion_window_days,
         "kmsDeletionWindowDays", settings.kms_deletion_window_days,
         f"a {env} stack needs at least {policy.min_kms_deletion_window_days} days; "
         f"allowed: {policy.min_kms_deletion_window_days} to 30"),
        (settings.log_retention_days < policy.min_log_retention_days,
         "logRetentionDays", settings.log_retention_days,
         f"a {env} stack keeps logs at least {policy.min_log_retention_days} days"),
        (policy.require_alert_subscriber and not settings.alerts.emails
         and not settings.alerts.chat_channels and settings.alerts.paging is None,
         "alerts.emails", [],
         f"a {env} stack must page somebody: set at least one email, an alerts.chatbot "
         "channel, or alerts.paging"),
        (settings.alerts.paging is not None and "alertsPagingEndpoint" not in secrets,
         "alertsPagingEndpoint", None,
         "alerts.paging needs the integration URL: pulumi config set --secret "
         "alertsPagingEndpoint https://..."),
        (settings.alerts.paging is None and "alertsPagingEndpoint" in secrets,
         "alerts.paging", None,
         "the secret alertsPagingEndpoint is set: name its service "
         "(alerts.paging.service: pagerduty or opsgenie)"),
        (policy.require_allowed_account_ids and not settings.aws.allowed_account_ids,
         "aws.allowedAccountIds", [],
         f"{safety} must pin its AWS account; allowed: one or more 12-digit account ids"),
        (settings.kubernetes.cluster_name is None,
         "kubernetes.clusterName", None,
         "required: the EKS cluster's name; the Kubernetes provider is built from it (unless "
         "a context or the secret kubeconfig is set; the ambient kubeconfig is never used) and "
         "the services' Pod Identity associations (database access without passwords) are "
         "made in it"),
        (db.backup_retention_days < policy.min_backup_retention_days,
         "database.backupRetentionDays", db.backup_retention_days,
         f"a {env} stack keeps backups at least {policy.min_backup_retention_days} days; "
         f"allowed: {policy.min_backup_retention_days} to 35"),
        (policy.require_multi_az and not db.multi_az,
         "database.multiAz", False, f"{safety} must run Multi-AZ; allowed: true"),
        (policy.require_deletion_protection and not db.deletion_protection,
         "database.deletionProtection", False,
         f"{safety} must keep deletion protection on; allowed: true"),
        (policy.require_final_snapshot and not db.final_snapshot,
         "database.finalSnapshot", False, f"a {env} stack must snapshot on delete; allowed: true"),
        (policy.require_performance_insights and not db.performance_insights,
         "database.performanceInsights", False,
         f"a {env} stack must keep Performance Insights on; allowed: true"),
        (policy.require_enhanced_monitoring and db.monitoring_interval_seconds == 0,
         "database.monitoringIntervalSeconds", 0,
         f"a {env} stack must keep enhanced monitoring on; allowed: 1, 5, 10, 15, 30 or 60"),
        (re.fullmatch(policy.database_instance_classes, db.instance_class) is None,
         "database.instanceClass", db.instance_class,
         f"cost guard: allowed for {env}: " + ", ".join(
             c for c in sorted(INSTANCE_CLASSES)
             if re.fullmatch(policy.database_instance_classes, c))),
        (db.instance_class not in INSTANCE_CLASSES,
         "database.instanceClass", db.instance_class,
         "its vCPUs and memory are unknown to infra/rds_classes.py, which the alarm "
         "thresholds need; allowed: " + ", ".join(sorted(INSTANCE_CLASSES))),
        (policy.require_internal_tls and settings.api.load_balancer_tls is None,
         "api.loadBalancerTls", None,
         f"a {env} stack encrypts the hop from the VPC link to the load balancer; set "
         "certificateArn (an ACM certificate in aws.region) and serverName"),
        (lb_tls_region not in (None, settings.aws.region),
         "api.loadBalancerTls.certificateArn", lb_tls_arn,
         f"the load balancer's ACM certificate must be in the stack's region "
         f"({settings.aws.region}), not {lb_tls_region}"),
        (db.disaster_recovery.enabled and db.disaster_recovery.region == settings.aws.region,
         "database.disasterRecovery.region", db.disaster_recovery.region,
         f"must differ from aws.region ({settings.aws.region})"),
        (domain is not None and region_of_arn(domain.certificate_arn) != settings.aws.region,
         "api.customDomain.certificateArn", domain and domain.certificate_arn,
         f"a regional API's certificate must be in the API's region, aws.region "
         f"({settings.aws.region}); request or import it in ACM there"),
    ]  # fmt: skip
    missing = [
        Problem(
            key, None, f"a required secret (requiredSecrets); set it: {SECRET_SET_COMMANDS[key]}"
        )
        for key in settings.required_secrets
        if key not in secrets
    ]
    broken_checks = [
        Problem(path, None if value is None else _show(value), why)
        for broken, path, value, why in checks
        if broken
    ]
    return broken_checks + missing + _image_problems(settings) + _collector_image(settings)


def _collector_image(settings: StackSettings) -> list[Problem]:
    reference = settings.tracing.collector_image
    problem = validate_third_party_image(reference)
    return [Problem("tracing.collectorImage", _show(reference), problem)] if problem else []


def _image_problems(settings: StackSettings) -> list[Problem]:
    """Every image the stack runs, by the one image rule (validate_image_reference)."""
    images = [("image.reference", settings.image.reference)] + [
        (f"services[{i}].{color}.image", getattr(service, color).image)
        for i, service in enumerate(settings.services)
        for color in ("blue", "green")
    ]
    return [
        Problem(path, _show(reference), problem)
        for path, reference in images
        if reference is not None
        and (problem := validate_image_reference(settings.environment, reference))
    ]


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The camelCase keys allowed at a location of the stack config."""
    model: type[BaseModel] = StackSettings
    for part in loc:
        if isinstance(part, int):
            continue
        field = next(f for name, f in model.model_fields.items() if (f.alias or name) == part)
        nested = _model_in(field.annotation)
        if nested is None:
            return []
        model = nested
    keys = [f.alias or name for name, f in model.model_fields.items()]
    return sorted(keys + list(SECRET_KEYS)) if model is StackSettings else keys


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
