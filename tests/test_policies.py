"""Policy as code: every rule passes on every stack, fires on a planted violation, and runs the
same under the offline runner and CrossGuard's own analyzer."""

from __future__ import annotations

import copy
import json
import re
import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime import proto
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)
from pulumi_policy.policy import _PolicyAnalyzerServicer

from infra.policies import BY_NAME, POLICIES
from infra.policies.__main__ import main
from infra.policies._rules import environment, get, resource_rule, stack_rule
from infra.policies.runner import check
from infra.tiers import TIERS
from tests.conftest import PROJECT, ROOT, STACKS, unchanged_run

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def previews() -> Callable[[str], Doc]:
    """Each repository stack's offline-preview JSON, as `--json` writes it (a fresh copy)."""
    return lambda stack: json.loads(json.dumps(unchanged_run(stack).to_json()))


def find(doc: Doc, type_: str, name: str | None = None) -> Doc:
    found = [r for r in doc["resources"] if r["type"] == type_ and name in (None, r["name"])]
    assert found, (type_, name)
    return found[0]


def inputs(doc: Doc, type_: str, name: str | None = None) -> Doc:
    return find(doc, type_, name)["inputs"]


def container(doc: Doc) -> Doc:
    return inputs(doc, DEPLOYMENT, "analytics-api-blue")["spec"]["template"]["spec"]["containers"][
        0
    ]


def drop(doc: Doc, type_: str) -> None:
    doc["resources"] = [r for r in doc["resources"] if r["type"] != type_]


def plant(doc: Doc, type_: str, name: str, props: Doc) -> None:
    urn = f"urn:pulumi:x::{PROJECT}::{type_}::{name}"
    doc["resources"].append({"urn": urn, "type": type_, "name": name, "inputs": props})


DB = "aws:rds/instance:Instance"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
STAGE = "aws:apigatewayv2/stage:Stage"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
REPO = "aws:ecr/repository:Repository"
TOPIC = "aws:sns/topic:Topic"
BUDGET = "aws:budgets/budget:Budget"
FIS = "aws:fis/experimentTemplate:ExperimentTemplate"
ANOMALY_SUBSCRIPTION = "aws:costexplorer/anomalySubscription:AnomalySubscription"


COLLECTOR = "tracing"  # the trace collector's logical name (infra/tracing.py)
# The one finding the repository stacks carry on purpose: the collector's image is a release
# tag, not a digest nobody here has read from the registry (README: Tracing, the image).
KNOWN_GAPS = [("k8s-image-digest", COLLECTOR, "advisory")]


def _pinned_collector(doc: Doc) -> Doc:
    """The stack as it is once the collector's digest is set (tracing.collectorImage)."""
    [c] = inputs(doc, DEPLOYMENT, COLLECTOR)["spec"]["template"]["spec"]["containers"]
    c["image"] = f"{c['image']}@sha256:{'0' * 64}"
    return doc


def _app_env(**values: str | None) -> Callable[[Doc], None]:
    """Sets (None: removes) env entries of analytics-api-blue's container."""

    def run(doc: Doc) -> None:
        env = container(doc)["env"]
        for name, value in values.items():
            env[:] = [e for e in env if e["name"] != name]
            if value is not None:
                env.append({"name": name, "value": value})

    return run


def _collector_actions(*actions: str) -> Callable[[Doc], None]:
    def run(doc: Doc) -> None:
        policy = inputs(doc, "aws:iam/rolePolicy:RolePolicy", "tracing-collector")
        document = json.loads(policy["policy"])
        document["Statement"][0]["Action"] = list(actions)
        policy["policy"] = json.dumps(document)

    return run


def _collector_managed_policy(doc: Doc) -> None:
    role = find(doc, "aws:iam/role:Role", "tracing-collector")
    plant(doc, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "extra",
          {"role": role["inputs"]["name"],
           "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"})  # fmt: skip
    doc["resources"][-1]["propertyDependencies"] = {"role": [role["urn"]]}


def _collector_role_inline(doc: Doc) -> None:
    role = inputs(doc, "aws:iam/role:Role", "tracing-collector")
    statement = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
    role["inlinePolicies"] = [
        {"name": "extra", "policy": json.dumps({"Version": "2012-10-17", "Statement": [statement]})}
    ]


def _collector_role_managed(doc: Doc) -> None:
    role = inputs(doc, "aws:iam/role:Role", "tracing-collector")
    role["managedPolicyArns"] = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]


def _collector_list_attachment(doc: Doc) -> None:
    role = find(doc, "aws:iam/role:Role", "tracing-collector")
    plant(doc, "aws:iam/policyAttachment:PolicyAttachment", "extra",
          {"roles": [role["inputs"]["name"]],
           "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"})  # fmt: skip
    doc["resources"][-1]["propertyDependencies"] = {"roles": [role["urn"]]}


def _no_force_ssl(doc: Doc) -> None:
    group = inputs(doc, "aws:rds/parameterGroup:ParameterGroup")
    group["parameters"] = [p for p in group["parameters"] if p["name"] != "rds.force_ssl"]


def _db_port_from_a_range(doc: Doc) -> None:
    rule = inputs(doc, INGRESS, "database-from-cluster-nodes")
    del rule["referencedSecurityGroupId"]
    rule["cidrIpv4"] = "10.0.0.0/8"


def _non_root(doc: Doc) -> None:
    spec = inputs(doc, DEPLOYMENT, "analytics-api-blue")["spec"]["template"]["spec"]
    spec["securityContext"]["runAsUser"] = 1000
    spec["containers"][0]["securityContext"]["runAsUser"] = 1000


def _no_seccomp(doc: Doc) -> None:
    spec = inputs(doc, DEPLOYMENT, "analytics-api-blue")["spec"]["template"]["spec"]
    del spec["securityContext"]["seccompProfile"]
    del spec["containers"][0]["securityContext"]["seccompProfile"]


# rule -> (stack, how to break it). Every rule has one; a test checks that.
VIOLATIONS: dict[str, tuple[str, Callable[[Doc], None]]] = {
    "rds-encrypted-with-cmk": ("prod", lambda d: inputs(d, DB).update(storageEncrypted=False)),
    "rds-not-public": ("dev", lambda d: inputs(d, DB).update(publiclyAccessible=True)),
    "rds-multi-az-in-prod": ("prod", lambda d: inputs(d, DB).update(multiAz=False)),
    "rds-backup-retention": ("prod", lambda d: inputs(d, DB).update(backupRetentionPeriod=7)),
    "rds-deletion-protection-in-prod": ("prod", lambda d: find(d, DB).update(protect=False)),
    "rds-iam-authentication": (
        "staging",
        lambda d: inputs(d, DB).update(iamDatabaseAuthenticationEnabled=False),
    ),
    "rds-log-exports": (
        "dev",
        lambda d: inputs(d, DB).update(enabledCloudwatchLogsExports=["postgresql"]),
    ),
    "rds-auto-minor-upgrades": (
        "dev",
        lambda d: inputs(d, DB).update(autoMinorVersionUpgrade=False),
    ),
    "rds-copy-tags-to-snapshots": ("dev", lambda d: inputs(d, DB).update(copyTagsToSnapshot=False)),
    "rds-insights-and-monitoring": (
        "staging",
        lambda d: inputs(d, DB).update(performanceInsightsEnabled=False),
    ),
    "rds-tls-forced": ("prod", _no_force_ssl),
    "no-internet-ingress": (
        "dev",
        lambda d: inputs(d, INGRESS, "api-lb-from-vpc-link").update(cidrIpv4="0.0.0.0/0"),
    ),
    "database-port-from-known-groups": ("prod", _db_port_from_a_range),
    "security-group-rule-descriptions": (
        "prod",
        lambda d: inputs(d, INGRESS, "api-lb-from-vpc-link").pop("description"),
    ),
    "api-access-logging": ("dev", lambda d: inputs(d, STAGE).pop("accessLogSettings")),
    "api-throttling": (
        "prod",
        lambda d: inputs(d, STAGE)["defaultRouteSettings"].pop("throttlingRateLimit"),
    ),
    "api-domain-tls12": (
        "dev",
        lambda d: plant(
            d,
            "aws:apigatewayv2/domainName:DomainName",
            "api",
            {
                "domainName": "api.example.com",
                "domainNameConfiguration": {"securityPolicy": "TLS_1_0"},
            },
        ),
    ),
    "sns-topic-encrypted": ("staging", lambda d: inputs(d, TOPIC).pop("kmsMasterKeyId")),
    "kms-key-rotation": (
        "dev",
        lambda d: inputs(d, "aws:kms/key:Key", "alerts-key").update(enableKeyRotation=False),
    ),
    "log-retention": (
        "prod",
        lambda d: inputs(d, LOG_GROUP, "api-access-logs").update(retentionInDays=30),
    ),
    "log-group-encrypted": (
        "dev",
        lambda d: inputs(d, LOG_GROUP, "database-upgrade").pop("kmsKeyId"),
    ),
    "ecr-scan-on-push": ("dev", lambda d: inputs(d, REPO).update(imageScanningConfiguration={})),
    "ecr-immutable-tags": ("dev", lambda d: inputs(d, REPO).update(imageTagMutability="MUTABLE")),
    "k8s-probes": ("prod", lambda d: container(d).pop("readinessProbe")),
    "k8s-requests-and-limits": ("prod", lambda d: container(d)["resources"].pop("limits")),
    "k8s-run-as-non-root": ("prod", _non_root),
    "k8s-read-only-root-filesystem": (
        "prod",
        lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False),
    ),
    "k8s-no-privilege-escalation": (
        "prod",
        lambda d: container(d)["securityContext"].pop("allowPrivilegeEscalation"),
    ),
    "k8s-drop-all-capabilities": (
        "prod",
        lambda d: container(d)["securityContext"].update(capabilities={"drop": []}),
    ),
    "k8s-seccomp": ("prod", _no_seccomp),
    "k8s-image-pinned": (
        "prod",
        lambda d: container(d).update(image="registry.example/app:latest"),
    ),
    "k8s-image-digest": ("prod", lambda d: container(d).update(image="registry.example/app:1.4.2")),
    "k8s-no-token-automount": (
        "prod",
        lambda d: inputs(d, DEPLOYMENT, "analytics-api-blue")["spec"]["template"]["spec"].update(
            automountServiceAccountToken=True
        ),
    ),
    "k8s-pdb-per-deployment": (
        "prod",
        lambda d: drop(d, "kubernetes:policy/v1:PodDisruptionBudget"),
    ),
    "k8s-network-policy-per-namespace": (
        "dev",
        lambda d: drop(d, "kubernetes:networking.k8s.io/v1:NetworkPolicy"),
    ),
    "k8s-no-public-load-balancer": (
        "staging",
        lambda d: inputs(d, "kubernetes:core/v1:Service", "analytics-api-active")["spec"].update(
            type="LoadBalancer"
        ),
    ),
    "k8s-no-secrets-in-env": (
        "dev",
        lambda d: container(d)["env"].append({"name": "API_TOKEN", "value": "abc123"}),
    ),
    "required-tags": ("dev", lambda d: inputs(d, TOPIC)["tags"].pop("Owner")),
    "no-plaintext-secrets": (
        "staging",
        lambda d: inputs(d, "kubernetes:core/v1:ConfigMap")["data"].update(
            DB_URL="postgres://admin:hunter2@db.internal:5432/analytics"
        ),
    ),
    "protect-stateful-in-prod": ("prod", lambda d: find(d, TOPIC).update(protect=False)),
    "database-cost-guard": ("dev", lambda d: inputs(d, DB).update(instanceClass="db.r7g.16xlarge")),
    "budget-alerts-the-topic": ("prod", lambda d: drop(d, BUDGET)),
    "cost-anomalies-alert-the-topic": ("staging", lambda d: drop(d, ANOMALY_SUBSCRIPTION)),
    "fis-stop-conditions": ("staging", lambda d: inputs(d, FIS).update(stopConditions=[])),
    "fis-role-scope": ("staging", lambda d: _fis_policy(d, "rds:*", "*")),
    "tracing-collector-role-writes-only-xray": (
        "prod",
        _collector_actions("xray:PutTraceSegments", "s3:GetObject"),
    ),
    "tracing-apps-export-to-collector": (
        "staging",
        _app_env(OTEL_EXPORTER_OTLP_ENDPOINT="https://otlp.example.com"),
    ),
    "fis-pod-targets-own-namespace": (
        "staging",
        lambda d: _pod_target(d).update(namespace="kube-system"),
    ),
}


