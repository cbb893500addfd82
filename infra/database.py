"""Database: RDS for PostgreSQL, private, encrypted, TLS-only, with its logs and DR backups.

Secure by default, as terraform-aws-modules/rds: the master password is managed by RDS in
Secrets Manager (it never enters config or state), IAM authentication is on, storage and
Performance Insights are encrypted with the database's own key, and the only way in is the
PostgreSQL port from the cluster nodes' security group.

Logical names here must never change: a new URN for the instance means a new, empty database.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.aws_account import AwsAccount
from infra.component import PlatformComponent, StackContext
from infra.iam import service_trust_policy
from infra.kms import create_key
from infra.settings import DatabaseSettings, NetworkSettings

LOG_EXPORTS = ("postgresql", "upgrade")
# RDS ships the instance's CA bundle rotation through this id; rsa2048-g1 is AWS's default.
CA_CERT = "rds-ca-rsa2048-g1"
PERFORMANCE_INSIGHTS_RETENTION_DAYS = 7  # the free tier


def parameters(settings: DatabaseSettings) -> list[aws.rds.ParameterGroupParameterArgs]:
    """Parameter group settings: TLS forced, slow statements logged."""
    return [
        aws.rds.ParameterGroupParameterArgs(
            name="rds.force_ssl", value="1", apply_method="immediate"
        ),
        aws.rds.ParameterGroupParameterArgs(
            name="log_min_duration_statement",
            value=str(settings.slow_statement_ms),
            apply_method="immediate",
        ),
    ]


class Database(PlatformComponent):
    endpoint: pulumi.Output[str]
    port: pulumi.Output[int]
    database_name: pulumi.Output[str]
    master_secret_arn: pulumi.Output[str]
    # The DbiResourceId that IAM database authentication names in rds-db:connect ARNs.
    resource_id: pulumi.Output[str]
    # The key of the storage and of the master secret: reading that secret needs kms:Decrypt.
    key_arn: pulumi.Output[str]
    arn: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    identifier: str
    # The same name, known once the instance exists: for what must wait for it.
    instance_identifier: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: DatabaseSettings,
        network: NetworkSettings,
        subnet_ids: pulumi.Output[list[str]],
        logs_key_arn: pulumi.Output[str],
        account: AwsAccount,
        ctx: StackContext,
        dr_provider: pulumi.ProviderResource | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("database:Database", name, ctx, opts)
        self.identifier = self.physical_name()

        key = create_key(self, f"Database of {ctx.project}/{ctx.stack}", account)
        subnet_group = aws.rds.SubnetGroup(
            name,
            name=self.identifier,
            description=f"Private subnets of {self.identifier}",
            subnet_ids=subnet_ids,
            tags=self.tags(),
            opts=self.child_opts(),
        )
        security_group = aws.ec2.SecurityGroup(
            name,
            name=self.identifier,
            description=f"PostgreSQL {self.identifier}: cluster nodes only",
            vpc_id=network.vpc_id,
            tags=self.tags(Name=self.identifier),
            opts=self.child_opts(),
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-from-cluster-nodes",
            security_group_id=security_group.id,
            referenced_security_group_id=network.cluster_node_security_group_id,
            ip_protocol="tcp",
            from_port=settings.port,
            to_port=settings.port,
            description="PostgreSQL from the Kubernetes cluster nodes",
            tags=self.tags(),
            opts=self.child_opts(),
        )
        # The family is part of the name: a major upgrade creates the new group before the
        # instance moves to it, and only then deletes the old one.
        parameter_group = aws.rds.ParameterGroup(
            name,
            name=self.physical_name(f"pg{settings.major_version}"),
            family=f"postgres{settings.major_version}",
            description=f"{self.identifier}: TLS only, slow statements logged",
            parameters=parameters(settings),
            tags=self.tags(),
            opts=self.child_opts(),
        )
        # RDS writes its log exports into these groups; creating them first gives them our
        # retention and encryption instead of AWS's never-expire defaults.
        log_groups = [
            self.log_group(
                f"{name}-{export}", f"/aws/rds/instance/{self.identifier}/{export}", logs_key_arn
            )
            for export in LOG_EXPORTS
        ]
        # RDS checks the role's permissions when the instance is created: the instance must wait
        # for the policy attachment, not only for the role.
        monitoring_role, monitoring_policy = (
            self._monitoring_role(account) if settings.monitoring_interval_seconds else (None, None)
        )

        waits_for: list[pulumi.Resource] = [*log_groups]
        if monitoring_policy is not None:
            waits_for.append(monitoring_policy)
        instance = aws.rds.Instance(
            name,
            identifier=self.identifier,
            engine="postgres",
            engine_version=settings.engine_version,
            instance_class=settings.instance_class,
            db_name=settings.database_name,
            port=settings.port,
            # Storage: gp3, encrypted with our key, growing on its own up to the ceiling.
            storage_type="gp3",
            allocated_storage=settings.allocated_storage_gb,
            max_allocated_storage=settings.max_allocated_storage_gb,
            storage_encrypted=True,
            kms_key_id=key.arn,
            # Credentials: RDS keeps the master password in Secrets Manager, under our key.
            username=settings.master_username,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=key.arn,
            iam_database_authentication_enabled=True,
            # Network: private subnets, our security group, never public.
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[security_group.id],
            publicly_accessible=False,
            ca_cert_identifier=CA_CERT,
            parameter_group_name=parameter_group.name,
            # Availability and data safety.
            multi_az=settings.multi_az,
            backup_retention_period=settings.backup_retention_days,
            backup_window=settings.backup_window,
            maintenance_window=settings.maintenance_window,
            copy_tags_to_snapshot=True,
            delete_automated_backups=False,
            deletion_protection=settings.deletion_protection,
            skip_final_snapshot=not settings.final_snapshot,
            final_snapshot_identifier=self._final_snapshot_name(settings),
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            # Protected stacks change in the maintenance window, never mid-day.
            apply_immediately=not ctx.protect,
            # Observability.
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            performance_insights_enabled=settings.performance_insights,
            performance_insights_kms_key_id=key.arn if settings.performance_insights else None,
            performance_insights_retention_period=(
                PERFORMANCE_INSIGHTS_RETENTION_DAYS if settings.performance_insights else None
            ),
            monitoring_interval=settings.monitoring_interval_seconds,
            monitoring_role_arn=monitoring_role.arn if monitoring_role else None,
            tags=self.tags(),
            opts=self.stateful_opts(depends_on=waits_for),
        )

        if settings.disaster_recovery.enabled:
            if dr_provider is None:
                raise ValueError("disaster recovery needs the DR region's AWS provider")
            dr_key = create_key(
                self,
                f"Database backups of {ctx.project}/{ctx.stack}, replicated for DR",
                account,
                suffix="dr-key",
                provider=dr_provider,
            )
            aws.rds.InstanceAutomatedBackupsReplication(
                f"{name}-dr-backups",
                source_db_instance_arn=instance.arn,
                kms_key_id=dr_key.arn,
                retention_period=settings.disaster_recovery.retention_days,
                opts=self.child_opts(provider=dr_provider),
            )

        self.endpoint = instance.address
        self.arn = instance.arn
        self.port = instance.port
        self.database_name = instance.db_name
        self.master_secret_arn = instance.master_user_secrets.apply(
            lambda secrets: (secrets[0].secret_arn or "") if secrets else ""
        )
        self.resource_id = instance.resource_id
        self.instance_identifier = instance.identifier
        self.key_arn = key.arn
        self.security_group_id = security_group.id
        self.finish(
            {
                "endpoint": self.endpoint,
                "port": self.port,
                "databaseName": self.database_name,
                "masterSecretArn": self.master_secret_arn,
                "resourceId": self.resource_id,
                "securityGroupId": self.security_group_id,
            }
        )

    def _final_snapshot_name(self, settings: DatabaseSettings) -> pulumi.Output[str] | None:
        """`<identifier>-final-<random>`: a fixed name would collide on the second destroy.

        The suffix is created with the instance and destroyed with it, so every instance
        lifetime ends in a snapshot of its own name; changing the name updates the instance in
        place (RDS reads it only when the instance is deleted).
        """
        if not settings.final_snapshot:
            return None
        suffix = random.RandomId(
            f"{self.resource_name}-final-snapshot",
            byte_length=4,
            opts=self.child_opts(),
        )
        # 255 characters is RDS's limit for snapshot identifiers; ours stays far below it.
        return pulumi.Output.concat(self.physical_name("final"), "-", suffix.hex)

    def _monitoring_role(
        self, account: AwsAccount
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicyAttachment]:
        """The role RDS enhanced monitoring uses to publish OS metrics."""
        role = aws.iam.Role(
            f"{self.resource_name}-monitoring",
            name=self.physical_name("monitoring", max_length=64),
            description=f"RDS enhanced monitoring for {self.identifier}",
            assume_role_policy=account.account_id.apply(
                lambda account_id: service_trust_policy(
                    "monitoring.rds.amazonaws.com",
                    condition={"StringEquals": {"aws:SourceAccount": account_id}},
                )
            ),
            tags=self.tags(),
            opts=self.child_opts(),
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{self.resource_name}-monitoring",
            role=role.name,
            policy_arn=pulumi.Output.format(
                "arn:{0}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole",
                account.partition,
            ),
            opts=self.child_opts(),
        )
        return role, attachment
