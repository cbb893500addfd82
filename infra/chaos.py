"""ChaosExperiments: AWS Fault Injection Service templates that test the platform's recovery.

- `database-reboot` reboots the stack's RDS instance through `aws:rds:reboot-db-instances`; on
  a Multi-AZ instance (prod) with `forceFailover`, i.e. a failover to the standby.
- `pod-delete` deletes half of the ACTIVE color's pods of the API-fronted service through
  `aws:eks:pod-delete` (target `aws:eks:pod`: the cluster, the service's own namespace and the
  label `color=<activeColor>`, `PERCENT(50)`). The selector is built from the same
  `activeColor` the Services select, and the release tool's targeted `up` of a switch includes
  this template (infra/release.py `_switch_urns`), so it follows every promotion and rollback.

Each template stops as soon as the fronted service's composite `<service>-unhealthy` alarm goes
to ALARM, runs under one role scoped to this stack's instance and cluster, and logs each run to
its own log group.

What pod-delete needs in the cluster (FIS user guide, "Use the AWS FIS aws:eks:pod actions"):
a ServiceAccount for the FIS pod and a Role with exactly the guide's rules, bound to that
ServiceAccount and to the Kubernetes user the experiment role is mapped to ("Configure the
Kubernetes service account"); the mapping itself is an EKS access entry with that username
("Grant IAM users and roles access to Kubernetes APIs", Option 1), which needs the cluster in
`API` or `API_AND_CONFIG_MAP` authentication mode. The guide prescribes no access policy: the
RoleBinding is the whole grant. The FIS pod runs in the service's namespace, which enforces the
`restricted` Pod Security Standard: the action's `fisPodSecurityPolicy: restricted` makes FIS
create a pod that standard admits (actions reference, aws:eks:pod-delete: "compatible with all
policy levels"). The service's NetworkPolicy selects only the app's own labels, so the FIS pod
is not isolated (Kubernetes, "Network Policies": a pod no policy selects is non-isolated) and
reaches the API server.

readOnlyRootFilesystem: the page says that every aws:eks:pod action EXCEPT pod-delete injects
through an ephemeral container in the target pod, and that "FIS can only monitor the status of
fault injection when the securityContext of the target Pods is set to readOnlyRootFilesystem:
false. Without this configuration, all EKS Pod actions will fail" (Limitations). pod-delete
injects nothing into the target pod: the FIS pod deletes it through the API. The platform's
pods keep `readOnlyRootFilesystem: true`. UNVERIFIED: the documents do not settle it; the
first staging run is the check (README, Chaos experiments), and if FIS ever refuses pod-delete
for it, the experiment goes, not the hardening.

What FIS cannot do here without weakening the pods: API latency or errors.
`aws:eks:pod-network-latency` (and -packet-loss, -blackhole-port) is "only compatible with the
Kubernetes Security Standards privileged policy" (actions reference) and "require[s] root
permissions within the ephemeral container", which "will inherit its permissions from the
security context of the target Pod" (Limitations); our pods run as UID 10001, runAsNonRoot,
all capabilities dropped, in a namespace that enforces `restricted`. FIS has no action for API
Gateway or an ALB; its HTTP-response fault (`aws:lambda:invocation-http-integration-response`)
acts on Lambda functions, which this path (HTTP API -> VPC link -> ALB -> pods) has none of.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

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
# FIS actions reference, aws:eks:pod-delete: "Permissions". DescribeCluster is scoped to the
# cluster; DescribeSubnets and GetResources support no resource-level permission (Service
# Authorization Reference: no resource types), so they can only name `*`.
CLUSTER_ACTIONS = ("eks:DescribeCluster",)
UNSCOPED_POD_ACTIONS = ("ec2:DescribeSubnets", "tag:GetResources")
# Actions that may be granted on `*`: each supports no resource-level permission.
UNSCOPABLE_ACTIONS = frozenset({LOG_DELIVERY_ACTIONS[0], *UNSCOPED_POD_ACTIONS})

# The FIS pod's ServiceAccount, Role and RoleBinding in the service's namespace.
FIS_POD_SERVICE_ACCOUNT = "aws-fis-pod"
FIS_ROLE = "aws-fis-experiments"
# FIS user guide, "Configure the Kubernetes service account": the Role's rules, as listed.
FIS_POD_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "configmaps", ("get", "create", "patch", "delete")),
    ("", "pods", ("create", "list", "get", "delete", "deletecollection")),
    ("", "pods/ephemeralcontainers", ("update",)),
    ("", "pods/exec", ("create",)),
    ("apps", "deployments", ("get",)),
)
POD_DELETE = "pod-delete"
DATABASE_REBOOT = "database-reboot"
# A share, not a count: the PodDisruptionBudget is not consulted (a delete is not an eviction,
# Kubernetes "Disruptions"), so half of the active color is the blast radius at any size.
POD_DELETE_PERCENT = 50
POD_DELETE_SELECTION = f"PERCENT({POD_DELETE_PERCENT})"


def pods_deleted(pods: int) -> int:
    """How many of `pods` the selection deletes: FIS rounds a share down, and a selection of no
    resource fails the experiment (FIS user guide, "Targets": selection mode). A service whose
    active color may run a single pod gets no pod-delete template: losing it is an outage,
    not an experiment."""
    return pods * POD_DELETE_PERCENT // 100


# Policy k8s-no-token-automount (infra/policies/kubernetes.py): why this ServiceAccount mounts.
API_CLIENT_ANNOTATION = "analytics-platform/kubernetes-api-client"
API_CLIENT_REASON = "the AWS FIS pod deletes target pods through the API (Role aws-fis-experiments)"
# The FIS pod must pass the namespace's enforced Pod Security Standard (infra/blue_green.py).
FIS_POD_SECURITY_POLICY = "restricted"


@dataclass(frozen=True)
class PodTarget:
    """The API-fronted service whose active color's pods pod-delete deletes."""

    cluster_name: str
    # The service's own namespace (infra/blue_green.py), created before anything in it.
    namespace: str
    namespace_resource: pulumi.Resource
    active_color: str