def _fis_policy(doc: Doc, action: str, resource: str) -> None:
    policy = inputs(doc, "aws:iam/rolePolicy:RolePolicy", "chaos-fis")
    document = json.loads(policy["policy"])
    document["Statement"][0].update(Action=action, Resource=resource)
    policy["policy"] = json.dumps(document)


def _fis_statement(doc: Doc, sid: str, **changes: Any) -> None:
    policy = inputs(doc, "aws:iam/rolePolicy:RolePolicy", "chaos-fis")
    document = json.loads(policy["policy"])
    [statement] = [s for s in document["Statement"] if s["Sid"] == sid]
    statement.update(changes)
    policy["policy"] = json.dumps(document)


def _pod_target(doc: Doc) -> Doc:
    parameters: Doc = inputs(doc, FIS, "chaos-pod-delete")["targets"][0]["parameters"]
    return parameters


def _annotated_pod_with_token(doc: Doc) -> None:
    """The API-client annotation exempts a ServiceAccount only, never a pod that sets it."""
    template = inputs(doc, DEPLOYMENT, "analytics-api-blue")["spec"]["template"]
    template["metadata"]["annotations"] = {"analytics-platform/kubernetes-api-client": "x"}
    template["spec"].pop("automountServiceAccountToken")


def _unbound_stop_condition(doc: Doc) -> None:
    find(doc, FIS)["propertyDependencies"].pop("stopConditions")


@pytest.mark.parametrize(
    ("rule", "break_it", "message"),
    [
        ("fis-stop-conditions",
         lambda d: inputs(d, FIS, "chaos-pod-delete").update(stopConditions=[]),
         "every stop condition must be one of the stack's CloudWatch alarms"),
        ("fis-role-scope",
         lambda d: _fis_statement(d, "DescribeThisClusterOnly", Resource="*"),
         "the FIS role grants eks:DescribeCluster on every resource"),
        ("fis-role-scope",
         lambda d: _fis_statement(d, "DescribeThisClusterOnly",
                                  Resource="arn:aws:eks:eu-west-1:210987654321:cluster/other"),
         "the FIS role may call eks:DescribeCluster only on this stack's cluster "
         "(analytics-staging), not arn:aws:eks:eu-west-1:210987654321:cluster/other"),
        ("fis-role-scope",
         lambda d: _fis_statement(d, "FindThePodTargets", Action=["ec2:DescribeSubnets",
                                                                  "eks:DeleteCluster"]),
         "the FIS role grants ec2:DescribeSubnets, eks:DeleteCluster on every resource"),
        ("fis-pod-targets-own-namespace",
         lambda d: _pod_target(d).update(namespace="kube-system"),
         "an aws:eks:pod target may name only a namespace this stack creates, not "
         "'kube-system'"),
        ("fis-pod-targets-own-namespace", lambda d: _pod_target(d).pop("namespace"),
         "an aws:eks:pod target may name only a namespace this stack creates, not None"),
        ("fis-pod-targets-own-namespace",
         lambda d: _pod_target(d).update(clusterIdentifier="analytics-prod"),
         "an aws:eks:pod target may name only this stack's cluster, not 'analytics-prod'"),
    ],
)  # fmt: skip
def test_fis_rules_fire_on_the_pod_delete_experiments_own_ways_to_go_wrong(
    previews: Callable[[str], Doc], rule: str, break_it: Callable[[Doc], None], message: str
) -> None:
    """FIS user guide, "Use the AWS FIS aws:eks:pod actions": the role needs eks:DescribeCluster
    (on its cluster: Service Authorization Reference, resource type `cluster`), and the target
    names a cluster and a namespace; ours is the service's own. Every template, pod-delete
    too, stops on the stack's alarms ("Stop conditions for AWS FIS")."""
    bad = previews("staging")
    assert check(bad, [BY_NAME[rule]]) == []
    break_it(bad)
    fired = check(bad, [BY_NAME[rule]])
    assert [(v.policy, v.message) for v in fired] == [(rule, message)]


@pytest.mark.parametrize(
    ("rule", "break_it"),
    [
        ("fis-stop-conditions", lambda d: inputs(d, FIS).update(stopConditions=[])),
        ("fis-stop-conditions", _unbound_stop_condition),
        ("fis-stop-conditions",
         lambda d: inputs(d, FIS)["stopConditions"][0].update(source="none")),
        ("fis-role-scope", lambda d: _fis_policy(d, "rds:RebootDBInstance", "*")),
        ("fis-role-scope", lambda d: _fis_policy(d, "rds:RebootDBInstance",
                                                 "arn:aws:rds:eu-west-1:1:cluster:x")),
        ("fis-role-scope", lambda d: _fis_policy(d, "ec2:TerminateInstances", "*")),
    ],
)  # fmt: skip
def test_fis_rules_fire_on_each_way_of_an_unguarded_experiment(
    previews: Callable[[str], Doc], rule: str, break_it: Callable[[Doc], None]
) -> None:
    """AWS FIS "Stop conditions for AWS FIS" (CloudWatch alarms) and "IAM roles for AWS FIS
    experiments" (grant only what the actions need, on the targets)."""
    bad = previews("staging")
    break_it(bad)
    fired = check(bad, [BY_NAME[rule]])
    assert fired
    assert {v.policy for v in fired} == {rule}


def _forecast_dropped(doc: Doc) -> None:
    budget = inputs(doc, BUDGET)
    budget["notifications"] = [
        n for n in budget["notifications"] if n["notificationType"] != "FORECASTED"
    ]


def _budget_to_email(doc: Doc) -> None:
    budget = find(doc, BUDGET)
    budget["propertyDependencies"] = {}
    for notification in budget["inputs"]["notifications"]:
        notification["subscriberSnsTopicArns"] = []
        notification["subscriberEmailAddresses"] = ["someone@example.com"]


def _anomalies_to_email(doc: Doc) -> None:
    subscription = find(doc, ANOMALY_SUBSCRIPTION)
    subscription["propertyDependencies"] = {}
    subscription["inputs"]["subscribers"] = [{"type": "EMAIL", "address": "a@example.com"}]


@pytest.mark.parametrize(
    ("rule", "break_it", "message"),
    [
        ("budget-alerts-the-topic", lambda d: drop(d, BUDGET), "no AWS Budget alerts"),
        ("budget-alerts-the-topic", _forecast_dropped, "ACTUAL and FORECASTED"),
        ("budget-alerts-the-topic", _budget_to_email, "to the stack's alerts topic"),
        ("cost-anomalies-alert-the-topic", lambda d: drop(d, ANOMALY_SUBSCRIPTION), "no cost"),
        ("cost-anomalies-alert-the-topic", _anomalies_to_email, "must alert the stack's topic"),
    ],
)
def test_cost_rules_fire_on_each_way_of_losing_the_alert(
    previews: Callable[[str], Doc], rule: str, break_it: Callable[[Doc], None], message: str
) -> None:
    """AWS Budgets / Cost Anomaly Detection reach the on-call only through the alerts topic
    ("Creating an Amazon SNS topic for budget notifications"; "... for anomaly notifications")."""
    bad = previews("prod")
    break_it(bad)
    fired = check(bad, [BY_NAME[rule]])
    assert [v.policy for v in fired] == [rule]
    assert message in fired[0].message


@pytest.mark.parametrize("stack", STACKS)
def test_every_rule_passes_on_every_stack(previews: Callable[[str], Doc], stack: str) -> None:
    found = [(v.policy, v.urn.rsplit("::", 1)[1], v.level) for v in check(previews(stack))]
    assert found == KNOWN_GAPS
    assert check(_pinned_collector(previews(stack))) == []


def test_every_rule_has_a_planted_violation() -> None:
    assert set(VIOLATIONS) == set(BY_NAME)


@pytest.mark.parametrize("rule", sorted(BY_NAME))
def test_each_rule_fires_on_a_bad_resource_and_stays_quiet_on_a_good_one(
    previews: Callable[[str], Doc], rule: str
) -> None:
    stack, break_it = VIOLATIONS[rule]
    good = _pinned_collector(previews(stack))
    assert check(good, [BY_NAME[rule]]) == []
    bad = copy.deepcopy(good)
    break_it(bad)
    fired = check(bad, [BY_NAME[rule]])
    assert fired, f"{rule} did not fire"
    assert {v.policy for v in fired} == {rule}
    assert all(v.urn.startswith("urn:pulumi:") and v.message for v in fired)


def test_every_rule_is_documented_with_a_level_and_a_fix() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Policy rules", 1)[1].split("\n## ", 1)[0]
    for rule in POLICIES:
        assert rule.description, rule.name
        assert rule.remediation_steps, rule.name
        assert rule.enforcement_level in (EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY)
        assert rule.tags is not None, rule.name
        assert len(rule.tags) == 1, rule.name
        row = next((line for line in table.splitlines() if line.startswith(f"| `{rule.name}`")),
                   None)  # fmt: skip
        assert row is not None, f"README has no row for {rule.name}"
        assert f"| {rule.enforcement_level.value} |" in row, rule.name
    assert BY_NAME["k8s-image-digest"].enforcement_level is EnforcementLevel.ADVISORY


# One planted violation per category, through the command line.
CATEGORY_CASES = {
    "rds": "rds-not-public",
    "network": "no-internet-ingress",
    "api-gateway": "api-access-logging",
    "sns-kms-logs": "sns-topic-encrypted",
    "ecr": "ecr-immutable-tags",
    "kubernetes": "k8s-run-as-non-root",
    "stack": "required-tags",
    "tracing": "tracing-apps-export-to-collector",
}


