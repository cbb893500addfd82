"""Chaos experiments: AWS FIS templates that reboot (or fail over) the database and delete half of
the active color's pods, stopped by the platform's own alarms, under a role that can touch only
this stack's database and cluster.

Sources: the AWS FIS user guide, "Use the AWS FIS aws:eks:pod actions"
(https://docs.aws.amazon.com/fis/latest/userguide/eks-pod-actions.html) and the "AWS FIS actions
reference" (https://docs.aws.amazon.com/fis/latest/userguide/fis-actions-reference.html)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from infra.chaos import FIS_POD_RULES, pods_deleted
from infra.mock_engine import ProgramRun
from infra.settings import ReleaseSettings
from tests.conftest import ROOT, RunStack, policy_doc, stack_account, stack_yaml

TEMPLATE = "aws:fis/experimentTemplate:ExperimentTemplate"
COMPOSITE = "aws:cloudwatch/compositeAlarm:CompositeAlarm"
DB = "aws:rds/instance:Instance"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
TEMPLATES = ("chaos-database-reboot", "chaos-pod-delete")


def _template(run: ProgramRun, name: str = "chaos-database-reboot") -> dict[str, Any]:
    return run.one(TEMPLATE, name).inputs


def _pod_delete(run: ProgramRun) -> dict[str, Any]:
    return _template(run, "chaos-pod-delete")


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
    assert action == {
        "name": "reboot",  # what the experiment's log and the console call the step
        "actionId": "aws:rds:reboot-db-instances",
        "target": {"key": "DBInstances", "value": "database"},
        "parameters": [{"key": "forceFailover", "value": str(multi_az).lower()}],
    }


def test_an_enabled_prod_experiment_fails_over_to_the_multi_az_standby(
    run_stack: RunStack,
) -> None:
    """RDS "Rebooting a DB instance": with forceFailover a Multi-AZ instance fails over to its
    standby; prod runs Multi-AZ, so its experiment proves the failover the tier pays for."""
    run = run_stack("prod", overrides={"chaos": {"enabled": True}})
    [action] = _template(run)["actions"]
    assert action["parameters"] == [{"key": "forceFailover", "value": "true"}]
    # ...and its pod-delete acts on prod's own cluster and namespace.
    assert sorted(run.outputs["chaosTemplateIds"]) == ["database-reboot", "pod-delete"]
    [target] = _pod_delete(run)["targets"]
    assert target["parameters"]["clusterIdentifier"] == "analytics-prod"
    assert target["parameters"]["namespace"] == "analytics-api"


def test_prod_has_no_experiment_unless_its_stack_enables_one(run_stack: RunStack) -> None:
    """A template that exists can be started by anyone allowed fis:StartExperiment (FIS user
    guide, "Identity and access management"), so prod's exists only once its stack file says
    `chaos.enabled: true`, a reviewed change."""
    run = run_stack("prod")
    assert run.of_type(TEMPLATE) == []
    assert run.of_type("analytics-platform:chaos:ChaosExperiments") == []
    assert run.of_type(ACCESS_ENTRY) == []
    assert [r for r in run.of_type(ROLE_BINDING) if r.name == "chaos-fis"] == []
    assert run.outputs["chaosTemplateIds"] == {}

    dev = run_stack("dev", overrides={"chaos": {"enabled": False}})
    assert dev.of_type(TEMPLATE) == []


# dev's tier runs one pod per color: with two, its pod-delete exists (see below).
TWO_PODS = {"serviceDefaults": {"replicas": 2, "previewReplicaCount": 1, "maxReplicas": 2}}


@pytest.mark.parametrize(("stack", "overrides"), [("dev", TWO_PODS), ("staging", {})])
def test_the_experiment_stops_when_the_fronted_service_turns_unhealthy(
    run_stack: RunStack, stack: str, overrides: dict[str, Any]
) -> None:
    """AWS FIS "Stop conditions for AWS FIS": source `aws:cloudwatch:alarm`, value the alarm's
    ARN; the experiment stops when the alarm enters ALARM. The composite
    `<service>-unhealthy` alarm already combines 5xx rate, latency, hosts and error logs."""
    run = run_stack(stack, overrides=overrides)
    composite = run.one(COMPOSITE, "monitoring-analytics-api-unhealthy")
    assert composite.inputs["alarmName"] == f"analytics-platform-{stack}-analytics-api-unhealthy"
    for name in TEMPLATES:
        assert _template(run, name)["stopConditions"] == [
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
    for name in TEMPLATES:
        assert _template(run, name)["logConfiguration"] == {
            "logSchemaVersion": 2,
            "cloudwatchLogsConfiguration": {"logGroupArn": f"{group.outputs['arn']}:*"},
        }


def test_the_fis_role_is_assumed_only_by_fis_and_acts_only_on_this_database_and_cluster(
    run_stack: RunStack,
) -> None:
    """AWS FIS "IAM roles for AWS FIS experiments" (trust fis.amazonaws.com, with
    aws:SourceAccount and aws:SourceArn against the confused deputy), the FIS actions
    reference (aws:rds:reboot-db-instances: rds:RebootDBInstance, rds:DescribeDBInstances;
    aws:eks:pod-delete: eks:DescribeCluster, ec2:DescribeSubnets, tag:GetResources, the last
    two without resource-level permissions in the Service Authorization Reference) and
    CloudWatch Logs "Logs sent to CloudWatch Logs" (logs:CreateLogDelivery; PutResourcePolicy,
    DescribeResourcePolicies, DescribeLogGroups on log-group:*)."""
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
    assert statements["DescribeThisClusterOnly"]["Action"] == ["eks:DescribeCluster"]
    assert statements["DescribeThisClusterOnly"]["Resource"] == (
        f"arn:aws:eks:eu-west-1:{account}:cluster/analytics-staging"
    )
    assert statements["FindThePodTargets"] == {
        "Sid": "FindThePodTargets",
        "Effect": "Allow",
        "Action": ["ec2:DescribeSubnets", "tag:GetResources"],
        "Resource": "*",
    }
    assert set(statements) == {
        "RebootThisDatabaseOnly",
        "DescribeThisClusterOnly",
        "FindThePodTargets",
        "CreateTheExperimentLogDelivery",
        "LetTheLogGroupAcceptTheExperimentLog",
    }
    assert _pod_delete(run)["roleArn"] == role.outputs["arn"]


def test_the_template_ids_are_a_stack_output_for_the_chaos_workflow(run_stack: RunStack) -> None:
    run = run_stack("staging")
    assert run.outputs["chaosTemplateIds"] == {
        "database-reboot": run.one(TEMPLATE, "chaos-database-reboot").id,
        "pod-delete": run.one(TEMPLATE, "chaos-pod-delete").id,
    }


def _flipped_services(stack: str) -> list[dict[str, Any]]:
    return [
        {**service, "activeColor": "green"}
        for service in stack_yaml(stack)["config"]["analytics-platform:services"]
    ]


@pytest.mark.parametrize(("stack", "overrides"), [("dev", TWO_PODS), ("staging", {})])
def test_pod_delete_deletes_half_of_the_active_colors_pods_in_the_services_namespace(
    run_stack: RunStack, stack: str, overrides: dict[str, Any]
) -> None:
    """FIS actions reference, `aws:eks:pod-delete`: resource type `aws:eks:pod`, target key
    `Pods`, parameter `kubernetesServiceAccount` (required), `fisPodSecurityPolicy`
    (privileged | baseline | restricted; "compatible with all policy levels"); no
    `gracePeriodSeconds`, so the pod's own grace period applies ("If the value is nil, we use
    the default grace period for the pod"). "Use the AWS FIS aws:eks:pod actions", Limitations:
    `aws:eks:pod` targets are named by parameters (clusterIdentifier, namespace, selectorType,
    selectorValue), never ARNs or tags; the example's selector is `labelSelector`,
    `key=value`."""
    run = run_stack(stack, overrides=overrides)
    template = _pod_delete(run)
    assert template["targets"] == [
        {
            "name": "active-pods",
            "resourceType": "aws:eks:pod",
            "parameters": {
                "clusterIdentifier": f"analytics-{stack}",
                "namespace": "analytics-api",
                "selectorType": "labelSelector",
                "selectorValue": "color=blue",
            },
            "selectionMode": "PERCENT(50)",
        }
    ]
    assert template["actions"] == [
        {
            "name": "delete-pods",
            "actionId": "aws:eks:pod-delete",
            "parameters": [
                {"key": "kubernetesServiceAccount", "value": "aws-fis-pod"},
                {"key": "fisPodSecurityPolicy", "value": "restricted"},
            ],
            "target": {"key": "Pods", "value": "active-pods"},
        }
    ]
    assert template["tags"]["Experiment"] == "pod-delete"
    # The selector names exactly the active Deployment's pods in that namespace.
    blue = run.one("kubernetes:apps/v1:Deployment", "analytics-api-blue").inputs
    assert blue["metadata"]["namespace"] == "analytics-api"
    assert blue["spec"]["template"]["metadata"]["labels"]["color"] == "blue"
    green = run.one("kubernetes:apps/v1:Deployment", "analytics-api-green").inputs
    assert green["spec"]["template"]["metadata"]["labels"]["color"] == "green"
    job = run.one("kubernetes:batch/v1:Job").inputs
    assert "color" not in job["spec"]["template"]["metadata"]["labels"]


def test_the_pod_delete_selector_follows_a_color_switch(run_stack: RunStack) -> None:
    """The next push: the release tool writes `activeColor` to the stack config and runs a
    targeted `up` (infra/release.py; Pulumi, `pulumi up --target` skips what is not targeted),
    so the template is built from that same value and is one of the switch's targets
    (tests/test_release.py). After a switch to green it deletes green pods, never the idle
    blue ones, and the active Service selects what the template deletes."""
    run = run_stack("staging", overrides={"services": _flipped_services("staging")})
    [target] = _pod_delete(run)["targets"]
    assert target["parameters"]["selectorValue"] == "color=green"
    active = run.one("kubernetes:core/v1:Service", "analytics-api-active").inputs
    assert active["spec"]["selector"]["color"] == "green"
    # Only the selector changes: the template is updated in place, never replaced (FIS
    # UpdateExperimentTemplate takes targets), and the workflow finds it by its tags anyway.
    assert _pod_delete(run)["description"] == _pod_delete(run_stack("staging"))["description"]


def test_the_fis_pod_role_grants_exactly_the_guides_verbs_in_the_services_namespace(
    run_stack: RunStack,
) -> None:
    """FIS user guide, "Use the AWS FIS aws:eks:pod actions", "Configure the Kubernetes service
    account": the Role's rules (configmaps get/create/patch/delete; pods
    create/list/get/delete/deletecollection; pods/ephemeralcontainers update; pods/exec create;
    apps deployments get), bound to the ServiceAccount the action names and to the Kubernetes
    user of the experiment role; a Role, so nothing outside the namespace."""
    run = run_stack("staging")
    role = run.one(ROLE, "chaos-fis").inputs
    assert role["metadata"]["namespace"] == "analytics-api"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"],
         "verbs": ["get", "create", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["pods"],
         "verbs": ["create", "list", "get", "delete", "deletecollection"]},
        {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
    ]  # fmt: skip
    assert len(role["rules"]) == len(FIS_POD_RULES)
    binding = run.one(ROLE_BINDING, "chaos-fis").inputs
    assert binding["metadata"]["namespace"] == "analytics-api"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"],
    }  # fmt: skip
    account = run.one(SERVICE_ACCOUNT, "chaos-fis-pod").inputs
    assert account["metadata"] == {
        **account["metadata"], "name": "aws-fis-pod", "namespace": "analytics-api",
    }  # fmt: skip
    # Its token is the FIS pod's API credential: not switched off like the app's.
    assert "automountServiceAccountToken" not in account
    assert binding["subjects"][0] == {
        "kind": "ServiceAccount", "name": "aws-fis-pod", "namespace": "analytics-api",
    }  # fmt: skip


def test_the_access_entry_maps_the_experiment_role_to_the_user_the_role_binding_binds(
    run_stack: RunStack,
) -> None:
    """FIS user guide, "Grant IAM users and roles access to Kubernetes APIs", Option 1: an access
    entry for the experiment role with a Kubernetes username, which the RoleBinding names as a
    `User`; no access policy (the guide prescribes none: the Role is the grant). EKS, "Grant IAM
    users access to Kubernetes with EKS access entries": type STANDARD; the cluster must be in
    API or API_AND_CONFIG_MAP mode (the offline cluster answers `API`)."""
    run = run_stack("staging")
    entry = run.one(ACCESS_ENTRY, "chaos-fis").inputs
    role = run.one("aws:iam/role:Role", "chaos-fis")
    assert entry == {
        **entry,
        "clusterName": "analytics-staging",
        "principalArn": role.outputs["arn"],
        "type": "STANDARD",
        "userName": "analytics-platform-staging-chaos-fis",
    }
    assert "kubernetesGroups" not in entry
    assert run.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation") == []
    subjects = run.one(ROLE_BINDING, "chaos-fis").inputs["subjects"]
    [user] = [s for s in subjects if s["kind"] == "User"]
    assert user == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": entry["userName"],
    }  # fmt: skip


def test_the_fis_pod_is_admitted_by_the_namespace_and_not_isolated_by_its_network_policy(
    run_stack: RunStack,
) -> None:
    """Kubernetes "Pod Security Admission": the namespace enforces `restricted`, so the FIS pod
    must be created restricted (`fisPodSecurityPolicy: restricted`, FIS actions reference).
    Kubernetes "Network Policies": a pod that no NetworkPolicy selects is non-isolated; the
    namespace's only policy selects the app's own labels, which the FIS pod does not carry, so
    it reaches the API server."""
    run = run_stack("staging")
    namespace = run.one("kubernetes:core/v1:Namespace", "analytics-api").inputs
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    [action] = _pod_delete(run)["actions"]
    assert {"key": "fisPodSecurityPolicy", "value": "restricted"} in action["parameters"]
    policies = [
        p.inputs
        for p in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if p.inputs["metadata"]["namespace"] == "analytics-api"
    ]
    assert [p["spec"]["podSelector"] for p in policies] == [
        {"matchLabels": {"app.kubernetes.io/name": "analytics-api", "app": "analytics-api"}}
    ]


def test_on_day_one_everything_a_pod_delete_run_needs_exists_before_its_template(
    run_stack: RunStack,
) -> None:
    """The first `pulumi up` creates the namespace (infra/blue_green.py), then the FIS pod's
    ServiceAccount, Role and RoleBinding in it, and the access entry, before the template that
    can start a run: FIS creates its pod in that namespace with that ServiceAccount, as that
    user ("Use the AWS FIS aws:eks:pod actions")."""
    run = run_stack("staging")
    namespace = run.one("kubernetes:core/v1:Namespace", "analytics-api").urn
    needed = [
        run.one(SERVICE_ACCOUNT, "chaos-fis-pod"),
        run.one(ROLE, "chaos-fis"),
        run.one(ROLE_BINDING, "chaos-fis"),
    ]
    for resource in needed:
        assert namespace in resource.dependencies, resource.name
    template = run.one(TEMPLATE, "chaos-pod-delete")
    for resource in [*needed, run.one(ACCESS_ENTRY, "chaos-fis")]:
        assert resource.urn in template.dependencies, resource.name


@pytest.mark.parametrize(("pods", "deleted"), [(1, 0), (2, 1), (3, 1), (4, 2), (5, 2)])
def test_half_of_the_pods_is_rounded_down_as_fis_selects(pods: int, deleted: int) -> None:
    """AWS FIS user guide, "Targets", selection mode PERCENT(n): "If you have an odd number of
    resources and specify 50%, AWS FIS rounds down"; a selection of no resource fails the
    experiment."""
    assert pods_deleted(pods) == deleted


def test_a_service_that_may_run_one_pod_has_no_pod_delete(run_stack: RunStack) -> None:
    """dev runs one pod per color (infra/tiers.py): half of one is none, which FIS refuses as an
    empty selection ("Targets", selection mode), and deleting the only pod is an outage, not an
    experiment. The database experiment stays; nothing of pod-delete's cluster access is made."""
    run = run_stack("dev")
    assert sorted(run.outputs["chaosTemplateIds"]) == ["database-reboot"]
    assert [r.name for r in run.of_type(TEMPLATE)] == ["chaos-database-reboot"]
    assert run.of_type(ACCESS_ENTRY) == []