@dataclass(frozen=True)
class ChaosTarget:
    """What the experiments act on and what stops them."""

    database_arn: pulumi.Input[str]
    multi_az: bool
    # The alarms whose ALARM state stops every experiment at once.
    stop_alarm_arns: list[pulumi.Input[str]]
    # None where the stack reaches a cluster that is not EKS (a kubeconfig secret).
    pods: PodTarget | None = None


def fis_trust_policy(account_id: str, partition: str, region: str) -> str:
    """Only FIS experiments of this account may assume the role (confused-deputy guard)."""
    return service_trust_policy(
        "fis.amazonaws.com",
        condition={
            "StringEquals": {"aws:SourceAccount": account_id},
            "ArnLike": {"aws:SourceArn": f"arn:{partition}:fis:{region}:{account_id}:experiment/*"},
        },
    )


def cluster_arn(partition: str, region: str, account_id: str, name: str) -> str:
    return f"arn:{partition}:eks:{region}:{account_id}:cluster/{name}"


def fis_role_policy(
    database_arn: str,
    account_id: str,
    partition: str,
    region: str,
    cluster_name: str | None = None,
) -> str:
    statements: list[dict[str, Any]] = [
        {
            "Sid": "RebootThisDatabaseOnly",
            "Effect": "Allow",
            "Action": list(REBOOT_ACTIONS),
            "Resource": database_arn,
        },
    ]
    if cluster_name:
        statements += [
            {
                "Sid": "DescribeThisClusterOnly",
                "Effect": "Allow",
                "Action": list(CLUSTER_ACTIONS),
                "Resource": cluster_arn(partition, region, account_id, cluster_name),
            },
            {
                "Sid": "FindThePodTargets",
                "Effect": "Allow",
                "Action": list(UNSCOPED_POD_ACTIONS),
                "Resource": "*",
            },
        ]
    statements += [
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
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def pod_selector(active_color: str) -> str:
    """The FIS label selector (`key=value`, as the guide's example) for the active color's pods.

    Inside the service's own namespace only its Deployments' pods carry `color`
    (infra/blue_green.py); the database bootstrap Job's pod carries none."""
    return f"color={active_color}"


class ChaosExperiments(PlatformComponent):
    template_ids: dict[str, pulumi.Output[str]]
    kubernetes_username: str

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
        # The Kubernetes user the experiment role is mapped to; the RoleBinding binds it.
        self.kubernetes_username = self.physical_name("fis")
        self.target = target
        role = self._role(account)
        log_group = self.log_group(f"{name}-log", f"/{ctx.project}/{ctx.stack}/chaos", logs_key_arn)
        self._log_arn = log_group.arn.apply(lambda arn: f"{arn}:*")  # FIS wants the `:*` suffix
        self.template_ids = {DATABASE_REBOOT: self._database_reboot(role).id}
        if target.pods is not None:
            cluster_access = self._cluster_access(target.pods, role)
            self.template_ids[POD_DELETE] = self._pod_delete(target.pods, role, cluster_access).id
        self.finish({"templateIds": self.template_ids})

    def _template(
        self,
        experiment: str,
        description: str,
        role: aws.iam.Role,
        target: aws.fis.ExperimentTemplateTargetArgs,
        action: aws.fis.ExperimentTemplateActionArgs,
        opts: pulumi.ResourceOptions,
    ) -> aws.fis.ExperimentTemplate:
        return aws.fis.ExperimentTemplate(
            f"{self.resource_name}-{experiment}",
            description=f"{self.ctx.project}/{self.ctx.stack}: {description}",
            role_arn=role.arn,
            targets=[target],
            actions=[action],
            stop_conditions=[
                aws.fis.ExperimentTemplateStopConditionArgs(source=ALARM_SOURCE, value=arn)
                for arn in self.target.stop_alarm_arns
            ],
            log_configuration=aws.fis.ExperimentTemplateLogConfigurationArgs(
                log_schema_version=2,
                cloudwatch_logs_configuration=(
                    aws.fis.ExperimentTemplateLogConfigurationCloudwatchLogsConfigurationArgs(
                        log_group_arn=self._log_arn
                    )
                ),
            ),
            tags=self.tags(Name=self.physical_name(experiment), Experiment=experiment),
            opts=opts,
        )

    def _database_reboot(self, role: aws.iam.Role) -> aws.fis.ExperimentTemplate:
        multi_az = self.target.multi_az
        return self._template(
            DATABASE_REBOOT,
            "reboot the database" + (" with a Multi-AZ failover" if multi_az else ""),
            role,
            aws.fis.ExperimentTemplateTargetArgs(
                name="database",
                resource_type="aws:rds:db",
                resource_arns=[self.target.database_arn],
                selection_mode="ALL",
            ),
            aws.fis.ExperimentTemplateActionArgs(
                name="reboot",
                action_id="aws:rds:reboot-db-instances",
                parameters=[
                    aws.fis.ExperimentTemplateActionParameterArgs(
                        key="forceFailover", value=str(multi_az).lower()
                    )
                ],
                target=aws.fis.ExperimentTemplateActionTargetArgs(
                    key="DBInstances", value="database"
                ),
            ),
            self.child_opts(),
        )

    def _pod_delete(
        self, pods: PodTarget, role: aws.iam.Role, cluster_access: list[pulumi.Resource]
    ) -> aws.fis.ExperimentTemplate:
        """FIS actions reference, aws:eks:pod-delete; targets `aws:eks:pod` by parameters only
        (the guide: "You can't identify targets of type aws:eks:pod ... using resource ARNs
        or resource tags"). No gracePeriodSeconds: the pod's own grace period (preStop sleep
        plus the app's drain) applies, which is what the experiment means to prove."""
        parameter = aws.fis.ExperimentTemplateActionParameterArgs
        return self._template(
            POD_DELETE,
            f"delete half of the active color's pods of {pods.namespace}",
            role,
            aws.fis.ExperimentTemplateTargetArgs(
                name="active-pods",
                resource_type="aws:eks:pod",
                parameters={
                    "clusterIdentifier": pods.cluster_name,
                    "namespace": pods.namespace,
                    "selectorType": "labelSelector",
                    "selectorValue": pod_selector(pods.active_color),
                },
                selection_mode=POD_DELETE_SELECTION,
            ),
            aws.fis.ExperimentTemplateActionArgs(
                name="delete-pods",
                action_id="aws:eks:pod-delete",
                parameters=[
                    parameter(key="kubernetesServiceAccount", value=FIS_POD_SERVICE_ACCOUNT),
                    parameter(key="fisPodSecurityPolicy", value=FIS_POD_SECURITY_POLICY),
                ],
                target=aws.fis.ExperimentTemplateActionTargetArgs(key="Pods", value="active-pods"),
            ),
            # Everything a run needs exists before the first template that can start one.
            self.child_opts(depends_on=cluster_access),
        )

    def _cluster_access(self, pods: PodTarget, role: aws.iam.Role) -> list[pulumi.Resource]:
        """The FIS pod's ServiceAccount, the guide's Role, and the experiment role mapped to
        the Kubernetes user that the RoleBinding binds (an EKS access entry)."""
        namespace, ctx_project = pods.namespace, self.ctx.project
        k8s_opts = self.child_opts(depends_on=[pods.namespace_resource])
        labels = {"app.kubernetes.io/name": "aws-fis", "app.kubernetes.io/part-of": ctx_project}

        def meta(name: str) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace, labels=labels)

        # Its token is the FIS pod's API credential (the guide's ServiceAccount leaves
        # automountServiceAccountToken at its default, true); the pod FIS creates is FIS's own.
        account = k8s.core.v1.ServiceAccount(
            f"{self.resource_name}-fis-pod",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=FIS_POD_SERVICE_ACCOUNT,
                namespace=namespace,
                labels=labels,
                annotations={API_CLIENT_ANNOTATION: API_CLIENT_REASON},
            ),
            opts=k8s_opts,
        )
        rbac_role = k8s.rbac.v1.Role(
            f"{self.resource_name}-fis",
            metadata=meta(FIS_ROLE),
            rules=[
                k8s.rbac.v1.PolicyRuleArgs(api_groups=[group], resources=[kind], verbs=list(verbs))
                for group, kind, verbs in FIS_POD_RULES
            ],
            opts=k8s_opts,
        )
        binding = k8s.rbac.v1.RoleBinding(
            f"{self.resource_name}-fis",
            metadata=meta(FIS_ROLE),
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="Role", name=FIS_ROLE
            ),
            subjects=[
                k8s.rbac.v1.SubjectArgs(
                    kind="ServiceAccount", name=FIS_POD_SERVICE_ACCOUNT, namespace=namespace
                ),
                k8s.rbac.v1.SubjectArgs(
                    api_group="rbac.authorization.k8s.io",
                    kind="User",
                    name=self.kubernetes_username,
                ),
            ],
            opts=self.child_opts(depends_on=[pods.namespace_resource, rbac_role]),
        )
        entry = aws.eks.AccessEntry(
            f"{self.resource_name}-fis",
            cluster_name=pods.cluster_name,
            principal_arn=role.arn,
            type="STANDARD",
            user_name=self.kubernetes_username,
            tags=self.tags(),
            opts=self.child_opts(),
        )
        return [account, rbac_role, binding, entry]

    def _role(self, account: AwsAccount) -> aws.iam.Role:
        region = account.region
        target = self.target
        cluster_name = target.pods.cluster_name if target.pods else None
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
            ).apply(lambda a: fis_role_policy(a[0], a[1], a[2], region, cluster_name)),
            opts=self.child_opts(),
        )
        return role