def test_the_categories_cover_every_rule() -> None:
    assert {r.tags[0] for r in POLICIES if r.tags} == set(CATEGORY_CASES)


@pytest.mark.parametrize(("category", "rule"), sorted(CATEGORY_CASES.items()))
def test_a_planted_violation_exits_1_and_names_the_rule(
    previews: Callable[[str], Doc], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    category: str, rule: str,
) -> None:  # fmt: skip
    assert BY_NAME[rule].tags == [category]
    stack, break_it = VIOLATIONS[rule]
    doc = previews(stack)
    break_it(doc)
    path = tmp_path / "preview.json"
    path.write_text(json.dumps(doc))
    assert main([str(path)]) == 1
    out = capsys.readouterr().out
    assert f"MANDATORY {rule}  urn:pulumi:" in out
    summary = out.strip().splitlines()[-1]
    mandatory = re.search(r", (\d+) mandatory,", summary)
    assert mandatory is not None, summary
    assert int(mandatory.group(1)) >= 1


def test_the_command_exits_0_clean_1_violated_and_2_on_unreadable_input(
    previews: Callable[[str], Doc], tmp_path: Path
) -> None:
    clean = tmp_path / "prod.json"
    clean.write_text(json.dumps(_pinned_collector(previews("prod"))))
    violated = tmp_path / "violated.json"
    doc = previews("prod")
    VIOLATIONS["rds-multi-az-in-prod"][1](doc)
    violated.write_text(json.dumps(doc))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    shapeless = tmp_path / "shapeless.json"
    shapeless.write_text('{"resources": [{"urn": 1}]}')
    runs = {
        name: subprocess.run([sys.executable, "-m", "infra.policies", str(path)], cwd=ROOT,
                             capture_output=True, text=True, check=False)
        for name, path in [("clean", clean), ("violated", violated), ("broken", broken),
                           ("shapeless", shapeless), ("missing", tmp_path / "nope.json")]
    }  # fmt: skip
    assert runs["violated"].returncode == 1
    assert "MANDATORY rds-multi-az-in-prod  urn:pulumi:prod::" in runs["violated"].stdout
    assert runs["clean"].returncode == 0, runs["clean"].stdout + runs["clean"].stderr
    assert "0 violation(s)" in runs["clean"].stdout
    for name in ("broken", "shapeless", "missing"):
        assert runs[name].returncode == 2, name
        assert runs[name].stderr.startswith("error: "), name
        assert "Traceback" not in runs[name].stderr


def _analyze_request(resource: Doc) -> Any:
    props = struct_pb2.Struct()
    props.update(resource["inputs"])
    return proto.AnalyzeRequest(
        type=resource["type"], properties=props, urn=resource["urn"], name=resource["name"],
        options=proto.AnalyzerResourceOptions(protect=bool(resource.get("protect"))),
    )  # fmt: skip


def test_crossguard_runs_the_same_rules(previews: Callable[[str], Doc]) -> None:
    """pulumi-policy's own analyzer (what `pulumi preview --policy-pack` talks to)."""
    servicer = _PolicyAnalyzerServicer(
        "analytics-platform", "0.1.0", POLICIES, EnforcementLevel.ADVISORY,
        None, None, None, None, None, None, None,
    )  # fmt: skip
    info = servicer.GetAnalyzerInfo(None, None)
    assert {p.name for p in info.policies} == set(BY_NAME)
    doc = previews("prod")
    db = find(doc, DB)
    assert not servicer.Analyze(_analyze_request(db), None).diagnostics
    db["inputs"]["publiclyAccessible"] = True
    diagnostics = servicer.Analyze(_analyze_request(db), None).diagnostics
    assert [d.policyName for d in diagnostics] == ["rds-not-public"]
    resource_rules = [p for p in POLICIES if isinstance(p, ResourceValidationPolicy)]
    assert len(resource_rules) > 30


def test_the_policy_pack_builds_a_pack_of_every_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import pulumi_policy

    built: dict[str, Any] = {}

    def record(name: str, policies: list[Any], **kwargs: Any) -> None:
        built.update(name=name, policies=policies, **kwargs)

    monkeypatch.setattr(pulumi_policy, "PolicyPack", record)
    runpy.run_path(str(ROOT / "policy" / "__main__.py"), run_name="__main__")
    assert built["name"] == "analytics-platform"
    assert built["policies"] == POLICIES
    pack = (ROOT / "policy" / "PulumiPolicy.yaml").read_text()
    assert "name: python" in pack
    # What the pack installs and where: tests/test_toolchain.py.


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "Is a directory"),
        ('{"resources": [{"urn": "u", "type": "t", "name": "n"}]}',
         "resources[0].inputs is missing or not a dict"),
        ('{"resources": [{"urn": "u", "type": "t", "name": "n", "inputs": []}]}',
         "resources[0].inputs is missing or not a dict"),
        ('{"resources": "all"}', "expected an object with `resources`"),
        ("[1, 2]", "expected an object with `resources`"),
    ],
)  # fmt: skip
def test_unreadable_input_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, says: str
) -> None:
    path = tmp_path / "preview.json"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"error: {path}: ")
    assert says in line
    assert captured.out == ""


# Every branch of a rule on its own: the value unset as well as wrong, the IPv6 form of
# "anywhere" as well as the IPv4 one, each key of a rule that checks several. Each case asserts
# the exact messages, so a rule that flags the wrong thing (or only the first) fails too.
# (case, rule, stack, how to break it, the messages; "{c}" is the container's name)
def _set(type_: str, name: str | None = None, **props: Any) -> Callable[[Doc], None]:
    return lambda d: inputs(d, type_, name).update(props)


def _unset(type_: str, name: str | None, *keys: str) -> Callable[[Doc], None]:
    def run(d: Doc) -> None:
        for key in keys:
            inputs(d, type_, name).pop(key, None)

    return run


def _security(**values: Any) -> Callable[[Doc], None]:
    return lambda d: container(d)["securityContext"].update(values)


def _pod_security_unset(key: str) -> Callable[[Doc], None]:
    def run(d: Doc) -> None:
        spec = inputs(d, DEPLOYMENT, "analytics-api-blue")["spec"]["template"]["spec"]
        spec["securityContext"].pop(key, None)
        spec["containers"][0]["securityContext"].pop(key, None)

    return run


