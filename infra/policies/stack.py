"""Stack-wide rules: tags, no plaintext secrets, protected state in prod, the cost guard."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pulumi_policy import PolicyResource

from infra.policies._rules import (
    REQUIRED_TAGS,
    STATEFUL_TYPES,
    environment,
    get,
    is_taggable,
    secret_looking,
    stack_rule,
    tier,
)

CATEGORY = "stack"
# Inputs the program marks secret (the offline preview shows "[secret]"). CrossGuard hands
# policies decrypted values, so these are where a secret is expected, not a leak.
SECRET_INPUTS = {
    "kubernetes:core/v1:Secret": ("data", "stringData"),
    "docker:index/image:Image": ("registry",),
    "aws:sns/topicSubscription:TopicSubscription": ("endpoint",),
    "pulumi:providers:kubernetes": ("kubeconfig",),
}


def _tags(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    for r in resources:
        if not is_taggable(r.resource_type):
            continue
        tags = r.props.get("tags") or {}
        missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
        if missing:
            yield r.urn, f"missing tags: {', '.join(missing)}"


def _no_plaintext_secrets(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    for r in resources:
        skipped = SECRET_INPUTS.get(r.resource_type, ())
        props = {k: v for k, v in r.props.items() if k not in skipped}
        for path, what in secret_looking(props):
            yield r.urn, f"{path} holds {what}; make it a Pulumi secret or take it from a store"


def _protected(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    for r in resources:
        stateful = r.resource_type in STATEFUL_TYPES
        if stateful and tier(r.props).policy.require_protect and not r.opts.protect:
            yield (
                r.urn,
                (
                    f"a {environment(r.props)} {r.resource_type.rsplit(':', 1)[1]} must "
                    "be `protect`ed so that no update can delete it"
                ),
            )


def _cost_guard(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    for r in resources:
        if r.resource_type != "aws:rds/instance:Instance":
            continue
        allowed = tier(r.props).policy.database_instance_classes
        instance_class = str(get(r.props, "instanceClass"))
        if re.fullmatch(allowed, instance_class) is None:
            yield (
                r.urn,
                (f"{instance_class} is not allowed for {environment(r.props)}; allowed: {allowed}"),
            )


TOPIC = "aws:sns/topic:Topic"
BUDGET = "aws:budgets/budget:Budget"
ANOMALY_SUBSCRIPTION = "aws:costexplorer/anomalySubscription:AnomalySubscription"


def _from_a_topic(r: PolicyResource, key: str) -> bool:
    return any(d.resource_type == TOPIC for d in r.property_dependencies.get(key, []))


def _budget_problem(budget: PolicyResource) -> str | None:
    notifications = get(budget.props, "notifications") or []
    kinds = {n.get("notificationType") for n in notifications}
    if get(budget.props, "budgetType") != "COST" or not {"ACTUAL", "FORECASTED"} <= kinds:
        return "a COST budget needs ACTUAL and FORECASTED notifications"
    if not _from_a_topic(budget, "notifications") or not all(
        n.get("subscriberSnsTopicArns") for n in notifications
    ):
        return "every notification must go to the stack's alerts topic"
    return None


def _budget_alerts(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    budgets = [r for r in resources if r.resource_type == BUDGET]
    for budget in budgets:
        problem = _budget_problem(budget)
        if problem:
            yield budget.urn, problem
    if not budgets:
        for topic in (r for r in resources if r.resource_type == TOPIC):
            yield topic.urn, "no AWS Budget alerts this stack's topic"


def _anomaly_alerts(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    subscriptions = [r for r in resources if r.resource_type == ANOMALY_SUBSCRIPTION]
    for subscription in subscriptions:
        kinds = {s.get("type") for s in get(subscription.props, "subscribers") or []}
        if "SNS" not in kinds or not _from_a_topic(subscription, "subscribers"):
            yield subscription.urn, "the anomaly subscription must alert the stack's topic"
    if not subscriptions:
        for topic in (r for r in resources if r.resource_type == TOPIC):
            yield topic.urn, "no cost anomaly subscription alerts this stack's topic"


FIS_TEMPLATE = "aws:fis/experimentTemplate:ExperimentTemplate"
EKS_POD = "aws:eks:pod"
NAMESPACE = "kubernetes:core/v1:Namespace"
KUBERNETES_PROVIDER = "pulumi:providers:kubernetes"
# Actions with no resource-level permission (Service Authorization Reference), the only ones
# an FIS role may grant on `*` (infra/chaos.py UNSCOPABLE_ACTIONS).
UNSCOPABLE_ACTIONS = frozenset(
    {"logs:CreateLogDelivery", "ec2:DescribeSubnets", "tag:GetResources"}
)
ALARM_TYPES = (
    "aws:cloudwatch/metricAlarm:MetricAlarm",
    "aws:cloudwatch/compositeAlarm:CompositeAlarm",
)


def _fis_stop_conditions(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    for r in resources:
        if r.resource_type != FIS_TEMPLATE:
            continue
        conditions = get(r.props, "stopConditions") or []
        bound = any(d.resource_type in ALARM_TYPES for d in r.property_dependencies.get(
            "stopConditions", []))  # fmt: skip
        if (
            not conditions
            or not bound
            or any(c.get("source") != "aws:cloudwatch:alarm" for c in conditions)
        ):
            yield r.urn, "every stop condition must be one of the stack's CloudWatch alarms"


def _fis_role_scope(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    roles = [
        d
        for r in resources
        if r.resource_type == FIS_TEMPLATE
        for d in r.property_dependencies.get("roleArn", [])
    ]
    # Each policy of an experiment role once, however many templates share the role.
    policies = [
        p
        for p in resources
        if p.resource_type == "aws:iam/rolePolicy:RolePolicy"
        and any(d in roles for d in p.property_dependencies.get("role", []))
    ]
    cluster_names = _cluster_names(resources)
    for policy in policies:
        for problem in _fis_statement_problems(get(policy.props, "policy"), cluster_names):
            yield policy.urn, problem


def _fis_statement_problems(text: object, cluster_names: set[str]) -> Iterable[str]:
    if not isinstance(text, str):  # unknown during a first preview
        return
    for statement in json.loads(text).get("Statement", []):
        actions = statement.get("Action")
        actions = [actions] if isinstance(actions, str) else actions or []
        resources = statement.get("Resource")
        resources = [resources] if isinstance(resources, str) else resources or []
        if any(a.startswith("rds:") for a in actions) and any(
            ":db:" not in resource for resource in resources
        ):
            yield "the FIS role may act only on named database instances, not " + ", ".join(
                resources
            )
        if "*" in resources and not set(actions) <= UNSCOPABLE_ACTIONS:
            yield f"the FIS role grants {', '.join(actions)} on every resource"
        eks = [a for a in actions if a.startswith("eks:")]
        clusters = [r for r in resources if r != "*" and not _names_a_cluster(r, cluster_names)]
        if eks and clusters:
            yield (
                f"the FIS role may call {', '.join(eks)} only on this stack's cluster "
                f"({', '.join(sorted(cluster_names)) or 'none targeted'}), not "
                + ", ".join(clusters)
            )


def _names_a_cluster(arn: str, names: set[str]) -> bool:
    return re.fullmatch(r"arn:[\w-]+:eks:[\w-]+:\d{12}:cluster/(.+)", arn) is not None and (
        arn.rsplit("/", 1)[1] in names
    )


def _pod_parameters(template: PolicyResource) -> list[dict[str, Any]]:
    """The parameters of each aws:eks:pod target of an FIS template."""
    targets: list[Any] = get(template.props, "targets") or []
    return [
        dict(t.get("parameters") or {})
        for t in targets
        if isinstance(t, dict) and t.get("resourceType") == EKS_POD
    ]


def _cluster_names(resources: Sequence[PolicyResource]) -> set[str]:
    """The stack's own cluster: what its Kubernetes provider names (infra/providers.py); where
    no provider is in view, the clusters its pod experiments name."""
    named = {
        str(r.props["clusterIdentifier"])
        for r in resources
        if r.resource_type == KUBERNETES_PROVIDER and r.props.get("clusterIdentifier")
    }
    return named or {
        str(p.get("clusterIdentifier"))
        for r in resources
        if r.resource_type == FIS_TEMPLATE
        for p in _pod_parameters(r)
    }


def _fis_pod_namespace(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    namespaces = {
        get(r.props, "metadata", "name") for r in resources if r.resource_type == NAMESPACE
    }
    clusters = _cluster_names(resources)
    for r in resources:
        if r.resource_type != FIS_TEMPLATE:
            continue
        for parameters in _pod_parameters(r):
            namespace, cluster = parameters.get("namespace"), parameters.get("clusterIdentifier")
            if cluster not in clusters:
                yield (
                    r.urn,
                    f"an aws:eks:pod target may name only this stack's cluster, not {cluster!r}",
                )
            if namespace not in namespaces:
                yield (
                    r.urn,
                    (
                        "an aws:eks:pod target may name only a namespace this stack creates, not "
                        f"{namespace!r}"
                    ),
                )


POLICIES = [
    stack_rule("required-tags", CATEGORY, "Every taggable AWS resource carries the required "
               "tags: " + ", ".join(REQUIRED_TAGS) + ".", _tags,
               "Pass tags=self.tags() (PlatformComponent) to the resource."),
    stack_rule("no-plaintext-secrets", CATEGORY, "No input holds a plaintext credential.",
               _no_plaintext_secrets, "Read it with config.get_secret / pulumi.Output.secret, "
               "or let the service manage it (RDS manageMasterUserPassword)."),
    stack_rule("protect-stateful-in-prod", CATEGORY, "In prod, every stateful resource "
               "(database, keys, log groups, image repository, topic) is `protect`ed.",
               _protected, "Create it with PlatformComponent.stateful_opts(); keep "
               "protectStatefulResources true."),
    stack_rule("database-cost-guard", CATEGORY, "Database instance classes stay within the "
               "tier's allowed classes.", _cost_guard,
               "Pick a class from the tier's list (infra/tiers.py database_instance_classes)."),
    stack_rule("budget-alerts-the-topic", CATEGORY, "The stack has a monthly COST budget whose "
               "ACTUAL and FORECASTED notifications go to its alerts topic.", _budget_alerts,
               "Keep CostGuardrails (infra/costs.py) in the platform; tune costs.* in the stack "
               "file."),
    stack_rule("fis-stop-conditions", CATEGORY, "Every FIS experiment template stops on the "
               "stack's own CloudWatch alarms.", _fis_stop_conditions,
               "Pass the alarm ARNs (Monitoring.alarm_arns) as ChaosTarget.stop_alarm_arns."),
    stack_rule("fis-role-scope", CATEGORY, "An FIS experiment role acts only on the stack's "
               "named resources: its database, eks:DescribeCluster on its own cluster, no "
               "wildcard beyond the actions that have no resource-level permission "
               "(logs:CreateLogDelivery, ec2:DescribeSubnets, tag:GetResources).", _fis_role_scope,
               "Name the target's ARN in the role policy (infra/chaos.py fis_role_policy)."),
    stack_rule("fis-pod-targets-own-namespace", CATEGORY, "An FIS aws:eks:pod target names "
               "only the stack's own cluster and a namespace this stack creates.",
               _fis_pod_namespace, "Target the service's own namespace and the stack's "
               "kubernetes.clusterName (infra/chaos.py PodTarget)."),
    stack_rule("cost-anomalies-alert-the-topic", CATEGORY, "A Cost Anomaly Detection "
               "subscription sends the stack's anomalies to its alerts topic over SNS.",
               _anomaly_alerts, "Keep CostGuardrails (infra/costs.py) in the platform."),
]  # fmt: skip
