"""Tracing, the platform side: the cluster's collector, its X-Ray role, and the apps' export."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from infra.mock_engine import ProgramRun, ResourceRecord
from infra.settings import RESERVED_NAMESPACES
from infra.tiers import TIERS
from tests.conftest import STACKS, RunStack, policy_doc, stack_account, stack_yaml

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
APP = "analytics-api"
COLORS = ("blue", "green")


def _pod(record: ResourceRecord) -> dict[str, Any]:
    return record.inputs["spec"]["template"]["spec"]


def _env(record: ResourceRecord) -> dict[str, Any]:
    [container] = _pod(record)["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def _config(run: ProgramRun) -> dict[str, Any]:
    text = run.one(CONFIG_MAP, "tracing").inputs["data"]["collector.yaml"]
    config = yaml.safe_load(text)
    assert isinstance(config, dict)
    return config


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_runs_the_collector_with_a_wired_traces_pipeline(
    run_stack: RunStack, stack: str
) -> None:
    """Component READMEs of the ADOT collector v0.49.0 (OpenTelemetry Collector v0.156.0): the
    otlp receiver's `protocols.http.endpoint` (default localhost:4318), `memory_limiter`
    (`check_interval`, `limit_percentage`, `spike_limit_percentage`), `batch` (`timeout`,
    `send_batch_size`), the awsxray exporter (`region`, `indexed_attributes`) and health_check
    (`endpoint`, default localhost:13133, `path`). Every component a pipeline names is defined,
    and every extension is started (Collector "Configuration": service.extensions)."""
    run = run_stack(stack)
    namespace = run.one("kubernetes:core/v1:Namespace", "tracing").inputs["metadata"]
    assert namespace["name"] == "tracing"
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    account = run.one("kubernetes:core/v1:ServiceAccount", "tracing").inputs
    assert account["metadata"] == {**account["metadata"], "name": "otel-collector",
                                   "namespace": "tracing"}  # fmt: skip
    assert account["automountServiceAccountToken"] is False

    config = _config(run)
    assert config["receivers"] == {
        "otlp": {"protocols": {"http": {"endpoint": "${env:MY_POD_IP}:4318"}}}
    }
    assert config["processors"]["memory_limiter"] == {
        "check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20,
    }  # fmt: skip
    assert set(config["processors"]["batch"]) <= {"timeout", "send_batch_size"}
    assert config["exporters"] == {
        "awsxray": {
            "region": stack_yaml(stack)["config"]["analytics-platform:aws"]["region"],
            "indexed_attributes": [
                "otel.resource.deployment.color",
                "otel.resource.service.version",
            ],
        }
    }
    assert config["extensions"]["health_check"] == {"endpoint": "${env:MY_POD_IP}:13133",
                                                    "path": "/"}  # fmt: skip
    service = config["service"]
    assert service["extensions"] == ["health_check"]
    assert service["pipelines"] == {
        "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"],
                   "exporters": ["awsxray"]}
    }  # fmt: skip
    for kind in ("receivers", "processors", "exporters"):
        for pipeline in service["pipelines"].values():
            assert set(pipeline[kind]) <= set(config[kind]), kind


def test_the_collector_pod_listens_where_its_probes_and_service_look(run_stack: RunStack) -> None:
    """The probes ask the health_check extension on the pod's IP (the kubelet probes the pod
    IP; MY_POD_IP comes from the downward API, status.podIP). The image's entrypoint is
    /awscollector and takes --config and --feature-gates (ADOT cmd/awscollector). A changed
    config changes the pod template's checksum, so the pods roll and read it."""
    run = run_stack("prod")
    deployment = run.one(DEPLOYMENT, "tracing")
    pod = _pod(deployment)
    [container] = pod["containers"]
    assert container["image"] == "public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0"
    assert container["args"] == ["--config=/conf/collector.yaml",
                                 "--feature-gates=-exporter.xray.allowDot"]  # fmt: skip
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"otlp-http": 4318, "health": 13133}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "health"}
    [pod_ip] = [e for e in container["env"] if e["name"] == "MY_POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert mount == {"name": "config", "mountPath": "/conf", "readOnly": True}
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == run.one(CONFIG_MAP, "tracing").inputs["metadata"]["name"]
    text = run.one(CONFIG_MAP, "tracing").inputs["data"]["collector.yaml"]
    annotations = deployment.inputs["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] == hashlib.sha256(text.encode()).hexdigest()
    assert deployment.inputs["spec"]["replicas"] == 2
    security = container["securityContext"]
    assert security["runAsUser"] >= 10000
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    service = run.one(SERVICE, "tracing").inputs["spec"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == deployment.inputs["spec"]["template"]["metadata"]["labels"]
    assert service["ports"] == [{"name": "otlp-http", "port": 4318, "targetPort": "otlp-http",
                                 "protocol": "TCP"}]  # fmt: skip
    budget = run.one("kubernetes:policy/v1:PodDisruptionBudget", "tracing").inputs["spec"]
    assert budget["maxUnavailable"] == 1


@pytest.mark.parametrize("stack", STACKS)
def test_both_colors_export_to_the_collector_service_at_the_tier_ratio(
    run_stack: RunStack, stack: str
) -> None:
    """OpenTelemetry "Environment Variable Specification" and "OTLP Exporter Configuration":
    OTEL_EXPORTER_OTLP_ENDPOINT is the base URL (the SDK appends /v1/traces), the protocol
    http/protobuf, the sampler parentbased_traceidratio with its ratio in
    OTEL_TRACES_SAMPLER_ARG. Kubernetes "DNS for Services and Pods":
    <service>.<namespace>.svc.cluster.local. APP_ENVIRONMENT comes from the ConfigMap."""
    run = run_stack(stack)
    service = run.one(SERVICE, "tracing").inputs
    meta = service["metadata"]
    endpoint = (
        f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local:"
        f"{int(service['spec']['ports'][0]['port'])}"
    )
    environment = stack_yaml(stack)["config"]["analytics-platform:environment"]
    ratio = TIERS[environment].defaults.tracing.sampling_ratio
    for color in COLORS:
        env = _env(run.one(DEPLOYMENT, f"{APP}-{color}"))
        assert {k: v for k, v in env.items() if k.startswith("OTEL_")} == {
            "OTEL_SERVICE_NAME": APP,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(ratio),
            "OTEL_RESOURCE_ATTRIBUTES": (
                f"deployment.color={color},service.version={env['APP_VERSION']}"
            ),
        }
        assert env["APP_COLOR"] == color
        assert env["APP_VERSION"]
    assert run.one(CONFIG_MAP, f"{APP}-config").inputs["data"]["APP_ENVIRONMENT"] == environment
    assert run.outputs["tracesEndpoint"] == endpoint


def test_the_tier_ratios_fall_from_every_trace_in_dev_to_a_slice_in_prod() -> None:
    """README "Tracing", sampling per tier; AWS X-Ray pricing charges per trace recorded."""
    ratios = [TIERS[t].defaults.tracing.sampling_ratio for t in ("dev", "staging", "prod")]
    assert ratios == [1.0, 0.25, 0.05]


def test_a_stack_sets_its_own_ratio_and_collector(run_stack: RunStack) -> None:
    """`tracing.*` overrides the tier per stack; a digest-pinned collector image is taken."""
    image = f"public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0@sha256:{'c' * 64}"
    run = run_stack("staging", overrides={"tracing": {
        "samplingRatio": 0.5, "collectorImage": image, "collectorReplicas": 3}})  # fmt: skip
    for color in COLORS:
        assert _env(run.one(DEPLOYMENT, f"{APP}-{color}"))["OTEL_TRACES_SAMPLER_ARG"] == "0.5"
    collector = run.one(DEPLOYMENT, "tracing").inputs["spec"]
    assert collector["replicas"] == 3
    assert collector["template"]["spec"]["containers"][0]["image"] == image


@pytest.mark.parametrize("stack", STACKS)
def test_pod_identity_binds_the_collector_account_to_a_role_that_only_puts_segments(
    run_stack: RunStack, stack: str
) -> None:
    """The awsxray exporter calls PutTraceSegments only (its README; PutTelemetryRecords only
    with telemetry.enabled, off here); X-Ray's actions take no resource ARN ("Actions, resources,
    and condition keys for AWS X-Ray"), hence "*". "Create an IAM role for EKS Pod Identity":
    the role trusts pods.eks.amazonaws.com, and an association binds it to one ServiceAccount
    of one namespace. The ADOT v0.49.0 image's AWS SDK for Go v2 (config v1.32.28) reads
    AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE ("Use pod
    identity with the AWS SDK": Go v2 from release-2023-11-14)."""
    run = run_stack(stack)
    role = run.one("aws:iam/role:Role", "tracing-collector")
    [trust] = policy_doc(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": stack_account(stack)}}
    policy = run.one("aws:iam/rolePolicy:RolePolicy", "tracing-collector").inputs["policy"]
    assert policy_doc(policy)["Statement"] == [
        {"Effect": "Allow", "Action": ["xray:PutTraceSegments"], "Resource": "*"}
    ]
    association = run.one(ASSOCIATION, "tracing-collector").inputs
    pod = _pod(run.one(DEPLOYMENT, "tracing"))
    cluster = stack_yaml(stack)["config"]["analytics-platform:kubernetes"]["clusterName"]
    assert association["clusterName"] == cluster
    assert association["namespace"] == "tracing"
    assert association["serviceAccount"] == pod["serviceAccountName"] == "otel-collector"
    assert association["roleArn"] == role.outputs["arn"]
    assert pod["automountServiceAccountToken"] is False
    env = _env(run.one(DEPLOYMENT, "tracing"))
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == "http://169.254.170.23/v1/credentials"
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"].startswith(
        "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/"
    )
    deployment = run.one(DEPLOYMENT, "tracing")
    assert run.one(ASSOCIATION, "tracing-collector").urn in deployment.dependencies


def _ports(rule: dict[str, Any]) -> list[tuple[int, str]]:
    return [(p["port"], p["protocol"]) for p in rule["ports"]]


def test_network_policies_let_only_the_apps_in_and_only_x_ray_out(run_stack: RunStack) -> None:
    """Kubernetes "Network Policies": a peer with namespaceSelector and podSelector selects
    those pods of those namespaces; kubernetes.io/metadata.name is set on every namespace.
    X-Ray's endpoint is HTTPS (443); the Pod Identity agent listens on 169.254.170.23:80
    ("Understand how EKS Pod Identity works")."""
    run = run_stack("prod")
    collector = run.one(NETWORK_POLICY, "tracing").inputs
    labels = _pod_labels(run)
    assert collector["metadata"]["namespace"] == "tracing"
    assert collector["spec"]["podSelector"] == {"matchLabels": labels}
    assert collector["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = collector["spec"]["ingress"]
    assert ingress["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": APP}},
        "podSelector": {"matchLabels": {"app": APP}},
    }]  # fmt: skip
    assert _ports(ingress) == [(4318, "TCP")]
    egress = collector["spec"]["egress"]
    assert [_ports(rule) for rule in egress] == [[(53, "UDP"), (53, "TCP")], [(443, "TCP")],
                                                 [(80, "TCP")]]  # fmt: skip
    assert [p["ipBlock"]["cidr"] for p in egress[2]["to"]] == ["169.254.170.23/32",
                                                               "fd00:ec2::23/128"]  # fmt: skip
    app = run.one(NETWORK_POLICY, APP).inputs["spec"]
    [to_collector] = [rule for rule in app["egress"] if _ports(rule) == [(4318, "TCP")]]
    assert to_collector["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tracing"}},
        "podSelector": {"matchLabels": labels},
    }]  # fmt: skip
    app_pod_labels = run.one(DEPLOYMENT, f"{APP}-blue").inputs["spec"]["template"]["metadata"]
    assert app_pod_labels["labels"]["app"] == APP