LB_GROUP_RULE = "api-lb-from-vpc-link"
OPEN_V4 = "ingress from 0.0.0.0/0 opens this group to the whole internet"
OPEN_V6 = "ingress from ::/0 opens this group to the whole internet"
NOT_CMK = "kmsKeyId is not a customer-managed key (it is unset or the AWS-managed aws/rds key)"
PROD = TIERS["prod"].policy
BRANCHES: list[tuple[str, str, str, Callable[[Doc], None], list[str]]] = [
    ("ipv4-rule", "no-internet-ingress", "dev",
     _set(INGRESS, LB_GROUP_RULE, cidrIpv4="0.0.0.0/0"), [OPEN_V4]),
    ("ipv6-rule", "no-internet-ingress", "dev",
     _set(INGRESS, LB_GROUP_RULE, cidrIpv6="::/0"), [OPEN_V6]),
    ("inline-ipv4-and-ipv6", "no-internet-ingress", "dev",
     lambda d: plant(d, "aws:ec2/securityGroup:SecurityGroup", "open", {"ingress": [
         {"cidrBlocks": ["10.0.0.0/8", "0.0.0.0/0"], "ipv6CidrBlocks": ["::/0"],
          "description": "x"}]}),
     [OPEN_V4, OPEN_V6]),
    ("legacy-ingress-rule", "no-internet-ingress", "dev",
     lambda d: plant(d, "aws:ec2/securityGroupRule:SecurityGroupRule", "open", {
         "type": "ingress", "ipv6CidrBlocks": ["::/0"], "description": "x"}),
     [OPEN_V6]),
    ("description-empty", "security-group-rule-descriptions", "prod",
     _set(INGRESS, LB_GROUP_RULE, description="  "),
     ["a security group rule without a description: say what it lets through and why"]),
    ("inline-egress-undescribed", "security-group-rule-descriptions", "prod",
     lambda d: plant(d, "aws:ec2/securityGroup:SecurityGroup", "quiet", {
         "egress": [{"cidrBlocks": ["10.0.0.0/8"]}]}),
     ["a security group rule without a description: say what it lets through and why"]),
    ("egress-to-anywhere-is-not-ingress", "no-internet-ingress", "dev",
     lambda d: plant(d, "aws:ec2/securityGroupRule:SecurityGroupRule", "out", {
         "type": "egress", "cidrBlocks": ["0.0.0.0/0"], "description": "x"}),
     []),
    ("inline-ingress-undescribed", "security-group-rule-descriptions", "prod",
     lambda d: plant(d, "aws:ec2/securityGroup:SecurityGroup", "quiet", {
         "ingress": [{"referencedSecurityGroupId": "sg-1", "description": ""}]}),
     ["a security group rule without a description: say what it lets through and why"]),
    ("db-port-from-a-range", "database-port-from-known-groups", "prod", _db_port_from_a_range,
     ["the database port is open to an address range; allow only known security groups "
      "(referencedSecurityGroupId)"]),
    ("db-group-inline-ingress", "database-port-from-known-groups", "prod",
     lambda d: inputs(d, "aws:ec2/securityGroup:SecurityGroup", "database").update(
         ingress=[{"fromPort": 5432, "toPort": 5432, "cidrBlocks": ["10.0.0.0/8"]}]),
     ["the database's security group has inline ingress rules; use SecurityGroupIngressRule "
      "resources from named security groups"]),
    ("db-without-groups", "database-port-from-known-groups", "prod",
     lambda d: find(d, DB).pop("propertyDependencies", None), []),
    ("db-wrong-port", "database-port-from-known-groups", "prod",
     _set(INGRESS, "database-from-cluster-nodes", fromPort=0, toPort=65535),
     ["ports 0-65535 are open on the database's group; only 5432 may be"]),
    ("storage-unset", "rds-encrypted-with-cmk", "prod",
     _unset(DB, None, "storageEncrypted"), ["storageEncrypted is not true"]),
    ("key-unset", "rds-encrypted-with-cmk", "prod", _unset(DB, None, "kmsKeyId"), [NOT_CMK]),
    ("aws-managed-key", "rds-encrypted-with-cmk", "prod",
     _set(DB, kmsKeyId="arn:aws:kms:eu-west-1:123456789012:alias/aws/rds"), [NOT_CMK]),
    ("public-unset", "rds-not-public", "dev", _unset(DB, None, "publiclyAccessible"),
     ["publiclyAccessible must be false"]),
    ("multi-az-unset", "rds-multi-az-in-prod", "prod", _unset(DB, None, "multiAz"),
     ["a prod database must be Multi-AZ (multiAz: true)"]),
    ("backups-unset", "rds-backup-retention", "prod",
     _unset(DB, None, "backupRetentionPeriod"),
     [f"backupRetentionPeriod is 0; a prod database keeps backups at least "
      f"{PROD.min_backup_retention_days} days"]),
    ("backups-one-short", "rds-backup-retention", "prod",
     _set(DB, backupRetentionPeriod=PROD.min_backup_retention_days - 1),
     [f"backupRetentionPeriod is {PROD.min_backup_retention_days - 1}; a prod database keeps "
      f"backups at least {PROD.min_backup_retention_days} days"]),
    ("deletion-protection-off", "rds-deletion-protection-in-prod", "prod",
     _set(DB, deletionProtection=False), ["a prod database needs deletionProtection: true"]),
    ("protect-off", "rds-deletion-protection-in-prod", "prod",
     lambda d: find(d, DB).update(protect=False),
     ["a prod database needs the Pulumi `protect` option"]),
    ("iam-unset", "rds-iam-authentication", "staging",
     _unset(DB, None, "iamDatabaseAuthenticationEnabled"),
     ["iamDatabaseAuthenticationEnabled is not true"]),
    ("exports-unset", "rds-log-exports", "dev", _unset(DB, None, "enabledCloudwatchLogsExports"),
     ["enabledCloudwatchLogsExports lacks postgresql, upgrade"]),
    ("monitoring-off", "rds-insights-and-monitoring", "staging", _set(DB, monitoringInterval=0),
     ["a staging database needs enhanced monitoring (monitoringInterval > 0)"]),
    ("insights-unset", "rds-insights-and-monitoring", "prod",
     _unset(DB, None, "performanceInsightsEnabled"),
     ["a prod database needs performanceInsightsEnabled: true"]),
    ("force-ssl-0", "rds-tls-forced", "prod",
     lambda d: next(p for p in inputs(d, "aws:rds/parameterGroup:ParameterGroup")["parameters"]
                    if p["name"] == "rds.force_ssl").update(value="0"),
     ["parameter group 'analytics-platform-prod-database-pg18' does not set rds.force_ssl=1: "
      "connections could be unencrypted"]),
    ("access-log-format-unset", "api-access-logging", "dev",
     lambda d: inputs(d, STAGE)["accessLogSettings"].pop("format"),
     ["accessLogSettings needs a destinationArn and a format"]),
    ("burst-unset", "api-throttling", "prod",
     lambda d: inputs(d, STAGE)["defaultRouteSettings"].pop("throttlingBurstLimit"),
     ["defaultRouteSettings.throttlingBurstLimit is not set: the API can be flooded"]),
    ("route-settings-unset", "api-throttling", "prod", _unset(STAGE, None, "defaultRouteSettings"),
     ["defaultRouteSettings.throttlingBurstLimit is not set: the API can be flooded",
      "defaultRouteSettings.throttlingRateLimit is not set: the API can be flooded"]),
    ("domain-policy-unset", "api-domain-tls12", "dev",
     lambda d: plant(d, "aws:apigatewayv2/domainName:DomainName", "api",
                     {"domainName": "api.example.com"}),
     ["securityPolicy is None; custom domains must use TLS_1_2"]),
    ("rotation-unset", "kms-key-rotation", "dev",
     _unset("aws:kms/key:Key", "alerts-key", "enableKeyRotation"),
     ["enableKeyRotation is not true"]),
    ("retention-unset", "log-retention", "prod",
     _unset(LOG_GROUP, "api-access-logs", "retentionInDays"),
     ["retentionInDays is not set: the logs would be kept forever"]),
    ("retention-one-short", "log-retention", "prod",
     _set(LOG_GROUP, "api-access-logs", retentionInDays=PROD.min_log_retention_days - 1),
     [f"retentionInDays is {PROD.min_log_retention_days - 1}; a prod stack keeps logs at least "
      f"{PROD.min_log_retention_days} days"]),
    ("scan-unset", "ecr-scan-on-push", "dev", _unset(REPO, None, "imageScanningConfiguration"),
     ["imageScanningConfiguration.scanOnPush is not true"]),
    ("mutability-unset", "ecr-immutable-tags", "dev", _unset(REPO, None, "imageTagMutability"),
     ["imageTagMutability is None, not IMMUTABLE"]),
    ("uid-unset", "k8s-run-as-non-root", "prod", _pod_security_unset("runAsUser"),
     ["container {c}: runAsUser is None; use a fixed UID of at least 10000"]),
    ("non-root-unset", "k8s-run-as-non-root", "prod", _pod_security_unset("runAsNonRoot"),
     ["container {c}: runAsNonRoot is not true"]),
    ("seccomp-unconfined", "k8s-seccomp", "prod",
     _security(seccompProfile={"type": "Unconfined"}),
     ["container {c}: seccompProfile.type is 'Unconfined'; use RuntimeDefault"]),
    ("seccomp-unset", "k8s-seccomp", "prod", _no_seccomp,
     ["container {c}: seccompProfile.type is None; use RuntimeDefault"]),
    ("read-only-unset", "k8s-read-only-root-filesystem", "prod",
     lambda d: container(d)["securityContext"].pop("readOnlyRootFilesystem"),
     ["container {c}: readOnlyRootFilesystem is not true"]),
    ("escalation-true", "k8s-no-privilege-escalation", "prod",
     _security(allowPrivilegeEscalation=True),
     ["container {c}: allowPrivilegeEscalation is not false"]),
    ("capabilities-unset", "k8s-drop-all-capabilities", "prod",
     lambda d: container(d)["securityContext"].pop("capabilities"),
     ["container {c}: capabilities.drop does not include ALL"]),
    ("liveness-unset", "k8s-probes", "prod", lambda d: container(d).pop("livenessProbe"),
     ["container {c}: no livenessProbe"]),
    ("memory-request-unset", "k8s-requests-and-limits", "prod",
     lambda d: container(d)["resources"]["requests"].pop("memory"),
     ["container {c}: no resources.requests.memory"]),
    ("image-untagged", "k8s-image-pinned", "prod",
     lambda d: container(d).update(image="registry.example:5000/app"),
     ["container {c}: image 'registry.example:5000/app' is untagged or latest; pin a version "
      "tag or a digest"]),
    ("token-unset", "k8s-no-token-automount", "prod",
     lambda d: inputs(d, DEPLOYMENT, "analytics-api-blue")["spec"]["template"]["spec"].pop(
         "automountServiceAccountToken"),
     ["automountServiceAccountToken is not false: the pod would get an API token"]),
    ("fis-pod-account-unexplained", "k8s-no-token-automount", "staging",
     lambda d: inputs(d, "kubernetes:core/v1:ServiceAccount", "chaos-fis-pod")["metadata"].pop(
         "annotations"),
     ["automountServiceAccountToken is not false: the pod would get an API token"]),
    ("exemption-is-not-a-pods", "k8s-no-token-automount", "staging",
     lambda d: _annotated_pod_with_token(d),
     ["automountServiceAccountToken is not false: the pod would get an API token"]),
    ("pdb-without-color", "k8s-pdb-per-deployment", "prod",
     lambda d: [inputs(d, "kubernetes:policy/v1:PodDisruptionBudget", n)["spec"]["selector"][
         "matchLabels"].update(color="azure") for n in ("analytics-api-blue",
                                                        "analytics-api-green")],
     ["no PodDisruptionBudget selects this workload's pods"] * 2),
    ("collector-any-xray-action", "tracing-collector-role-writes-only-xray", "dev",
     _collector_actions("xray:*"), ["the collector's role may only write to X-Ray, not xray:*"]),
    ("collector-not-action", "tracing-collector-role-writes-only-xray", "dev",
     lambda d: _collector_actions()(d) or _set_not_action(d),
     ["the collector's role may only write to X-Ray, not NotAction"]),
    ("collector-managed-policy", "tracing-collector-role-writes-only-xray", "staging",
     _collector_managed_policy,
     ["the collector's role gets the managed policy arn:aws:iam::aws:policy/AdministratorAccess; "
      "it may only write to X-Ray, through its own inline policy"]),
    ("collector-role-inline-policy", "tracing-collector-role-writes-only-xray", "dev",
     _collector_role_inline, ["the collector's role may only write to X-Ray, not s3:GetObject"]),
    ("collector-role-managed-arns", "tracing-collector-role-writes-only-xray", "prod",
     _collector_role_managed,
     ["the collector's role gets the managed policy arn:aws:iam::aws:policy/ReadOnlyAccess; "
      "it may only write to X-Ray, through its own inline policy"]),
    ("collector-list-attachment", "tracing-collector-role-writes-only-xray", "staging",
     _collector_list_attachment,
     ["the collector's role gets permissions through a aws:iam/policyAttachment:PolicyAttachment;"
      " it may only write to X-Ray, through its own inline policy"]),
    ("collector-daemon-policy-reads-sampling", "tracing-collector-role-writes-only-xray", "prod",
     _collector_actions("xray:PutTraceSegments", "xray:PutTelemetryRecords",
                        "xray:GetSamplingRules"),
     ["the collector's role may only write to X-Ray, not xray:GetSamplingRules"]),
    ("endpoint-unset", "tracing-apps-export-to-collector", "dev",
     _app_env(OTEL_EXPORTER_OTLP_ENDPOINT=None),
     ["container {c}: OTEL_EXPORTER_OTLP_ENDPOINT is None, not the in-cluster collector "
      "(http://otel-collector.tracing.svc.cluster.local:4318)"]),
    ("grpc", "tracing-apps-export-to-collector", "prod",
     _app_env(OTEL_EXPORTER_OTLP_PROTOCOL="grpc"),
     ["container {c}: OTEL_EXPORTER_OTLP_PROTOCOL is 'grpc'; the collector receives "
      "http/protobuf only"]),
    ("service-name-unset", "tracing-apps-export-to-collector", "prod",
     _app_env(OTEL_SERVICE_NAME=None),
     ["container {c}: OTEL_SERVICE_NAME is not set: X-Ray would name the service "
      "unknown_service"]),
    ("no-collector", "tracing-apps-export-to-collector", "staging",
     lambda d: d.update(resources=[r for r in d["resources"] if r["name"] != COLLECTOR
                                   or r["type"] != DEPLOYMENT]),
     ["container {c}: OTEL_EXPORTER_OTLP_ENDPOINT is "
      "'http://otel-collector.tracing.svc.cluster.local:4318', not the in-cluster collector "
      "(none: the stack has no collector)"] * 2),
]  # fmt: skip

# Kubernetes, branch by branch: every kind of workload (each keeps its pod spec elsewhere), a
# security field set only on the pod or only on the container, init containers, the image
# forms, and what a rule must leave alone. Planted workloads copy the blue pod spec, which
# passes every rule, and change one thing.
POD = "kubernetes:core/v1:Pod"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
REPLICA_SET = "kubernetes:apps/v1:ReplicaSet"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
DIGEST = "@sha256:" + "0123456789abcdef" * 4
LATEST = "registry.example/app:latest"
UNPINNED = "container 'app': image 'registry.example/app:latest' is untagged or latest; pin a " \
           "version tag or a digest"  # fmt: skip
