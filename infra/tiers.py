"""The environment tiers: one table of defaults and policy floors per tier.

A stack picks its tier with the `environment` key. Its config then only states where it differs
from the tier's defaults (`TierDefaults`, in the shape of the stack config); the policy floors
(`TierPolicy`) are limits that no stack of the tier may go below, whatever its config says.
The allowed ranges of each key live with the key, in `infra/settings.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from infra.model import ConfigModel

Environment = Literal["dev", "staging", "prod"]


class DisasterRecoveryTierDefaults(ConfigModel):
    enabled: bool


class DatabaseTierDefaults(ConfigModel):
    instance_class: str
    allocated_storage_gb: int
    max_allocated_storage_gb: int
    backup_retention_days: int
    multi_az: bool
    deletion_protection: bool
    final_snapshot: bool
    performance_insights: bool
    monitoring_interval_seconds: int
    disaster_recovery: DisasterRecoveryTierDefaults


class ApiTierDefaults(ConfigModel):
    throttling_burst_limit: int
    throttling_rate_limit: float


class ServiceTierDefaults(ConfigModel):
    replicas: int
    preview_replica_count: int
    max_replicas: int


class DatabaseAlarmTierDefaults(ConfigModel):
    cpu_percent: float
    free_storage_percent: float
    freeable_memory_percent: float
    connections_percent: float
    read_latency_p90_ms: float
    write_latency_p90_ms: float
    load_per_vcpu: float


class ApiAlarmTierDefaults(ConfigModel):
    server_error_rate: float
    client_error_rate: float
    latency_p90_ms: float


class LoadBalancerAlarmTierDefaults(ConfigModel):
    max_unhealthy_hosts: int


class ServiceAlarmTierDefaults(ConfigModel):
    max_error_logs_per_minute: int


class MonitoringTierDefaults(ConfigModel):
    """Alarm thresholds; the metrics, statistics and periods live in infra/monitoring.py."""

    database: DatabaseAlarmTierDefaults
    api: ApiAlarmTierDefaults
    load_balancer: LoadBalancerAlarmTierDefaults
    service: ServiceAlarmTierDefaults


class ImageTierDefaults(ConfigModel):
    # None: tagged images never expire. A stack that runs images by digest from its own
    # repository (the promoted releases of staging and prod) must never lose one to a count.
    keep_tagged_images: int | None


class CostTierDefaults(ConfigModel):
    """What a stack of the tier is expected to cost, in USD (the budget and anomaly alerts)."""

    monthly_budget_usd: float
    anomaly_threshold_usd: float


class ChaosTierDefaults(ConfigModel):
    # Whether the stack's fault injection templates exist at all.
    enabled: bool


class TracingTierDefaults(ConfigModel):
    # The share of new traces the app's SDK samples (parentbased_traceidratio). Every request
    # in dev; in staging enough to see each endpoint several times a minute under test load; in
    # prod a slice of its volume, since X-Ray bills per trace recorded and retrieved.
    sampling_ratio: float


class TierDefaults(ConfigModel):
    """Config values a stack gets unless it sets them."""

    protect_stateful_resources: bool
    kms_deletion_window_days: int
    log_retention_days: int
    database: DatabaseTierDefaults
    api: ApiTierDefaults
    service_defaults: ServiceTierDefaults
    monitoring: MonitoringTierDefaults
    image: ImageTierDefaults
    costs: CostTierDefaults
    chaos: ChaosTierDefaults
    tracing: TracingTierDefaults


class TierPolicy(BaseModel):
    """Floors that a stack of this tier may not go below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Stateful resources (keys, topics, log groups, the database) carry `protect=True`.
    require_protect: bool
    # A KMS key scheduled for deletion can be cancelled only inside this window.
    min_kms_deletion_window_days: int
    # Somebody must receive the alarms.
    require_alert_subscriber: bool
    # The AWS provider refuses to run against any account not listed.
    require_allowed_account_ids: bool
    min_log_retention_days: int
    min_backup_retention_days: int
    require_multi_az: bool
    require_deletion_protection: bool
    require_final_snapshot: bool
    require_performance_insights: bool
    require_enhanced_monitoring: bool
    # Cost guard: instance classes a stack of this tier may run the database on (regex).
    database_instance_classes: str
    # The hop from the API gateway's VPC link to the load balancer is TLS (an HTTPS listener).
    require_internal_tls: bool = False
    # Images are pinned by digest (what was built and tested is what runs), not by tag.
    require_image_digest: bool


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: TierDefaults
    policy: TierPolicy


