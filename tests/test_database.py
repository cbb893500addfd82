"""Database: RDS PostgreSQL, secure and highly available by default, differing only by tier."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra.mock_engine import FakeCloud, ProgramRun, ResourceRecord
from infra.settings import InvalidConfig, parse_settings
from tests.conftest import PROJECT, STACKS, RunStack, stack_account, stack_config, stack_yaml

DB = "aws:rds/instance:Instance"
KEY = "aws:kms/key:Key"
SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
REPLICATION = "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication"


def _db(run: ProgramRun) -> dict[str, Any]:
    return run.one(DB, "database").inputs


def _node_sg(stack: str) -> str:
    return stack_yaml(stack)["config"]["analytics-platform:network"]["clusterNodeSecurityGroupId"]


def test_prod_database_is_multi_az_deletion_protected_and_protected(run_stack: RunStack) -> None:
    record = run_stack("prod").one(DB, "database")
    assert record.inputs["multiAz"] is True
    assert record.inputs["deletionProtection"] is True
    assert record.protect is True
    assert record.inputs["skipFinalSnapshot"] is False
    assert record.inputs["finalSnapshotIdentifier"].startswith(
        "analytics-platform-prod-database-final-"
    )


def test_dev_database_skips_the_final_snapshot_and_is_not_protected(run_stack: RunStack) -> None:
    record = run_stack("dev").one(DB, "database")
    assert record.inputs["skipFinalSnapshot"] is True
    assert "finalSnapshotIdentifier" not in record.inputs
    assert record.inputs["multiAz"] is False
    assert record.inputs["deletionProtection"] is False
    assert record.protect is False


@pytest.mark.parametrize(
    ("stack", "retention", "insights", "interval", "final_snapshot", "multi_az"),
    [
        ("dev", 1, False, 0, False, False),
        ("staging", 7, True, 60, True, False),
        ("prod", 30, True, 30, True, True),
    ],
)
def test_each_tier_gets_its_row_of_the_table(
    run_stack: RunStack,
    stack: str,
    retention: int,
    insights: bool,
    interval: int,
    final_snapshot: bool,
    multi_az: bool,
) -> None:
    run = run_stack(stack)
    db = _db(run)
    assert db["backupRetentionPeriod"] == retention
    assert db["performanceInsightsEnabled"] is insights
    assert db["monitoringInterval"] == interval
    assert db["skipFinalSnapshot"] is not final_snapshot
    assert db["multiAz"] is multi_az
    roles = [r for r in run.of_type("aws:iam/role:Role") if r.name == "database-monitoring"]
    if interval:
        [role] = roles
        assert db["monitoringRoleArn"] == role.outputs["arn"]
        trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
        assert trust["Principal"] == {"Service": "monitoring.rds.amazonaws.com"}
        attachment = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        assert attachment.inputs["policyArn"].endswith(
            ":iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
        )
        assert db["performanceInsightsKmsKeyId"] == db["kmsKeyId"]
    else:
        assert roles == []
        assert "monitoringRoleArn" not in db


def test_backup_retention_is_configurable_within_policy(run_stack: RunStack) -> None:
    run = run_stack("prod", overrides={"database": {"backupRetentionDays": 35}})
    assert _db(run)["backupRetentionPeriod"] == 35
    with pytest.raises(InvalidConfig, match=r"database\.backupRetentionDays = 7: .*at least 30"):
        run_stack("prod", overrides={"database": {"backupRetentionDays": 7}})
    with pytest.raises(InvalidConfig, match=r"database\.backupRetentionDays = 36"):
        run_stack("dev", overrides={"database": {"backupRetentionDays": 36}})


@pytest.mark.parametrize(
    ("key", "value"),
    [("multiAz", False), ("deletionProtection", False), ("finalSnapshot", False),
     ("performanceInsights", False), ("monitoringIntervalSeconds", 0),
     ("instanceClass", "db.t4g.micro")],
)  # fmt: skip
def test_prod_safeties_cannot_be_switched_off(run_stack: RunStack, key: str, value: Any) -> None:
    with pytest.raises(InvalidConfig, match=rf"stack prod: analytics-platform:database\.{key} = "):
        run_stack("prod", overrides={"database": {key: value}})


@pytest.mark.parametrize("stack", STACKS)
def test_storage_is_encrypted_with_the_databases_own_rotating_key(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    db = _db(run)
    key = run.one(KEY, "database-key")
    assert key.inputs["enableKeyRotation"] is True
    assert db["storageEncrypted"] is True
    assert db["kmsKeyId"] == key.outputs["arn"]
    assert db["storageType"] == "gp3"
    assert db["maxAllocatedStorage"] > db["allocatedStorage"] >= 20


@pytest.mark.parametrize("stack", STACKS)
def test_master_password_is_managed_by_rds_and_never_in_config_or_state(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    db = _db(run)
    assert db["manageMasterUserPassword"] is True
    assert db["masterUserSecretKmsKeyId"] == run.one(KEY, "database-key").outputs["arn"]
    assert "password" not in db
    assert "passwordWo" not in db
    assert run.outputs["databaseMasterSecretArn"].startswith(
        f"arn:aws:secretsmanager:eu-west-1:{stack_account(stack)}:secret:rds!db-"
    )


@pytest.mark.parametrize("stack", STACKS)
def test_database_is_private_iam_authenticated_and_maintained(
    run_stack: RunStack, stack: str
) -> None:
    db = _db(run_stack(stack))
    assert db["publiclyAccessible"] is False
    assert db["iamDatabaseAuthenticationEnabled"] is True
    assert db["enabledCloudwatchLogsExports"] == ["postgresql", "upgrade"]
    assert db["autoMinorVersionUpgrade"] is True
    assert db["copyTagsToSnapshot"] is True
    assert db["deleteAutomatedBackups"] is False
    assert db["engine"] == "postgres"


def _parameter_group(run: ProgramRun) -> ResourceRecord:
    return run.one("aws:rds/parameterGroup:ParameterGroup")


def test_parameter_group_forces_tls_and_logs_slow_statements(run_stack: RunStack) -> None:
    run = run_stack("staging")
    group = _parameter_group(run)
    params = {p["name"]: (p["value"], p["applyMethod"]) for p in group.inputs["parameters"]}
    # Both are dynamic parameters, so RDS applies them without a reboot: ModifyDBParameterGroup,
    # ApplyMethod "immediate | pending-reboot" (immediate for dynamic parameters only).
    assert params == {
        "rds.force_ssl": ("1", "immediate"),
        "log_min_duration_statement": ("500", "immediate"),
    }
    assert group.inputs["family"] == "postgres18"
    assert _db(run)["engineVersion"] == "18"
    assert _db(run)["parameterGroupName"] == group.inputs["name"]


def test_parameter_group_family_follows_the_engine_major(run_stack: RunStack) -> None:
    run = run_stack("dev", overrides={"database": {"engineVersion": "17.6"}})
    group = _parameter_group(run)
    assert group.inputs["family"] == "postgres17"
    assert group.inputs["name"] == "analytics-platform-dev-database-pg17"
    assert _db(run)["engineVersion"] == "17.6"


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_cluster_nodes_reach_the_database_port(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    db_sg = run.one(SG, "database")
    assert _db(run)["vpcSecurityGroupIds"] == [db_sg.id]
    assert "ingress" not in db_sg.inputs
    rules = [r for r in run.of_type(INGRESS) if r.inputs["securityGroupId"] == db_sg.id]
    assert len(rules) == 1
    rule = rules[0].inputs
    assert (rule["fromPort"], rule["toPort"], rule["ipProtocol"]) == (5432, 5432, "tcp")
    assert rule["referencedSecurityGroupId"] == _node_sg(stack)
    assert "cidrIpv4" not in rule
    assert "cidrIpv6" not in rule


@pytest.mark.parametrize("stack", STACKS)
def test_no_rule_in_any_stack_opens_anything_to_the_world(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    for record in run.of_type(INGRESS) + run.of_type(EGRESS):
        assert record.inputs.get("cidrIpv4") not in ("0.0.0.0/0",), record.urn
        assert record.inputs.get("cidrIpv6") not in ("::/0",), record.urn
        assert record.inputs.get("referencedSecurityGroupId"), record.urn
    for group in run.of_type(SG):
        assert "ingress" not in group.inputs
        assert "egress" not in group.inputs


@pytest.mark.parametrize(("stack", "days"), [("dev", 7), ("staging", 30), ("prod", 365)])
def test_rds_log_groups_exist_first_with_retention_and_encryption(
    run_stack: RunStack, stack: str, days: int
) -> None:
    run = run_stack(stack)
    db = run.one(DB, "database")
    platform_key = run.one(KEY, "platform-key").outputs["arn"]
    for export in ("postgresql", "upgrade"):
        group = run.one("aws:cloudwatch/logGroup:LogGroup", f"database-{export}")
        assert group.inputs["name"] == f"/aws/rds/instance/{db.inputs['identifier']}/{export}"
        assert group.inputs["retentionInDays"] == days
        assert group.inputs["kmsKeyId"] == platform_key
        assert group.urn in db.dependencies


def test_platform_key_lets_cloudwatch_logs_of_this_region_and_account_use_it(
    run_stack: RunStack,
) -> None:
    key = run_stack("prod").one(KEY, "platform-key")
    statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    logs = statements["AllowCloudWatchLogsOfThisAccount"]
    assert logs["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}
    assert logs["Condition"] == {
        "ArnLike": {
            "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:eu-west-1:123456789012:log-group:*"
        }
    }


def _provider_name(record: ResourceRecord) -> str:
    assert record.provider is not None
    return record.provider.rpartition("::")[0].rpartition("::")[2]


def test_prod_replicates_backups_to_the_dr_region_under_a_dr_key(run_stack: RunStack) -> None:
    run = run_stack("prod")
    replication = run.one(REPLICATION)
    dr_key = run.one(KEY, "database-dr-key")
    assert replication.inputs["sourceDbInstanceArn"] == run.one(DB, "database").outputs["arn"]
    assert replication.inputs["kmsKeyId"] == dr_key.outputs["arn"]
    assert replication.inputs["retentionPeriod"] == 7
    assert _provider_name(replication) == "aws-dr"
    assert _provider_name(dr_key) == "aws-dr"
    assert dr_key.outputs["arn"].startswith("arn:aws:kms:eu-central-1:")
    assert run.one("pulumi:providers:aws", "aws-dr").inputs["region"] == "eu-central-1"


def test_dr_is_off_by_default_outside_prod_and_can_be_turned_on(run_stack: RunStack) -> None:
    assert run_stack("staging").of_type(REPLICATION) == []
    run = run_stack(
        "staging",
        overrides={"database": {"disasterRecovery": {"enabled": True, "region": "us-east-1"}}},
    )
    assert run.one(REPLICATION).id.startswith("arn:aws:rds:us-east-1:")
    with pytest.raises(InvalidConfig, match=r"disasterRecovery\.region = \"eu-west-1\""):
        run_stack(
            "staging",
            overrides={"database": {"disasterRecovery": {"enabled": True, "region": "eu-west-1"}}},
        )


def test_database_outputs(run_stack: RunStack) -> None:
    run = run_stack("dev")
    db = run.one(DB, "database").outputs
    assert run.outputs["databaseEndpoint"] == db["address"]
    assert run.outputs["databasePort"] == 5432
    assert run.outputs["databaseName"] == "analytics"
    assert run.outputs["databaseSecurityGroupId"] == run.one(SG, "database").id


def test_subnets_must_be_in_distinct_azs(run_stack: RunStack) -> None:
    subnets = stack_yaml("dev")["config"]["analytics-platform:network"]["privateSubnetIds"]
    same_zone = FakeCloud(subnet_zones={subnets[0]: "a", subnets[1]: "a"})
    with pytest.raises(InvalidConfig) as refused:
        run_stack("dev", cloud=same_zone)
    assert refused.value.lines == [
        "stack dev: analytics-platform:network.privateSubnetIds = "
        f'["{subnets[0]}", "{subnets[1]}", ...]: both subnets are in eu-west-1a; allowed: '
        "subnets in distinct availability zones"
    ]


def test_subnets_are_looked_up_in_the_configured_vpc(run_stack: RunStack) -> None:
    run = run_stack("dev")
    lookups = [i for i in run.invokes if i.token.startswith("aws:ec2/getSubnet:")]
    vpc = stack_yaml("dev")["config"]["analytics-platform:network"]["vpcId"]
    assert {i.args["vpcId"] for i in lookups} == {vpc}
    assert len(lookups) == 2
    assert run.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"] == [
        i.args["id"] for i in lookups
    ]


@pytest.mark.parametrize(
    ("network", "path"),
    [
        ({"vpcId": "vpc-1"}, "network.vpcId"),
        ({"privateSubnetIds": ["subnet-0123456789abcdef0"]}, "network.privateSubnetIds"),
        ({"privateSubnetIds": ["sn-1", "sn-2"]}, "network.privateSubnetIds[0]"),
        ({"clusterNodeSecurityGroupId": "0123"}, "network.clusterNodeSecurityGroupId"),
    ],
)
def test_network_ids_are_checked_for_shape(
    run_stack: RunStack, network: dict[str, Any], path: str
) -> None:
    base = stack_yaml("dev")["config"]["analytics-platform:network"]
    with pytest.raises(InvalidConfig, match=re.escape(f"analytics-platform:{path} = ")):
        run_stack("dev", overrides={"network": {**base, **network}})


def test_an_instance_class_without_known_vcpus_and_memory_is_refused(run_stack: RunStack) -> None:
    # The cost guard allows any size of m7g; the alarm thresholds need the class's facts.
    with pytest.raises(
        InvalidConfig,
        match=r"stack prod: analytics-platform:database\.instanceClass = \"db\.m7g\.48xlarge\": "
        r"its vCPUs and memory are unknown",
    ):
        run_stack("prod", overrides={"database": {"instanceClass": "db.m7g.48xlarge"}})


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_instance_waits_for_the_monitoring_policy_not_only_the_role(
    run_stack: RunStack, stack: str
) -> None:
    """ "Setting up and enabling Enhanced Monitoring" (Amazon RDS User Guide): RDS checks the
    monitoring role's permissions (AmazonRDSEnhancedMonitoringRole) when the instance is
    created; a role whose policy is not attached yet fails the first `pulumi up`."""
    run = run_stack(stack)
    attachment = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "database-monitoring")
    record = run.one(DB, "database")
    assert attachment.urn in record.dependencies
    assert (
        record.inputs["monitoringRoleArn"]
        == run.one("aws:iam/role:Role", "database-monitoring").outputs["arn"]
    )


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_each_instance_gets_a_final_snapshot_name_of_its_own(
    run_stack: RunStack, stack: str
) -> None:
    """ "DeleteDBInstance" (Amazon RDS API Reference): FinalDBSnapshotIdentifier must not name an
    existing snapshot, else DBSnapshotAlreadyExists; the snapshot outlives the instance, so a
    fixed name fails the second destroy. The suffix is a RandomId created with the instance and
    destroyed with it: a recreated instance gets a new one, as terraform-aws-modules/rds does
    (random_id). Changing the name updates the instance in place: it is read only on delete
    (hashicorp/terraform#1141, "final_snapshot_id isn't ForceNew")."""
    run = run_stack(stack)
    suffix = run.one("random:index/randomId:RandomId", "database-final-snapshot")
    assert suffix.inputs["byteLength"] == 4
    assert suffix.provider is not None
    assert "pulumi:providers:random" in suffix.provider
    name = _db(run)["finalSnapshotIdentifier"]
    assert name == f"analytics-platform-{stack}-database-final-{suffix.outputs['hex']}"
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,254}", name)
    assert "--" not in name
    # The name is computed from the suffix, so the instance waits for it.
    assert suffix.urn in run.one(DB, "database").dependencies