NO_PDB = "no PodDisruptionBudget selects this workload's pods"


def _pod(d: Doc) -> Doc:
    return inputs(d, DEPLOYMENT, "analytics-api-blue")["spec"]["template"]["spec"]


def _workload(type_: str, edit: Callable[[Doc], object] = lambda _: None, *,
              name: str = "planted", namespace: str | None = "analytics-api",
              labels: Doc | None = None, **spec: Any) -> Callable[[Doc], None]:  # fmt: skip
    """Plants a `type_` workload whose pod spec is the blue one after `edit(pod_spec)`."""

    def run(d: Doc) -> None:
        pod = copy.deepcopy(_pod(d))
        edit(pod)
        template = {"metadata": {"labels": labels or {"app": name}}, "spec": pod}
        if type_ == POD:
            props: Doc = {"spec": pod}
        elif type_ == CRON_JOB:
            props = {"spec": {"jobTemplate": {"spec": {"template": template}}}}
        else:
            props = {"spec": {**spec, "template": template}}
        props["metadata"] = {"name": name} | ({"namespace": namespace} if namespace else {})
        plant(d, type_, name, props)

    return run


def _app(**values: Any) -> Callable[[Doc], object]:
    """Sets fields of a pod spec's first container."""
    return lambda pod: pod["containers"][0].update(values)


def _app_security(**values: Any) -> Callable[[Doc], object]:
    return lambda pod: pod["containers"][0]["securityContext"].update(values)


def _unset_at(level: str, *keys: str) -> Callable[[Doc], None]:
    """Removes security fields from the blue pod's own securityContext or its container's."""

    def run(d: Doc) -> None:
        pod = _pod(d)
        context = pod["securityContext"] if level == "pod" else pod["containers"][0][
            "securityContext"]  # fmt: skip
        for key in keys:
            context.pop(key)

    return run


def _init_container(**values: Any) -> Callable[[Doc], None]:
    """Gives the blue pod an init container: a copy of its app container without probes."""

    def run(d: Doc) -> None:
        pod = _pod(d)
        init = copy.deepcopy(pod["containers"][0])
        init.pop("readinessProbe")
        init.pop("livenessProbe")
        init.update(name="migrate", **values)
        pod["initContainers"] = [init]

    return run


def _blue_labels(d: Doc) -> Doc:
    return copy.deepcopy(
        inputs(d, DEPLOYMENT, "analytics-api-blue")["spec"]["template"]["metadata"]["labels"]
    )


def _lb(annotations: Doc | None) -> Callable[[Doc], None]:
    def run(d: Doc) -> None:
        service = inputs(d, SERVICE, "analytics-api-active")
        service["spec"]["type"] = "LoadBalancer"
        if annotations is None:
            service["metadata"].pop("annotations", None)
        else:
            service["metadata"]["annotations"] = annotations

    return run


LB_SCHEME = "service.beta.kubernetes.io/aws-load-balancer-scheme"
LB_INTERNAL = "service.beta.kubernetes.io/aws-load-balancer-internal"
PUBLIC_LB = "a LoadBalancer Service without the internal scheme is open to the internet"
KUBERNETES_BRANCHES: list[tuple[str, str, str, Callable[[Doc], None], list[str]]] = [
    *[(f"{kind.rsplit(':', 1)[1].lower()}-image-latest", "k8s-image-pinned", "prod",
       _workload(kind, _app(image=LATEST)), [UNPINNED])
      for kind in (DEPLOYMENT, STATEFUL_SET, DAEMON_SET, REPLICA_SET, JOB, CRON_JOB, POD)],
    ("job-needs-no-probes", "k8s-probes", "prod",
     _workload(JOB, lambda pod: [pod["containers"][0].pop(p)
                                 for p in ("readinessProbe", "livenessProbe")]), []),
    ("cronjob-needs-no-probes", "k8s-probes", "prod",
     _workload(CRON_JOB, lambda pod: pod["containers"][0].pop("livenessProbe")), []),
    ("daemonset-needs-probes", "k8s-probes", "prod",
     _workload(DAEMON_SET, lambda pod: [pod["containers"][0].pop(p)
                                        for p in ("readinessProbe", "livenessProbe")]),
     ["container 'app': no readinessProbe", "container 'app': no livenessProbe"]),
    ("init-container-needs-no-probes", "k8s-probes", "prod", _init_container(), []),
    ("init-container-runs-as-root", "k8s-run-as-non-root", "prod",
     _init_container(securityContext={"runAsNonRoot": False, "runAsUser": 0}),
     ["container 'migrate': runAsNonRoot is not true",
      "container 'migrate': runAsUser is 0; use a fixed UID of at least 10000"]),
    ("init-container-image-latest", "k8s-image-pinned", "prod", _init_container(image=LATEST),
     ["container 'migrate': image 'registry.example/app:latest' is untagged or latest; pin a "
      "version tag or a digest"]),
    ("init-container-secret-env", "k8s-no-secrets-in-env", "prod",
     _init_container(env=[{"name": "DB_PASSWORD", "value": "hunter2"}]),
     ["container 'migrate': env DB_PASSWORD has a plain value; take it from a Secret "
      "(valueFrom.secretKeyRef)"]),
    ("containers-not-yet-known-are-skipped", "k8s-image-pinned", "prod",
     lambda d: _pod(d)["containers"].append("[unknown]"), []),
    ("pod-without-spec", "k8s-no-token-automount", "prod",
     lambda d: plant(d, POD, "bare", {"metadata": {"namespace": "analytics-api"}}),
     ["automountServiceAccountToken is not false: the pod would get an API token"]),
    ("pod-without-spec-has-no-containers", "k8s-requests-and-limits", "prod",
     lambda d: plant(d, POD, "bare", {"spec": "[unknown]"}), []),
    ("resources-unset", "k8s-requests-and-limits", "prod",
     lambda d: container(d).pop("resources"),
     ["container {c}: no resources.requests.cpu", "container {c}: no resources.requests.memory",
      "container {c}: no resources.limits.cpu", "container {c}: no resources.limits.memory"]),
    ("cpu-limit-unset", "k8s-requests-and-limits", "prod",
     lambda d: container(d)["resources"]["limits"].pop("cpu"),
     ["container {c}: no resources.limits.cpu"]),
    ("non-root-at-pod-level-only", "k8s-run-as-non-root", "prod",
     _unset_at("container", "runAsNonRoot", "runAsUser"), []),
    ("non-root-at-container-level-only", "k8s-run-as-non-root", "prod",
     _unset_at("pod", "runAsNonRoot", "runAsUser"), []),
    ("non-root-container-overrides-pod", "k8s-run-as-non-root", "prod",
     _security(runAsNonRoot=False), ["container {c}: runAsNonRoot is not true"]),
    ("uid-one-below-the-floor", "k8s-run-as-non-root", "prod", _security(runAsUser=9999),
     ["container {c}: runAsUser is 9999; use a fixed UID of at least 10000"]),
    ("uid-at-the-floor", "k8s-run-as-non-root", "prod",
     lambda d: [c.update(runAsUser=10000) for c in (
         _pod(d)["securityContext"], container(d)["securityContext"])], []),
    ("seccomp-at-pod-level-only", "k8s-seccomp", "prod",
     _unset_at("container", "seccompProfile"), []),
    ("seccomp-at-container-level-only", "k8s-seccomp", "prod",
     _unset_at("pod", "seccompProfile"), []),
    ("seccomp-localhost", "k8s-seccomp", "prod",
     _security(seccompProfile={"type": "Localhost", "localhostProfile": "app.json"}), []),
    ("read-only-false", "k8s-read-only-root-filesystem", "prod",
     _security(readOnlyRootFilesystem=False),
     ["container {c}: readOnlyRootFilesystem is not true"]),
    ("escalation-unset", "k8s-no-privilege-escalation", "prod",
     _unset_at("container", "allowPrivilegeEscalation"),
     ["container {c}: allowPrivilegeEscalation is not false"]),
    ("capabilities-drop-some", "k8s-drop-all-capabilities", "prod",
     _security(capabilities={"drop": ["NET_RAW", "SYS_ADMIN"]}),
     ["container {c}: capabilities.drop does not include ALL"]),
    ("capabilities-drop-all-add-one", "k8s-drop-all-capabilities", "prod",
     _security(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}), []),
    ("image-latest-with-a-bad-digest", "k8s-image-pinned", "prod",
     lambda d: container(d).update(image="registry.example/app:latest@sha256:abc"),
     ["container {c}: image 'registry.example/app:latest@sha256:abc' is untagged or latest; pin "
      "a version tag or a digest"]),
    ("image-digest-only", "k8s-image-pinned", "prod",
     lambda d: container(d).update(image="registry.example/app" + DIGEST), []),
    ("image-digest-only-is-pinned-by-digest", "k8s-image-digest", "prod",
     lambda d: container(d).update(image="registry.example/app" + DIGEST), []),
    ("image-digest-one-short", "k8s-image-digest", "prod",
     lambda d: container(d).update(image="registry.example/app:1.4.2" + DIGEST[:-1]),
     [f"container {{c}}: image 'registry.example/app:1.4.2{DIGEST[:-1]}' is not pinned by "
      "digest (@sha256:...)"]),
    ("image-digest-uppercase", "k8s-image-digest", "prod",
     lambda d: container(d).update(image="registry.example/app:1.4.2@sha256:"
                                   + DIGEST[8:].upper()),
     [f"container {{c}}: image 'registry.example/app:1.4.2@sha256:{DIGEST[8:].upper()}' is not "
      "pinned by digest (@sha256:...)"]),
    ("image-version-tag", "k8s-image-digest", "prod",
     lambda d: container(d).update(image="registry.example:5000/team/app:1.4.2"),
     ["container {c}: image 'registry.example:5000/team/app:1.4.2' is not pinned by digest "
      "(@sha256:...)"]),
    ("image-version-tag-behind-a-port", "k8s-image-pinned", "prod",
     lambda d: container(d).update(image="registry.example:5000/team/app:1.4.2"), []),
    ("image-latest-behind-a-port", "k8s-image-pinned", "prod",
     lambda d: container(d).update(image="registry.example:5000/app:latest"),
     ["container {c}: image 'registry.example:5000/app:latest' is untagged or latest; pin a "
      "version tag or a digest"]),
    ("image-unset", "k8s-image-pinned", "prod", lambda d: container(d).pop("image"),
     ["container {c}: image '' is untagged or latest; pin a version tag or a digest"]),
    ("image-unset-has-no-digest", "k8s-image-digest", "prod", lambda d: container(d).pop("image"),
     ["container {c}: image '' is not pinned by digest (@sha256:...)"]),
    ("service-account-automounts", "k8s-no-token-automount", "prod",
     _set("kubernetes:core/v1:ServiceAccount", "analytics-api",
          automountServiceAccountToken=True),
     ["automountServiceAccountToken is not false: the pod would get an API token"]),
    ("service-account-unset", "k8s-no-token-automount", "prod",
     _unset("kubernetes:core/v1:ServiceAccount", "analytics-api",
            "automountServiceAccountToken"),
     ["automountServiceAccountToken is not false: the pod would get an API token"]),
    ("pod-token-true-service-account-false", "k8s-no-token-automount", "prod",
     lambda d: _pod(d).update(automountServiceAccountToken=True),
     ["automountServiceAccountToken is not false: the pod would get an API token"]),
    ("lb-without-annotations", "k8s-no-public-load-balancer", "staging", _lb(None), [PUBLIC_LB]),
    ("lb-internet-facing", "k8s-no-public-load-balancer", "staging",
     _lb({LB_SCHEME: "internet-facing"}), [PUBLIC_LB]),
    ("lb-internal-scheme", "k8s-no-public-load-balancer", "staging", _lb({LB_SCHEME: "internal"}),
     []),
    ("lb-internal-annotation", "k8s-no-public-load-balancer", "staging",
     _lb({LB_INTERNAL: "true"}), []),
    ("lb-internal-annotation-false", "k8s-no-public-load-balancer", "staging",
     _lb({LB_INTERNAL: "false"}), [PUBLIC_LB]),
    ("node-port-is-not-public", "k8s-no-public-load-balancer", "staging",
     lambda d: inputs(d, SERVICE, "analytics-api-active")["spec"].update(type="NodePort"), []),
    ("env-secret-plain", "k8s-no-secrets-in-env", "dev",
     lambda d: container(d)["env"].append({"name": "API_TOKEN", "value": "abc123"}),
     ["container {c}: env API_TOKEN has a plain value; take it from a Secret "
      "(valueFrom.secretKeyRef)"]),
    ("env-secret-empty-is-still-plain", "k8s-no-secrets-in-env", "dev",
     lambda d: container(d)["env"].append({"name": "DB_PASSWORD", "value": ""}),
     ["container {c}: env DB_PASSWORD has a plain value; take it from a Secret "
      "(valueFrom.secretKeyRef)"]),
    ("env-secret-from-a-secret", "k8s-no-secrets-in-env", "dev",
     lambda d: container(d)["env"].append({"name": "API_TOKEN", "valueFrom": {
         "secretKeyRef": {"name": "api", "key": "token"}}}), []),
    ("env-unset", "k8s-no-secrets-in-env", "dev", lambda d: container(d).pop("env"), []),
    ("configmap-secret-keys", "k8s-no-secrets-in-env", "dev",
     lambda d: inputs(d, CONFIG_MAP)["data"].update({"DB_PASSWORD": "x", "API_KEY": "y"}),
     ["ConfigMap key API_KEY looks like a secret; put it in a Secret",
      "ConfigMap key DB_PASSWORD looks like a secret; put it in a Secret"]),
    ("configmap-without-data", "k8s-no-secrets-in-env", "dev",
     lambda d: plant(d, CONFIG_MAP, "empty", {"metadata": {"namespace": "analytics-api"}}), []),
    ("configmap-secret-name-is-not-a-secret", "k8s-no-secrets-in-env", "dev",
     lambda d: inputs(d, CONFIG_MAP)["data"].update({"DB_SECRET_ARN": "arn:x"}),
     []),
    ("pdb-statefulset-uncovered", "k8s-pdb-per-deployment", "prod",
     _workload(STATEFUL_SET, replicas=2), [NO_PDB]),
    ("pdb-idle-color-does-not-end-the-check", "k8s-pdb-per-deployment", "prod",
     lambda d: [_workload(DEPLOYMENT, name="idle", replicas=0)(d),
                _workload(STATEFUL_SET, replicas=2)(d)], [NO_PDB]),
    ("pdb-daemonset-needs-none", "k8s-pdb-per-deployment", "prod", _workload(DAEMON_SET), []),
    ("pdb-idle-color", "k8s-pdb-per-deployment", "prod", _workload(DEPLOYMENT, replicas=0), []),
    ("pdb-one-replica", "k8s-pdb-per-deployment", "prod", _workload(DEPLOYMENT, replicas=1),
     [NO_PDB]),
    ("pdb-in-another-namespace", "k8s-pdb-per-deployment", "prod",
     lambda d: _workload(DEPLOYMENT, namespace="reports", labels=_blue_labels(d))(d), [NO_PDB]),
    ("pdb-both-in-the-default-namespace", "k8s-pdb-per-deployment", "prod",
     lambda d: [_workload(DEPLOYMENT, namespace=None)(d), plant(d, PDB, "planted", {
         "metadata": {"name": "planted"},
         "spec": {"selector": {"matchLabels": {"app": "planted"}}}})], []),
    ("pdb-selects-more-than-the-pod-has", "k8s-pdb-per-deployment", "prod",
     lambda d: inputs(d, PDB, "analytics-api-blue")["spec"]["selector"]["matchLabels"].update(
         tier="web"), [NO_PDB]),
    ("pdb-empty-selector-selects-nothing", "k8s-pdb-per-deployment", "prod",
     lambda d: inputs(d, PDB, "analytics-api-blue")["spec"]["selector"].update(matchLabels={}),
     [NO_PDB]),
    ("netpol-namespace-without-one", "k8s-network-policy-per-namespace", "dev",
     lambda d: plant(d, "kubernetes:core/v1:Namespace", "reports",
                     {"metadata": {"name": "reports"}}),
     ["namespace reports has no NetworkPolicy: every pod in it is reachable"]),
    ("netpol-workload-in-the-default-namespace", "k8s-network-policy-per-namespace", "dev",
     _workload(POD, namespace=None),
     ["namespace default has no NetworkPolicy: every pod in it is reachable"]),
    ("netpol-covered-namespace", "k8s-network-policy-per-namespace", "dev",
     lambda d: [plant(d, "kubernetes:core/v1:Namespace", "reports",
                      {"metadata": {"name": "reports"}}),
                _workload(JOB, namespace="reports")(d),
                plant(d, NETWORK_POLICY, "reports", {"metadata": {"namespace": "reports"}})], []),
    ("netpol-only-workloads-count", "k8s-network-policy-per-namespace", "dev",
     lambda d: plant(d, CONFIG_MAP, "elsewhere", {"metadata": {"namespace": "reports"}}), []),
]  # fmt: skip