def _pod_labels(run: ProgramRun) -> dict[str, str]:
    return run.one(DEPLOYMENT, "tracing").inputs["spec"]["template"]["metadata"]["labels"]


def test_a_second_service_is_let_in_too(run_stack: RunStack) -> None:
    """One collector per cluster ("Deployment" mode in the ADOT EKS guide) serves every
    service: each one's namespace and pods are a peer of the collector's ingress rule."""
    services = [
        {"name": APP, "blue": {"version": "1.0.0"}, "green": {"version": "1.0.0"}},
        {"name": "reports", "blue": {"version": "2.0.0"}, "green": {"version": "2.0.0"}},
    ]
    run = run_stack("dev", overrides={"services": services})
    [ingress] = run.one(NETWORK_POLICY, "tracing").inputs["spec"]["ingress"]
    names = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
             for p in ingress["from"]]  # fmt: skip
    assert names == [APP, "reports"]
    assert _env(run.one(DEPLOYMENT, "reports-green"))["OTEL_SERVICE_NAME"] == "reports"


def _text_widget(run: ProgramRun) -> dict[str, Any]:
    body = json.loads(run.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    [widget] = [w for w in body["widgets"] if w["type"] == "text"]
    latency = next(w for w in body["widgets"]
                   if w["properties"].get("title") == "API latency (ms)")  # fmt: skip
    assert widget["y"] == latency["y"] + latency["height"]
    return widget


def test_the_dashboard_links_slow_requests_to_their_traces_per_color(run_stack: RunStack) -> None:
    """X-Ray "Console deep linking": xray/home?region=<r>#/traces?filter=<expression> with
    timeRange=PT1H; "Using filter expressions": service("name") { responsetime > n } and
    annotation.<key> = "value". Slow means slower than the stack's latency alarm."""
    run = run_stack("prod")
    markdown = _text_widget(run)["properties"]["markdown"]
    links = [part.split(")")[0] for part in markdown.split("](")[1:]]
    assert len(links) == 4
    prefix = "https://console.aws.amazon.com/xray/home?region=eu-west-1#/traces?filter="
    assert all(link.startswith(prefix) and link.endswith("&timeRange=PT1H") for link in links)
    expressions = [unquote(link[len(prefix) :].split("&timeRange")[0]) for link in links]
    slow = 'service("analytics-api") { responsetime > 1.5 }'
    assert expressions == [
        slow,
        f'{slow} AND annotation.otel_resource_deployment_color = "blue"',
        f'{slow} AND annotation.otel_resource_deployment_color = "green"',
        'service("analytics-api") { fault = true }',
    ]
    assert "5%" in markdown


def test_slow_follows_the_latency_alarm_threshold(run_stack: RunStack) -> None:
    """X-Ray "Using filter expressions": responsetime is in seconds; the threshold is
    monitoring.api.latencyP90Ms (README: Alarm runbook, api-latency-p90)."""
    run = run_stack("dev", overrides={"monitoring": {"api": {"latencyP90Ms": 750}}})
    assert "responsetime%20%3E%200.75%20" in _text_widget(run)["properties"]["markdown"]


def test_no_service_can_take_the_collectors_namespace(run_stack: RunStack) -> None:
    """A service's name is its namespace (infra/blue_green.py); the collector's is reserved, so
    that no service declares the collector's Namespace a second time."""
    namespace = run_stack("dev").one(SERVICE, "tracing").inputs["metadata"]["namespace"]
    assert namespace in RESERVED_NAMESPACES


@pytest.mark.parametrize("deployment", ["tracing", f"{APP}-blue", f"{APP}-green"])
def test_a_deployment_waits_for_its_service_account(run_stack: RunStack, deployment: str) -> None:
    """Kubernetes "Managing Service Accounts", the ServiceAccount admission controller: a pod
    whose ServiceAccount does not exist is rejected; the ReplicaSet retries with a backoff that
    eats into the rollout's wait. So the account is created before the Deployment."""
    run = run_stack("dev")
    record = run.one(DEPLOYMENT, deployment)
    spec = record.inputs["spec"]["template"]["spec"]
    accounts = [
        r
        for r in run.of_type("kubernetes:core/v1:ServiceAccount")
        if r.inputs["metadata"]["name"] == spec["serviceAccountName"]
        and r.inputs["metadata"]["namespace"] == record.inputs["metadata"]["namespace"]
    ]
    assert len(accounts) == 1
    assert accounts[0].urn in record.dependencies