TIERS: dict[Environment, Tier] = {
    "dev": Tier(
        defaults=TierDefaults(
            protect_stateful_resources=False,
            kms_deletion_window_days=7,
            log_retention_days=7,
            database=DatabaseTierDefaults(
                instance_class="db.t4g.micro",
                allocated_storage_gb=20,
                max_allocated_storage_gb=50,
                backup_retention_days=1,
                multi_az=False,
                deletion_protection=False,
                final_snapshot=False,
                performance_insights=False,
                monitoring_interval_seconds=0,
                disaster_recovery=DisasterRecoveryTierDefaults(enabled=False),
            ),
            api=ApiTierDefaults(throttling_burst_limit=50, throttling_rate_limit=20),
            # The idle color runs nothing in dev; prod keeps it warm for instant rollback.
            service_defaults=ServiceTierDefaults(
                replicas=1, preview_replica_count=1, max_replicas=2
            ),
            monitoring=MonitoringTierDefaults(
                database=DatabaseAlarmTierDefaults(
                    cpu_percent=90,
                    free_storage_percent=10,
                    freeable_memory_percent=10,
                    connections_percent=90,
                    read_latency_p90_ms=50,
                    write_latency_p90_ms=50,
                    load_per_vcpu=1.0,
                ),
                api=ApiAlarmTierDefaults(
                    server_error_rate=0.05, client_error_rate=0.1, latency_p90_ms=3000
                ),
                load_balancer=LoadBalancerAlarmTierDefaults(max_unhealthy_hosts=0),
                service=ServiceAlarmTierDefaults(max_error_logs_per_minute=50),
            ),
            image=ImageTierDefaults(keep_tagged_images=30),
            costs=CostTierDefaults(monthly_budget_usd=300, anomaly_threshold_usd=25),
            chaos=ChaosTierDefaults(enabled=True),
            tracing=TracingTierDefaults(sampling_ratio=1.0),
        ),
        policy=TierPolicy(
            require_protect=False,
            min_kms_deletion_window_days=7,
            require_alert_subscriber=False,
            require_allowed_account_ids=False,
            min_log_retention_days=1,
            min_backup_retention_days=1,
            require_multi_az=False,
            require_deletion_protection=False,
            require_final_snapshot=False,
            require_performance_insights=False,
            require_enhanced_monitoring=False,
            database_instance_classes=r"db\.t4g\.(micro|small|medium)",
            require_image_digest=False,
        ),
    ),
    "staging": Tier(
        defaults=TierDefaults(
            protect_stateful_resources=False,
            kms_deletion_window_days=14,
            log_retention_days=30,
            database=DatabaseTierDefaults(
                instance_class="db.t4g.medium",
                allocated_storage_gb=50,
                max_allocated_storage_gb=200,
                backup_retention_days=7,
                multi_az=False,
                # A staging database holds weeks of test data: delete it on purpose only.
                deletion_protection=True,
                final_snapshot=True,
                performance_insights=True,
                monitoring_interval_seconds=60,
                disaster_recovery=DisasterRecoveryTierDefaults(enabled=False),
            ),
            api=ApiTierDefaults(throttling_burst_limit=200, throttling_rate_limit=100),
            service_defaults=ServiceTierDefaults(
                replicas=2, preview_replica_count=1, max_replicas=4
            ),
            monitoring=MonitoringTierDefaults(
                database=DatabaseAlarmTierDefaults(
                    cpu_percent=90,
                    free_storage_percent=10,
                    freeable_memory_percent=25,
                    connections_percent=90,
                    read_latency_p90_ms=20,
                    write_latency_p90_ms=20,
                    load_per_vcpu=1.0,
                ),
                api=ApiAlarmTierDefaults(
                    server_error_rate=0.05, client_error_rate=0.05, latency_p90_ms=2500
                ),
                load_balancer=LoadBalancerAlarmTierDefaults(max_unhealthy_hosts=0),
                service=ServiceAlarmTierDefaults(max_error_logs_per_minute=10),
            ),
            image=ImageTierDefaults(keep_tagged_images=None),
            costs=CostTierDefaults(monthly_budget_usd=1000, anomaly_threshold_usd=100),
            chaos=ChaosTierDefaults(enabled=True),
            tracing=TracingTierDefaults(sampling_ratio=0.25),
        ),
        policy=TierPolicy(
            require_protect=False,
            min_kms_deletion_window_days=7,
            require_alert_subscriber=True,
            require_allowed_account_ids=False,
            min_log_retention_days=30,
            min_backup_retention_days=7,
            require_multi_az=False,
            require_deletion_protection=False,
            require_final_snapshot=True,
            require_performance_insights=True,
            require_enhanced_monitoring=True,
            database_instance_classes=r"db\.(t4g|m7g|m6g)\.(medium|large|xlarge)",
            require_image_digest=True,
        ),
    ),
    "prod": Tier(
        defaults=TierDefaults(
            protect_stateful_resources=True,
            kms_deletion_window_days=30,
            log_retention_days=365,
            database=DatabaseTierDefaults(
                instance_class="db.m7g.large",
                allocated_storage_gb=100,
                max_allocated_storage_gb=1000,
                backup_retention_days=30,
                multi_az=True,
                deletion_protection=True,
                final_snapshot=True,
                performance_insights=True,
                monitoring_interval_seconds=30,
                disaster_recovery=DisasterRecoveryTierDefaults(enabled=True),
            ),
            api=ApiTierDefaults(throttling_burst_limit=1000, throttling_rate_limit=500),
            service_defaults=ServiceTierDefaults(
                replicas=3, preview_replica_count=3, max_replicas=10
            ),
            monitoring=MonitoringTierDefaults(
                database=DatabaseAlarmTierDefaults(
                    cpu_percent=80,
                    free_storage_percent=10,
                    freeable_memory_percent=25,
                    connections_percent=80,
                    read_latency_p90_ms=20,
                    write_latency_p90_ms=20,
                    load_per_vcpu=1.0,
                ),
                api=ApiAlarmTierDefaults(
                    server_error_rate=0.05, client_error_rate=0.05, latency_p90_ms=1500
                ),
                load_balancer=LoadBalancerAlarmTierDefaults(max_unhealthy_hosts=0),
                service=ServiceAlarmTierDefaults(max_error_logs_per_minute=10),
            ),
            image=ImageTierDefaults(keep_tagged_images=None),
            costs=CostTierDefaults(monthly_budget_usd=5000, anomaly_threshold_usd=300),
            chaos=ChaosTierDefaults(enabled=False),
            tracing=TracingTierDefaults(sampling_ratio=0.05),
        ),
        policy=TierPolicy(
            require_protect=True,
            min_kms_deletion_window_days=30,
            require_alert_subscriber=True,
            require_allowed_account_ids=True,
            min_log_retention_days=365,
            min_backup_retention_days=30,
            require_multi_az=True,
            require_deletion_protection=True,
            require_final_snapshot=True,
            require_performance_insights=True,
            require_enhanced_monitoring=True,
            database_instance_classes=r"db\.(m7g|m6g|r7g|r6g)\.(large|\d*xlarge)",
            require_internal_tls=True,
            require_image_digest=True,
        ),
    ),
}