# Stack-wide rules, branch by branch.
KUBE_STORE = "kubernetes:core/v1:Secret"
FIS_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ANY_DB = "the FIS role may act only on named database instances, not "
NOT_BOUND = "every stop condition must be one of the stack's CloudWatch alarms"
TO_THE_TOPIC = "every notification must go to the stack's alerts topic"
BOTH_KINDS = "a COST budget needs ACTUAL and FORECASTED notifications"
ANOMALIES_TO_THE_TOPIC = "the anomaly subscription must alert the stack's topic"


def _fis_statements(*statements: Doc, name: str = "chaos-fis") -> Callable[[Doc], None]:
    def run(d: Doc) -> None:
        inputs(d, FIS_ROLE_POLICY, name)["policy"] = json.dumps({"Statement": list(statements)})

    return run


def _untagged(key: str) -> Callable[[Doc], None]:
    return lambda d: inputs(d, TOPIC)["tags"].pop(key)


STACK_BRANCHES: list[tuple[str, str, str, Callable[[Doc], None], list[str]]] = [
    ("tags-two-missing", "required-tags", "dev",
     lambda d: [_untagged("Owner")(d), _untagged("Component")(d)],
     ["missing tags: Owner, Component"]),
    ("tags-unset", "required-tags", "dev", _unset(TOPIC, None, "tags"),
     ["missing tags: Environment, Project, Stack, Owner, CostCenter, ManagedBy, Component"]),
    ("tag-empty", "required-tags", "dev",
     lambda d: inputs(d, TOPIC)["tags"].update(CostCenter=""), ["missing tags: CostCenter"]),
    ("untaggable-needs-no-tags", "required-tags", "dev",
     lambda d: inputs(d, "aws:iam/rolePolicy:RolePolicy", "chaos-fis").pop("tags", None), []),
    ("secret-url-in-a-config-map", "no-plaintext-secrets", "staging",
     lambda d: inputs(d, "kubernetes:core/v1:ConfigMap")["data"].update(
         DB_URL="postgres://admin:hunter2@db.internal:5432/analytics"),
     ["data.DB_URL holds a URL with a password; make it a Pulumi secret or take it from a "
      "store"]),
    ("secret-under-a-secret-key", "no-plaintext-secrets", "staging",
     lambda d: inputs(d, TOPIC).update(deliveryPolicy={"apiKey": "k-123"}),
     ["deliveryPolicy.apiKey holds a plaintext value under a secret-looking key (apiKey); make "
      "it a Pulumi secret or take it from a store"]),
    ("a-secret-holds-secrets", "no-plaintext-secrets", "staging",
     lambda d: plant(d, KUBE_STORE, "db", {"stringData": {"password": "hunter2"},
                                       "data": {"token": "aHVudGVyMg=="}}), []),
    ("a-secret-outside-its-data", "no-plaintext-secrets", "staging",
     lambda d: plant(d, KUBE_STORE, "db", {"metadata": {"annotations": {"password": "hunter2"}}}),
     ["metadata.annotations.password holds a plaintext value under a secret-looking key "
      "(password); make it a Pulumi secret or take it from a store"]),
    ("an-image-registry-holds-its-password", "no-plaintext-secrets", "staging",
     lambda d: plant(d, "docker:index/image:Image", "image", {
         "registry": {"server": "r.example", "password": "hunter2"}}), []),
    ("topic-protect-off", "protect-stateful-in-prod", "prod",
     lambda d: find(d, TOPIC).update(protect=False),
     ["a prod Topic must be `protect`ed so that no update can delete it"]),
    ("protect-off-outside-prod", "protect-stateful-in-prod", "staging",
     lambda d: find(d, TOPIC).update(protect=False), []),
    ("protect-off-untagged-counts-as-prod", "protect-stateful-in-prod", "dev",
     lambda d: [find(d, TOPIC).update(protect=False), _untagged("Environment")(d)],
     ["a prod Topic must be `protect`ed so that no update can delete it"]),
    ("protect-off-stateless", "protect-stateful-in-prod", "prod",
     lambda d: find(d, STAGE).update(protect=False), []),
    ("class-too-big-for-dev", "database-cost-guard", "dev",
     _set(DB, instanceClass="db.r7g.16xlarge"),
     [f"db.r7g.16xlarge is not allowed for dev; allowed: "
      f"{TIERS['dev'].policy.database_instance_classes}"]),
    ("class-prefix-is-not-enough", "database-cost-guard", "dev",
     _set(DB, instanceClass="db.t4g.micro.extra"),
     [f"db.t4g.micro.extra is not allowed for dev; allowed: "
      f"{TIERS['dev'].policy.database_instance_classes}"]),
    ("class-unset", "database-cost-guard", "prod", _unset(DB, None, "instanceClass"),
     [f"None is not allowed for prod; allowed: "
      f"{TIERS['prod'].policy.database_instance_classes}"]),
    ("budget-missing", "budget-alerts-the-topic", "prod", lambda d: drop(d, BUDGET),
     ["no AWS Budget alerts this stack's topic"]),
    ("budget-without-forecast", "budget-alerts-the-topic", "prod", _forecast_dropped,
     [BOTH_KINDS]),
    ("budget-not-cost", "budget-alerts-the-topic", "prod", _set(BUDGET, budgetType="USAGE"),
     [BOTH_KINDS]),
    ("budget-without-notifications", "budget-alerts-the-topic", "prod",
     _unset(BUDGET, None, "notifications"), [BOTH_KINDS]),
    ("budget-to-email", "budget-alerts-the-topic", "prod", _budget_to_email, [TO_THE_TOPIC]),
    ("budget-topic-unbound", "budget-alerts-the-topic", "prod",
     lambda d: find(d, BUDGET).update(propertyDependencies={}), [TO_THE_TOPIC]),
    ("budget-one-notification-to-nobody", "budget-alerts-the-topic", "prod",
     lambda d: inputs(d, BUDGET)["notifications"][0].update(subscriberSnsTopicArns=[]),
     [TO_THE_TOPIC]),
    ("anomalies-missing", "cost-anomalies-alert-the-topic", "staging",
     lambda d: drop(d, ANOMALY_SUBSCRIPTION),
     ["no cost anomaly subscription alerts this stack's topic"]),
    ("anomalies-to-email", "cost-anomalies-alert-the-topic", "staging", _anomalies_to_email,
     [ANOMALIES_TO_THE_TOPIC]),
    ("anomalies-topic-unbound", "cost-anomalies-alert-the-topic", "staging",
     lambda d: find(d, ANOMALY_SUBSCRIPTION).update(propertyDependencies={}),
     [ANOMALIES_TO_THE_TOPIC]),
    ("anomalies-not-over-sns", "cost-anomalies-alert-the-topic", "staging",
     lambda d: inputs(d, ANOMALY_SUBSCRIPTION)["subscribers"][0].update(type="EMAIL"),
     [ANOMALIES_TO_THE_TOPIC]),
    ("anomalies-without-subscribers", "cost-anomalies-alert-the-topic", "staging",
     _unset(ANOMALY_SUBSCRIPTION, None, "subscribers"), [ANOMALIES_TO_THE_TOPIC]),
    ("stop-conditions-empty", "fis-stop-conditions", "staging",
     _set(FIS, stopConditions=[]), [NOT_BOUND]),
    ("stop-conditions-unset", "fis-stop-conditions", "staging",
     _unset(FIS, None, "stopConditions"), [NOT_BOUND]),
    ("stop-condition-unbound", "fis-stop-conditions", "staging", _unbound_stop_condition,
     [NOT_BOUND]),
    ("stop-condition-none", "fis-stop-conditions", "staging",
     lambda d: inputs(d, FIS)["stopConditions"][0].update(source="none"), [NOT_BOUND]),
    ("stop-condition-a-metric-alarm", "fis-stop-conditions", "staging",
     lambda d: find(d, FIS)["propertyDependencies"].update(stopConditions=[
         find(d, "aws:cloudwatch/metricAlarm:MetricAlarm")["urn"]]), []),
    ("stop-condition-bound-to-a-topic", "fis-stop-conditions", "staging",
     lambda d: find(d, FIS)["propertyDependencies"].update(stopConditions=[
         find(d, TOPIC)["urn"]]), [NOT_BOUND]),
    ("role-rds-on-everything", "fis-role-scope", "staging",
     _fis_statements({"Action": "rds:*", "Resource": "*"}),
     [ANY_DB + "*", "the FIS role grants rds:* on every resource"]),
    ("role-rds-on-a-cluster", "fis-role-scope", "staging",
     _fis_statements({"Action": ["rds:RebootDBInstance"],
                      "Resource": ["arn:aws:rds:eu-west-1:1:db:x",
                                   "arn:aws:rds:eu-west-1:1:cluster:x"]}),
     [ANY_DB + "arn:aws:rds:eu-west-1:1:db:x, arn:aws:rds:eu-west-1:1:cluster:x"]),
    ("role-two-actions-on-everything", "fis-role-scope", "staging",
     _fis_statements({"Action": ["ec2:StopInstances", "ec2:StartInstances"], "Resource": "*"}),
     ["the FIS role grants ec2:StopInstances, ec2:StartInstances on every resource"]),
    ("role-log-delivery-on-everything", "fis-role-scope", "staging",
     _fis_statements({"Action": ["logs:CreateLogDelivery"], "Resource": ["*"]}), []),
    ("role-named-database-only", "fis-role-scope", "staging",
     _fis_statements({"Action": "rds:RebootDBInstance",
                      "Resource": "arn:aws:rds:eu-west-1:1:db:x"}), []),
    ("role-statement-without-action", "fis-role-scope", "staging",
     _fis_statements({"Resource": "arn:aws:s3:::bucket"}), []),
    ("role-policy-unknown", "fis-role-scope", "staging",
     lambda d: inputs(d, FIS_ROLE_POLICY, "chaos-fis").update(policy=None), []),
    ("role-policy-without-statements", "fis-role-scope", "staging",
     lambda d: inputs(d, FIS_ROLE_POLICY, "chaos-fis").update(policy="{}"), []),
    ("experiment-role-not-from-this-stack", "fis-role-scope", "staging",
     lambda d: [[t["propertyDependencies"].pop("roleArn") for t in d["resources"]
                 if t["type"] == FIS],
                _fis_statements({"Action": "rds:*", "Resource": "*"})(d)], []),
    ("role-policy-on-a-literal-role", "fis-role-scope", "staging",
     lambda d: plant(d, FIS_ROLE_POLICY, "literal", {"role": "someone", "policy": "{}"}), []),
    ("another-role-is-not-the-fis-role", "fis-role-scope", "staging",
     _fis_statements({"Action": "rds:*", "Resource": "*"}, name="alerts-chatbot"), []),
]  # fmt: skip

