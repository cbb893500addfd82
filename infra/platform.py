"""AnalyticsPlatform: the one component that holds every other, wired from typed settings."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.alerts import Alerts
from infra.api_gateway import ApiGateway
from infra.aws_account import AwsAccount
from infra.blue_green import BlueGreenService, LoadBalancerBinding
from infra.chaos import ChaosExperiments, ChaosTarget, PodTarget, pods_deleted
from infra.component import PlatformComponent, StackContext
from infra.container_image import ContainerImage
from infra.costs import CostGuardrails
from infra.database import Database
from infra.database_access import ClusterIdentity, DatabaseConnection
from infra.kms import ServiceGrant, create_key
from infra.monitoring import Monitoring, WatchedApi, WatchedDatabase
from infra.network import private_subnet_ids
from infra.providers import Providers
from infra.rds_classes import INSTANCE_CLASSES
from infra.settings import Settings
from infra.tracing import TraceCollector


def _logs_condition(partition: str, account_id: str, region: str) -> dict[str, Any]:
    # Only log groups of this account and region may use the key.
    return {
        "ArnLike": {
            "kms:EncryptionContext:aws:logs:arn": (
                f"arn:{partition}:logs:{region}:{account_id}:log-group:*"
            )
        }
    }


class AnalyticsPlatform(PlatformComponent):
    def __init__(self, name: str, settings: Settings, providers: Providers) -> None:
        ctx = StackContext.from_settings(settings)
        super().__init__(
            "index:AnalyticsPlatform",
            name,
            ctx,
            pulumi.ResourceOptions(providers=providers.inherited),
        )
        config = settings.config
        account = AwsAccount.lookup(self, config.aws.region)
        subnets = private_subnet_ids(self, config.network, ctx)

        # The platform key encrypts log groups and the image repository.
        platform_key = create_key(
            self,
            f"Logs and images of {ctx.project}/{ctx.stack}",
            account,
            grants=[
                ServiceGrant(
                    "AllowCloudWatchLogsOfThisAccount",
                    f"logs.{config.aws.region}.amazonaws.com",
                    actions=(
                        "kms:Encrypt*",
                        "kms:Decrypt*",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:Describe*",
                    ),
                    condition=_logs_condition,
                )
            ],
            name="platform",
        )
        self.alerts = Alerts(
            "alerts",
            config.alerts,
            paging_endpoint=settings.secrets.alerts_paging_endpoint,
            account=account,
            ctx=ctx,
            opts=self.child_opts(),
        )
        self.costs = CostGuardrails(
            "costs",
            config.costs,
            topic_arn=self.alerts.topic_arn,
            topic_policy=self.alerts.topic_policy,
            ctx=ctx,
            opts=self.child_opts(),
        )
        self.database = Database(
            "database",
            config.database,
            config.network,
            subnet_ids=subnets,
            logs_key_arn=platform_key.arn,
            account=account,
            ctx=ctx,
            dr_provider=providers.aws_dr,
            opts=self.child_opts(),
        )
        fronted = next(s for s in config.services if s.name == config.api.service)
        self.api = ApiGateway(
            "api",
            config.api,
            config.network,
            subnet_ids=subnets,
            logs_key_arn=platform_key.arn,
            ctx=ctx,
            canary_weight=fronted.canary.weight,
            opts=self.child_opts(),
        )
        self.image = ContainerImage(
            "image",
            config.image,
            key_arn=platform_key.arn,
            ctx=ctx,
            build_tag=settings.image_tag,
            partition=account.partition,
            opts=self.child_opts(),
        )

        self.monitoring = Monitoring(
            "monitoring",
            config.monitoring,
            region=config.aws.region,
            topic_arn=self.alerts.topic_arn,
            logs_key_arn=platform_key.arn,
            database=WatchedDatabase(
                identifier=self.database.identifier,
                instance_class=INSTANCE_CLASSES[config.database.instance_class],
                allocated_storage_gb=config.database.allocated_storage_gb,
                max_allocated_storage_gb=config.database.max_allocated_storage_gb,
                instance_identifier=self.database.instance_identifier,
                performance_insights=config.database.performance_insights,
            ),
            api=WatchedApi(
                api_id=self.api.api_id,
                stage=self.api.stage_name,
                service=config.api.service,
                load_balancer_arn_suffix=self.api.load_balancer_arn_suffix,
                target_group_arn_suffixes=self.api.target_group_arn_suffixes,
                preview_target_group_arn_suffixes=self.api.preview_target_group_arn_suffixes,
            ),
            services=[service.name for service in config.services],
            ctx=ctx,
            sampling_ratio=config.tracing.sampling_ratio,
            cluster_name=config.kubernetes.cluster_name,
            opts=self.child_opts(),
        )

        connection = DatabaseConnection(
            host=self.database.endpoint,
            port=self.database.port,
            name=self.database.database_name,
            resource_id=self.database.resource_id,
            master_secret_arn=self.database.master_secret_arn,
            key_arn=self.database.key_arn,
        )
        cluster = ClusterIdentity(config.kubernetes.cluster_name or "", account)
        self.tracing = TraceCollector(
            "tracing",
            config.tracing,
            region=config.aws.region,
            sources=[service.name for service in config.services],
            cluster=cluster,
            ctx=ctx,
            opts=self.child_opts(),
        )
        self.services = [
            BlueGreenService(
                service.name,
                service,
                default_image=self.image.reference,
                database=connection,
                cluster=cluster,
                ctx=ctx,
                scrape=config.monitoring.prometheus,
                traces=self.tracing.export,
                binding=(
                    LoadBalancerBinding(
                        stable_target_group_arn=self.api.target_group_arns[service.name],
                        preview_target_group_arn=self.api.preview_target_group_arns[service.name],
                        node_port=config.api.node_port,
                        preview_node_port=config.api.preview_node_port,
                    )
                    if service.name == config.api.service
                    else None
                ),
                opts=self.child_opts(),
            )
            for service in config.services
        ]

        fronted_service = next(s for s in self.services if s.settings.name == config.api.service)
        cluster_name = config.kubernetes.cluster_name
        chaos = (
            ChaosExperiments(
                "chaos",
                ChaosTarget(
                    database_arn=self.database.arn,
                    multi_az=config.database.multi_az,
                    stop_alarm_arns=[self.monitoring.alarm_arns[f"{config.api.service}-unhealthy"]],
                    # Only on EKS: FIS reaches pods through the EKS cluster it names.
                    pods=PodTarget(
                        cluster_name=cluster_name,
                        namespace=fronted_service.namespace,
                        namespace_resource=fronted_service.namespace_resource,
                        active_color=fronted.active_color,
                    )
                    if cluster_name and pods_deleted(fronted.replicas) >= 1
                    else None,
                ),
                account=account,
                logs_key_arn=platform_key.arn,
                ctx=ctx,
                opts=self.child_opts(),
            )
            if config.chaos.enabled
            else None
        )

        self.exports: dict[str, pulumi.Input[Any]] = {
            "environment": config.environment,
            "region": config.aws.region,
            "alertsTopicArn": self.alerts.topic_arn,
            "databaseEndpoint": self.database.endpoint,
            "databasePort": self.database.port,
            "databaseName": self.database.database_name,
            "databaseMasterSecretArn": self.database.master_secret_arn,
            "databaseSecurityGroupId": self.database.security_group_id,
            "apiEndpoint": self.api.endpoint,
            "apiId": self.api.api_id,
            "apiStageName": self.api.stage_name,
            "targetGroupArns": self.api.target_group_arns,
            "previewTargetGroupArns": self.api.preview_target_group_arns,
            "loadBalancerArnSuffix": self.api.load_balancer_arn_suffix,
            "targetGroupArnSuffixes": self.api.target_group_arn_suffixes,
            "previewTargetGroupArnSuffixes": self.api.preview_target_group_arn_suffixes,
            "apiPreviewInvokeArn": self.api.preview_invoke_arn,
            "imageRepositoryUrl": self.image.repository_url,
            "imageReference": self.image.reference,
            "dashboardName": self.monitoring.dashboard_name,
            "budgetName": self.costs.budget_name,
            "chaosTemplateIds": chaos.template_ids if chaos else {},
            "applicationLogGroups": self.monitoring.application_log_groups,
            "tracesEndpoint": self.tracing.export.endpoint,
            "services": {
                s.settings.name: {
                    "namespace": s.namespace,
                    "activeColor": s.settings.active_color,
                    "activeService": s.active_service_name,
                    "previewService": s.preview_service_name,
                }
                for s in self.services
            },
        }
        self.finish(self.exports)