def test_the_chaos_verdict_waits_until_every_stop_alarm_could_have_fired(
    run_stack: RunStack,
) -> None:
    """CloudWatch "Using Amazon CloudWatch alarms", evaluating an alarm: a metric alarm goes to
    ALARM only after EvaluationPeriods x Period of breaching data; load balancer and API
    Gateway metrics arrive in CloudWatch minutes late (the release tool's metricsDelaySeconds,
    120 s). An experiment can end in seconds (pod-delete), so the workflow waits the longest
    member window of the composite stop alarm plus that delay before it reads the history."""
    run = run_stack("staging")
    composite = run.one(COMPOSITE, "monitoring-analytics-api-unhealthy").inputs["alarmRule"]
    windows = [
        int(a.inputs["evaluationPeriods"]) * int(a.inputs["period"])
        for a in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if a.outputs["arn"] in composite
    ]
    assert len(windows) == 5
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "chaos.yml").read_text())
    [job] = workflow["jobs"].values()
    assert job["env"]["ALARM"] == composite_name(run)
    settle = int(job["env"]["SETTLE_SECONDS"])
    assert settle >= max(windows) + ReleaseSettings().metrics_delay_seconds
    steps = [step.get("name") for step in job["steps"]]
    assert steps.index("Let the alarms see the experiment's whole effect") == (
        steps.index("Wait for it to end") + 1
    )
    assert steps[-1] == "Report whether the service stayed within its alarms"


def composite_name(run: ProgramRun) -> str:
    return run.one(COMPOSITE, "monitoring-analytics-api-unhealthy").inputs["alarmName"]