# RDS, API gateway, SNS/KMS/logs and ECR, branch by branch.
STAGING = TIERS["staging"].policy
PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
DOMAIN = "aws:apigatewayv2/domainName:DomainName"


def _domain(policy: str | None) -> Callable[[Doc], None]:
    config = {} if policy is None else {"securityPolicy": policy}
    return lambda d: plant(d, DOMAIN, "api", {"domainName": "api.example.com",
                                              "domainNameConfiguration": config})  # fmt: skip


RESOURCE_BRANCHES: list[tuple[str, str, str, Callable[[Doc], None], list[str]]] = [
    ("storage-false", "rds-encrypted-with-cmk", "prod", _set(DB, storageEncrypted=False),
     ["storageEncrypted is not true"]),
    ("aws-managed-key-by-alias-name", "rds-encrypted-with-cmk", "prod",
     _set(DB, kmsKeyId="alias/aws/rds"), [NOT_CMK]),
    ("public-true", "rds-not-public", "dev", _set(DB, publiclyAccessible=True),
     ["publiclyAccessible must be false"]),
    ("multi-az-off-outside-prod", "rds-multi-az-in-prod", "staging", _set(DB, multiAz=False),
     []),
    ("backups-at-the-floor", "rds-backup-retention", "prod",
     _set(DB, backupRetentionPeriod=PROD.min_backup_retention_days), []),
    ("backups-one-short-in-staging", "rds-backup-retention", "staging",
     _set(DB, backupRetentionPeriod=STAGING.min_backup_retention_days - 1),
     [f"backupRetentionPeriod is {STAGING.min_backup_retention_days - 1}; a staging database "
      f"keeps backups at least {STAGING.min_backup_retention_days} days"]),
    ("deletion-protection-unset", "rds-deletion-protection-in-prod", "prod",
     _unset(DB, None, "deletionProtection"), ["a prod database needs deletionProtection: true"]),
    ("deletion-protection-off-outside-prod", "rds-deletion-protection-in-prod", "staging",
     lambda d: [inputs(d, DB).update(deletionProtection=False), find(d, DB).update(
         protect=False)], []),
    ("iam-false", "rds-iam-authentication", "staging",
     _set(DB, iamDatabaseAuthenticationEnabled=False),
     ["iamDatabaseAuthenticationEnabled is not true"]),
    ("minor-upgrades-unset", "rds-auto-minor-upgrades", "dev",
     _unset(DB, None, "autoMinorVersionUpgrade"), ["autoMinorVersionUpgrade is not true"]),
    ("copy-tags-unset", "rds-copy-tags-to-snapshots", "dev",
     _unset(DB, None, "copyTagsToSnapshot"), ["copyTagsToSnapshot is not true"]),
    ("exports-without-upgrade", "rds-log-exports", "dev",
     _set(DB, enabledCloudwatchLogsExports=["postgresql"]),
     ["enabledCloudwatchLogsExports lacks upgrade"]),
    ("exports-without-postgresql", "rds-log-exports", "dev",
     _set(DB, enabledCloudwatchLogsExports=["upgrade", "iam-db-auth-error"]),
     ["enabledCloudwatchLogsExports lacks postgresql"]),
    ("insights-and-monitoring-off-in-dev", "rds-insights-and-monitoring", "dev",
     _set(DB, performanceInsightsEnabled=False, monitoringInterval=0), []),
    ("insights-and-monitoring-off-in-staging", "rds-insights-and-monitoring", "staging",
     _set(DB, performanceInsightsEnabled=False, monitoringInterval=0),
     ["a staging database needs performanceInsightsEnabled: true",
      "a staging database needs enhanced monitoring (monitoringInterval > 0)"]),
    ("force-ssl-as-a-number", "rds-tls-forced", "prod",
     lambda d: next(p for p in inputs(d, PARAMETER_GROUP)["parameters"]
                    if p["name"] == "rds.force_ssl").update(value=1), []),
    ("parameter-group-by-name-only", "rds-tls-forced", "prod",
     lambda d: find(d, DB)["propertyDependencies"].pop("parameterGroupName"), []),
    ("parameter-group-by-dependency-only", "rds-tls-forced", "prod",
     lambda d: inputs(d, DB).update(parameterGroupName=None), []),
    ("parameter-group-unknown-and-unbound", "rds-tls-forced", "prod",
     lambda d: [inputs(d, DB).update(parameterGroupName=None),
                find(d, DB)["propertyDependencies"].pop("parameterGroupName")],
     ["parameter group None does not set rds.force_ssl=1: connections could be unencrypted"]),
    ("parameter-group-of-another-stack", "rds-tls-forced", "prod",
     lambda d: [inputs(d, DB).update(parameterGroupName="default.postgres18"),
                find(d, DB)["propertyDependencies"].pop("parameterGroupName")],
     ["parameter group 'default.postgres18' does not set rds.force_ssl=1: connections could "
      "be unencrypted"]),
    ("access-logs-unset", "api-access-logging", "dev", _unset(STAGE, None, "accessLogSettings"),
     ["accessLogSettings needs a destinationArn and a format"]),
    ("access-log-destination-unset", "api-access-logging", "dev",
     lambda d: inputs(d, STAGE)["accessLogSettings"].pop("destinationArn"),
     ["accessLogSettings needs a destinationArn and a format"]),
    ("rate-zero", "api-throttling", "prod",
     lambda d: inputs(d, STAGE)["defaultRouteSettings"].update(throttlingRateLimit=0),
     ["defaultRouteSettings.throttlingRateLimit is not set: the API can be flooded"]),
    ("domain-tls-1-0", "api-domain-tls12", "dev", _domain("TLS_1_0"),
     ["securityPolicy is 'TLS_1_0'; custom domains must use TLS_1_2"]),
    ("domain-tls-1-2", "api-domain-tls12", "dev", _domain("TLS_1_2"), []),
    ("domain-config-empty", "api-domain-tls12", "dev", _domain(None),
     ["securityPolicy is None; custom domains must use TLS_1_2"]),
    ("topic-key-unset", "sns-topic-encrypted", "staging", _unset(TOPIC, None, "kmsMasterKeyId"),
     ["kmsMasterKeyId is not set: alerts would be stored unencrypted"]),
    ("rotation-false", "kms-key-rotation", "dev",
     _set("aws:kms/key:Key", "alerts-key", enableKeyRotation=False),
     ["enableKeyRotation is not true"]),
    ("retention-at-the-floor", "log-retention", "prod",
     _set(LOG_GROUP, "api-access-logs", retentionInDays=PROD.min_log_retention_days), []),
    ("retention-one-short-in-staging", "log-retention", "staging",
     _set(LOG_GROUP, "api-access-logs", retentionInDays=STAGING.min_log_retention_days - 1),
     [f"retentionInDays is {STAGING.min_log_retention_days - 1}; a staging stack keeps logs at "
      f"least {STAGING.min_log_retention_days} days"]),
    ("log-key-unset", "log-group-encrypted", "dev",
     _unset(LOG_GROUP, "database-upgrade", "kmsKeyId"),
     ["kmsKeyId is not set: the log group is not encrypted with our key"]),
    ("scan-off", "ecr-scan-on-push", "dev",
     _set(REPO, imageScanningConfiguration={"scanOnPush": False}),
     ["imageScanningConfiguration.scanOnPush is not true"]),
    ("mutable-tags", "ecr-immutable-tags", "dev", _set(REPO, imageTagMutability="MUTABLE"),
     ["imageTagMutability is 'MUTABLE', not IMMUTABLE"]),
    ("immutable-with-exclusion", "ecr-immutable-tags", "dev",
     _set(REPO, imageTagMutability="IMMUTABLE_WITH_EXCLUSION"),
     ["imageTagMutability is 'IMMUTABLE_WITH_EXCLUSION', not IMMUTABLE"]),
    ("secret-in-a-list", "no-plaintext-secrets", "staging",
     lambda d: inputs(d, TOPIC).update(extra=[{"name": "a"}, {"token": "t-1"}]),
     ["extra[1].token holds a plaintext value under a secret-looking key (token); make it a "
      "Pulumi secret or take it from a store"]),
    ("secret-key-with-a-flag-value", "no-plaintext-secrets", "staging",
     lambda d: inputs(d, TOPIC).update(passwordReset="true", tokenRequired="false",
                                       secret="", apiKey="[secret]"), []),
    ("secret-value-in-a-list", "no-plaintext-secrets", "staging",
     lambda d: inputs(d, TOPIC).update(notes=["fine", "AKIA" + "ABCDEFGHIJKLMNOP"]),
     ["notes[1] holds an AWS access key id; make it a Pulumi secret or take it from a store"]),
    ("unknown-tier-topic-counts-as-prod", "protect-stateful-in-prod", "dev",
     lambda d: [find(d, TOPIC).update(protect=False), inputs(d, TOPIC)["tags"].update(
         Environment="qa")],
     ["a prod Topic must be `protect`ed so that no update can delete it"]),
]  # fmt: skip


