"""ChaosExperiments: AWS Fault Injection Service templates that test the platform's recovery.

`database-reboot` reboots the stack's RDS instance through `aws:rds:reboot-db-instances`; on a
Multi-AZ instance (prod) with `forceFailover`, i.e. a failover to the standby. Each template
stops as soon as the fronted service's composite `<service>-unhealthy` alarm goes to ALARM, runs
under a role that may reboot only this instance, and logs each run to its own log group.

What FIS cannot do here: `aws:eks:pod-delete` and the other `aws:eks:pod` actions need target
pods with `readOnlyRootFilesystem: false` (FIS user guide, "Use the AWS FIS aws:eks:pod
actions", Limitations), which the platform's pods refuse (policy k8s-read-only-root-filesystem);
and FIS has no action that delays or fails requests of an API Gateway HTTP API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws_account import AwsAccount
from infra.component import PlatformComponent, StackContext
from infra.iam import service_trust_policy

# FIS's stop-condition source for a CloudWatch alarm.
ALARM_SOURCE = "aws:cloudwatch:alarm"
# What FIS asks of the role to deliver an experiment's log to CloudWatch Logs (vended logs).
LOG_DELIVERY_ACTIONS = (
    "logs:CreateLogDelivery",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
)
# FIS actions reference, aws:rds:reboot-db-instances: "Permissions".
REBOOT_ACTIONS = ("rds:RebootDBInstance", "rds:DescribeDBInstances")


@dataclass(frozen=True)
class ChaosTarget:
    """What the experiments act on and what stops them."""

    database_arn: pulumi.Input[str]
    multi_az: bool
    # The alarms whose ALARM state stops every experiment at once.
    stop_alarm_arns: list[pulumi.Input[str]]


def fis_trust_policy(account_id: str, partition: str, region: str) -> str:
    """Only FIS experiments of this account may assume the role (confused-deputy guard)."""
    return service_trust_policy(
        "fis.amazonaws.com",
        condition={
            "StringEquals": {"aws:SourceAccount": account_id},
            "ArnLike": {"aws:SourceArn": f"arn:{partition}:fis:{region}:{account_id}:experiment/*"},
        },
    )


def fis_role_policy(database_arn: str, account_id: str, partition: str, region: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "RebootThisDatabaseOnly",
                    "Effect": "Allow",
                    "Action": list(REBOOT_ACTIONS),
                    "Resource": database_arn,
                },
                {
                    # CreateLogDelivery supports no resource-level permission.
                    "Sid": "CreateTheExperimentLogDelivery",
                    "Effect": "Allow",
                    "Action": LOG_DELIVERY_ACTIONS[0],
                    "Resource": "*",
                },
                {
                    # These must name log groups with a wildcard, not one group (CloudWatch
                    # Logs, "Logs sent to CloudWatch Logs": user permissions).
                    "Sid": "LetTheLogGroupAcceptTheExperimentLog",
                    "Effect": "Allow",
                    "Action": list(LOG_DELIVERY_ACTIONS[1:]),
                    "Resource": f"arn:{partition}:logs:{region}:{account_id}:log-group:*",
                },
            ],
        },
        sort_keys=True,
    )


class ChaosExperiments(PlatformComponent):
    template_ids: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        target: ChaosTarget,
        account: AwsAccount,
        logs_key_arn: pulumi.Input[str],
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("chaos:ChaosExperiments", name, ctx, opts)
        role = self._role(target, account)
        log_group = self.log_group(f"{name}-log", f"/{ctx.project}/{ctx.stack}/chaos", logs_key_arn)
        template = aws.fis.ExperimentTemplate(
            f"{name}-database-reboot",
            description=(
                f"{ctx.project}/{ctx.stack}: reboot the database"
                + (" with a Multi-AZ failover" if target.multi_az else "")
            ),
            role_arn=role.arn,
            targets=[
                aws.fis.ExperimentTemplateTargetArgs(
                    name="database",
                    resource_type="aws:rds:db",
                    resource_arns=[target.database_arn],
                    selection_mode="ALL",
                )
            ],
            actions=[
                aws.fis.ExperimentTemplateActionArgs(
                    name="reboot",
                    action_id="aws:rds:reboot-db-instances",
                    parameters=[
                        aws.fis.ExperimentTemplateActionParameterArgs(
                            key="forceFailover", value=str(target.multi_az).lower()
                        )
                    ],
                    target=aws.fis.ExperimentTemplateActionTargetArgs(
                        key="DBInstances", value="database"
                    ),
                )
            ],
            stop_conditions=[
                aws.fis.ExperimentTemplateStopConditionArgs(source=ALARM_SOURCE, value=arn)
                for arn in target.stop_alarm_arns
            ],
            log_configuration=aws.fis.ExperimentTemplateLogConfigurationArgs(
                log_schema_version=2,
                cloudwatch_logs_configuration=(
                    aws.fis.ExperimentTemplateLogConfigurationCloudwatchLogsConfigurationArgs(
                        # FIS wants the group's ARN with the `:*` suffix.
                        log_group_arn=log_group.arn.apply(lambda arn: f"{arn}:*")
                    )
                ),
            ),
            tags=self.tags(
                Name=self.physical_name("database-reboot"), Experiment="database-reboot"
            ),
            opts=self.child_opts(),
        )
        self.template_ids = {"database-reboot": template.id}
        self.finish({"templateIds": self.template_ids})

    def _role(self, target: ChaosTarget, account: AwsAccount) -> aws.iam.Role:
        region = account.region
        role = aws.iam.Role(
            f"{self.resource_name}-fis",
            name=self.physical_name("fis", max_length=64),
            description=f"AWS FIS experiments of {self.ctx.project}/{self.ctx.stack}",
            assume_role_policy=pulumi.Output.all(account.account_id, account.partition).apply(
                lambda a: fis_trust_policy(a[0], a[1], region)
            ),
            tags=self.tags(),
            opts=self.child_opts(),
        )
        aws.iam.RolePolicy(
            f"{self.resource_name}-fis",
            role=role.id,
            policy=pulumi.Output.all(
                target.database_arn, account.account_id, account.partition
            ).apply(lambda a: fis_role_policy(a[0], a[1], a[2], region)),
            opts=self.child_opts(),
        )
        return role
