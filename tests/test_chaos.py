"""Chaos experiments: AWS FIS templates that reboot (or fail over) the database, stopped by the
platform's own alarms, under a role that can touch only this stack's database."""

from __future__ import annotations

from typing import Any

import pytest

from infra.mock_engine import ProgramRun
from tests.conftest import RunStack, policy_doc, stack_account

TEMPLATE = "aws:fis/experimentTemplate:ExperimentTemplate"
COMPOSITE = "aws:cloudwatch/compositeAlarm:CompositeAlarm"
DB = "aws:rds/instance:Instance"


def _template(run: ProgramRun) -> dict[str, Any]:
    return run.one(TEMPLATE, "chaos-database-reboot").inputs


@pytest.mark.parametrize(("stack", "multi_az"), [("dev", False), ("staging", False)])
def test_the_database_experiment_reboots_this_stacks_instance_only(
    run_stack: RunStack, stack: str, multi_az: bool
) -> None:
    """AWS FIS actions reference, `aws:rds:reboot-db-instances`: target key `DBInstances`,
    resource type `aws:rds:db`, parameter `forceFailover` (RDS RebootDBInstance: true only for
    a Multi-AZ instance)."""
    run = run_stack(stack)
    template = _template(run)
    [target] = template["targets"]
    assert target == {
        "name": "database",
        "resourceType": "aws:rds:db",
        "resourceArns": [run.one(DB).outputs["arn"]],
        "selectionMode": "ALL",
    }
    [action] = template["actions"]
    assert action["actionId"] == "aws:rds:reboot-db-instances"
    assert action["target"] == {"key": "DBInstances", "value": "database"}
    assert action["parameters"] == [{"key": "forceFailover", "value": str(multi_az).lower()}]


def test_an_enabled_prod_experiment_fails_over_to_the_multi_az_standby(
    run_stack: RunStack,
) -> None:
    """RDS "Rebooting a DB instance": with forceFailover a Multi-AZ instance fails over to its
    standby; prod runs Multi-AZ, so its experiment proves the failover the tier pays for."""
    run = run_stack("prod", overrides={"chaos": {"enabled": True}})
    [action] = _template(run)["actions"]
    assert action["parameters"] == [{"key": "forceFailover", "value": "true"}]


def test_prod_has_no_experiment_unless_its_stack_enables_one(run_stack: RunStack) -> None:
    """A template that exists can be started by anyone allowed fis:StartExperiment (FIS user
    guide, "Identity and access management"), so prod's exists only once its stack file says
    `chaos.enabled: true`, a reviewed change."""
    run = run_stack("prod")
    assert run.of_type(TEMPLATE) == []
    assert run.of_type("analytics-platform:chaos:ChaosExperiments") == []
    assert run.outputs["chaosTemplateIds"] == {}
    dev = run_stack("dev", overrides={"chaos": {"enabled": False}})
    assert dev.of_type(TEMPLATE) == []


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_the_experiment_stops_when_the_fronted_service_turns_unhealthy(
    run_stack: RunStack, stack: str
) -> None:
    """AWS FIS "Stop conditions for AWS FIS": source `aws:cloudwatch:alarm`, value the alarm's
    ARN; the experiment stops when the alarm enters ALARM. The composite
    `<service>-unhealthy` alarm already combines 5xx rate, latency, hosts and error logs."""
    run = run_stack(stack)
    composite = run.one(COMPOSITE, "monitoring-analytics-api-unhealthy")
    assert _template(run)["stopConditions"] == [
        {"source": "aws:cloudwatch:alarm", "value": composite.outputs["arn"]}
    ]


def test_each_run_is_logged_to_the_stacks_encrypted_chaos_log_group(run_stack: RunStack) -> None:
    """AWS FIS "Experiment logging": CloudWatch Logs destination by log group ARN (with the
    `:*` suffix), log schema version 2; the group exists first, with the tier's retention."""
    run = run_stack("staging")
    group = run.one("aws:cloudwatch/logGroup:LogGroup", "chaos-log")
    assert group.inputs["name"] == "/analytics-platform/staging/chaos"
    assert group.inputs["retentionInDays"] == 30
    assert group.inputs["kmsKeyId"] == run.one("aws:kms/key:Key", "platform-key").outputs["arn"]
    assert _template(run)["logConfiguration"] == {
        "logSchemaVersion": 2,
        "cloudwatchLogsConfiguration": {"logGroupArn": f"{group.outputs['arn']}:*"},
    }


def test_the_fis_role_is_assumed_only_by_fis_and_reboots_only_this_database(
    run_stack: RunStack,
) -> None:
    """AWS FIS "IAM roles for AWS FIS experiments" (trust fis.amazonaws.com, with
    aws:SourceAccount and aws:SourceArn against the confused deputy), the FIS actions
    reference (rds:RebootDBInstance, rds:DescribeDBInstances) and CloudWatch Logs "Logs sent
    to CloudWatch Logs" (logs:CreateLogDelivery; PutResourcePolicy, DescribeResourcePolicies,
    DescribeLogGroups on log-group:*)."""
    run = run_stack("staging")
    account = stack_account("staging")
    role = run.one("aws:iam/role:Role", "chaos-fis")
    assert _template(run)["roleArn"] == role.outputs["arn"]
    [trust] = policy_doc(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "fis.amazonaws.com"}
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": account},
        "ArnLike": {"aws:SourceArn": f"arn:aws:fis:eu-west-1:{account}:experiment/*"},
    }
    policy = run.one("aws:iam/rolePolicy:RolePolicy", "chaos-fis")
    statements = {s["Sid"]: s for s in policy_doc(policy.inputs["policy"])["Statement"]}
    assert statements["RebootThisDatabaseOnly"]["Action"] == [
        "rds:RebootDBInstance", "rds:DescribeDBInstances"
    ]  # fmt: skip
    assert statements["RebootThisDatabaseOnly"]["Resource"] == run.one(DB).outputs["arn"]
    assert statements["CreateTheExperimentLogDelivery"]["Action"] == "logs:CreateLogDelivery"
    assert statements["LetTheLogGroupAcceptTheExperimentLog"]["Resource"] == (
        f"arn:aws:logs:eu-west-1:{account}:log-group:*"
    )
    assert set(statements) == {
        "RebootThisDatabaseOnly",
        "CreateTheExperimentLogDelivery",
        "LetTheLogGroupAcceptTheExperimentLog",
    }


def test_the_template_ids_are_a_stack_output_for_the_chaos_workflow(run_stack: RunStack) -> None:
    run = run_stack("staging")
    assert run.outputs["chaosTemplateIds"] == {
        "database-reboot": run.one(TEMPLATE, "chaos-database-reboot").id
    }