def test_a_tier_that_requires_multi_az_names_itself(
    previews: Callable[[str], Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Multi-AZ rule follows the tier table, and its message says which tier asked."""
    doc = previews("staging")  # the program's own check would refuse the patched tier
    staging = TIERS["staging"]
    policy = staging.policy.model_copy(update={"require_multi_az": True})
    monkeypatch.setitem(TIERS, "staging", staging.model_copy(update={"policy": policy}))
    inputs(doc, DB).update(multiAz=False)
    fired = check(doc, [BY_NAME["rds-multi-az-in-prod"]])
    assert [v.message for v in fired] == ["a staging database must be Multi-AZ (multiAz: true)"]


def test_a_tier_that_requires_protect_names_itself(
    previews: Callable[[str], Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = previews("staging")  # the program's own check would refuse the patched tier
    staging = TIERS["staging"]
    policy = staging.policy.model_copy(update={"require_protect": True})
    monkeypatch.setitem(TIERS, "staging", staging.model_copy(update={"policy": policy}))
    topic = find(doc, TOPIC)
    topic.update(protect=False)
    fired = check(doc, [BY_NAME["protect-stateful-in-prod"]])
    assert [v.message for v in fired if v.urn == topic["urn"]] == [
        "a staging Topic must be `protect`ed so that no update can delete it"
    ]


def test_a_flag_rule_fires_unless_the_flag_is_exactly_true() -> None:
    """rds._flag builds the on/off rules (IAM auth, minor upgrades, tags to snapshots)."""
    from infra.policies.rds import _flag

    flagged = _flag("copyTagsToSnapshot", "copyTagsToSnapshot is not true")
    results = {
        repr(value): list(flagged(_args(DB, {"copyTagsToSnapshot": value})))
        for value in (True, False, None, "true")
    }
    assert results == {"True": [], "False": ["copyTagsToSnapshot is not true"],
                       "None": ["copyTagsToSnapshot is not true"],
                       "'true'": ["copyTagsToSnapshot is not true"]}  # fmt: skip


def _args(type_: str, props: Doc) -> ResourceValidationArgs:
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    return ResourceValidationArgs(type_, props, f"urn:pulumi:s::p::{type_}::r", "r", options, None)


def test_a_resource_rule_reports_every_message_of_its_check_on_its_types_only() -> None:
    rule = resource_rule("r", "cat", "what", ["t:a", "t:b"], lambda a: [a.name, "second"],
                         "how", level=EnforcementLevel.ADVISORY)  # fmt: skip
    seen: list[tuple[str, str | None]] = []
    for type_ in ("t:a", "t:b", "t:c"):
        rule.validate(_args(type_, {}), lambda m, u: seen.append((m, u)))
    assert seen == [("r", None), ("second", None)] * 2
    assert (
        rule.name,
        rule.description,
        rule.enforcement_level,
        rule.tags,
        rule.remediation_steps,
    ) == ("r", "what", EnforcementLevel.ADVISORY, ["cat"], "how")
    assert resource_rule("m", "c", "d", [], lambda _: [], "f").enforcement_level is (
        EnforcementLevel.MANDATORY)  # fmt: skip


def test_a_stack_rule_reports_each_message_with_its_urn() -> None:
    rule = stack_rule("s", "cat", "what", lambda rs: [(f"u{len(rs)}", "one"), ("v", "two")],
                      "how")  # fmt: skip
    seen: list[tuple[str, str | None]] = []
    rule.validate(StackValidationArgs([]), lambda m, u: seen.append((m, u)))
    assert seen == [("one", "u0"), ("two", "v")]
    assert (
        rule.name,
        rule.description,
        rule.enforcement_level,
        rule.tags,
        rule.remediation_steps,
    ) == ("s", "what", EnforcementLevel.MANDATORY, ["cat"], "how")


def test_get_steps_through_mappings_and_sequences_and_stops_at_anything_missing() -> None:
    doc = {"a": [{"b": 1}, {"b": 2}], "m": {"0": "x"}, "n": None}
    assert get(doc, "a", 1, "b") == 2
    assert get(doc, "a", 2) is None
    assert get({"a": [7]}, "a", 1) is None
    assert get(doc, "m", 0) is None
    assert get(doc, "n", "b") is None
    assert get(doc, "missing", 0) is None
    assert get([1, 2], 0) == 1
    assert get(doc) == doc


def test_an_environment_outside_the_tier_table_counts_as_prod() -> None:
    assert environment({"tags": {"Environment": "staging"}}) == "staging"
    assert environment({"tags": {"Environment": "qa"}}) == "prod"
    assert environment({}) == "prod"


ALL_BRANCHES = BRANCHES + KUBERNETES_BRANCHES + STACK_BRANCHES + RESOURCE_BRANCHES


def _set_not_action(doc: Doc) -> None:
    policy = inputs(doc, "aws:iam/rolePolicy:RolePolicy", "tracing-collector")
    document = json.loads(policy["policy"])
    document["Statement"][0]["NotAction"] = "iam:*"
    policy["policy"] = json.dumps(document)


def test_every_rule_has_a_case_for_each_branch_beyond_its_first() -> None:
    """The rules with more than one way to fail have more than one case."""
    cases = {rule for _, rule, *_ in BRANCHES}
    several = {"no-internet-ingress", "rds-encrypted-with-cmk", "rds-backup-retention",
               "rds-deletion-protection-in-prod", "rds-insights-and-monitoring",
               "api-throttling", "log-retention", "k8s-run-as-non-root", "k8s-seccomp",
               "k8s-probes", "k8s-requests-and-limits",
               "tracing-collector-role-writes-only-xray",
               "tracing-apps-export-to-collector"}  # fmt: skip
    assert several <= cases
    assert len({case for case, *_ in ALL_BRANCHES}) == len(ALL_BRANCHES)


@pytest.mark.parametrize(
    ("rule", "stack", "break_it", "messages"),
    [pytest.param(*case[1:], id=case[0]) for case in ALL_BRANCHES],
)
def test_each_branch_of_a_rule_fires_with_its_own_message(
    previews: Callable[[str], Doc], rule: str, stack: str, break_it: Callable[[Doc], None],
    messages: list[str],
) -> None:  # fmt: skip
    doc = previews(stack)
    name = repr(container(doc)["name"])
    if rule == "k8s-image-digest":
        # The collector's tag-only image is the stacks' one known finding (README, Tracing);
        # these cases are about the app's container.
        _pin_collector(doc)
    break_it(doc)
    fired = check(doc, [BY_NAME[rule]])
    assert sorted(v.message for v in fired) == sorted(m.replace("{c}", name) for m in messages)
    assert {v.policy for v in fired} == ({rule} if messages else set())


def _pin_collector(doc: Doc) -> None:
    spec = inputs(doc, DEPLOYMENT, "tracing")["spec"]["template"]["spec"]
    spec["containers"][0]["image"] += DIGEST