def test_dev_without_a_final_snapshot_needs_no_random_suffix(run_stack: RunStack) -> None:
    run = run_stack("dev")
    assert run.of_type("random:index/randomId:RandomId") == []
    assert "finalSnapshotIdentifier" not in _db(run)


@pytest.mark.parametrize(("stack", "protected"), [("dev", False), ("staging", True),
                                                  ("prod", True)])  # fmt: skip
def test_staging_and_prod_databases_have_deletion_protection(
    run_stack: RunStack, stack: str, protected: bool
) -> None:
    """ "Deleting a DB instance" (Amazon RDS User Guide): with deletion protection on, RDS
    refuses DeleteDBInstance until it is turned off; staging's weeks of test data get it from
    the tier table, as prod does."""
    assert _db(run_stack(stack))["deletionProtection"] is protected


@pytest.mark.parametrize(("stack", "immediately"), [("dev", True), ("staging", True),
                                                    ("prod", False)])  # fmt: skip
def test_a_protected_database_waits_for_its_maintenance_window(
    run_stack: RunStack, stack: str, immediately: bool
) -> None:
    """applyImmediately false queues a modification (a class change, a storage change that
    restarts the instance) for the next maintenance window instead of applying it mid-day
    (Pulumi registry, aws.rds.Instance `applyImmediately`; Amazon RDS User Guide, "Using the
    schedule modifications setting"). Unprotected stacks apply at once so a push is testable;
    the protected prod database does not restart on a `pulumi up`."""
    record = run_stack(stack).one(DB, "database")
    assert record.protect is not immediately
    assert record.inputs["applyImmediately"] is immediately
    # ...and the window it waits for is the stack's own (config or tier), not RDS's random one.
    settings = parse_settings(PROJECT, stack, *stack_config(stack)).database
    assert record.inputs["maintenanceWindow"] == settings.maintenance_window
    assert record.inputs["backupWindow"] == settings.backup_window


def test_protecting_a_stack_is_what_defers_its_database_changes(run_stack: RunStack) -> None:
    record = run_stack("dev", overrides={"protectStatefulResources": True}).one(DB, "database")
    assert (record.protect, record.inputs["applyImmediately"]) == (True, False)
