"""BlueGreenService: two hardened Deployments, active and preview Services, safe color switches."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from infra.mock_engine import FAKE_DB_PASSWORD, ProgramRun
from tests.conftest import STACKS, RunStack, stack_yaml

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
TGB = "kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"


def _deployment(run: ProgramRun, color: str) -> dict[str, Any]:
    return run.one(DEPLOYMENT, f"analytics-api-{color}").inputs


def _container(run: ProgramRun, color: str) -> dict[str, Any]:
    [container] = _deployment(run, color)["spec"]["template"]["spec"]["containers"]
    return container


def test_prod_has_every_object_of_a_blue_green_service(run_stack: RunStack) -> None:
    run = run_stack("prod")
    service_children = [
        r for r in run.resources if r.parent and "BlueGreenService::analytics-api" in r.parent
    ]
    counts = Counter(r.type for r in service_children)
    assert counts == {
        "kubernetes:core/v1:Namespace": 1,
        "kubernetes:core/v1:ServiceAccount": 1,
        "kubernetes:core/v1:ConfigMap": 1,
        "analytics-platform:database:DatabaseAccess": 1,
        DEPLOYMENT: 2,
        SERVICE: 2,
        "kubernetes:policy/v1:PodDisruptionBudget": 2,
        HPA: 2,
        "kubernetes:networking.k8s.io/v1:NetworkPolicy": 1,
        TGB: 2,
    }


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("color", ["blue", "green"])
def test_deployments_are_hardened(run_stack: RunStack, stack: str, color: str) -> None:
    run = run_stack(stack)
    spec = _deployment(run, color)["spec"]
    pod = spec["template"]["spec"]
    container = _container(run, color)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] >= 10000
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = int(next(e["value"] for e in container["env"] if e["name"] == "DRAIN_SECONDS"))
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = spec["template"]["metadata"]["labels"]
    # The Deployment carries its pods' labels, so `kubectl get deploy -l color=...` finds it.
    assert _deployment(run, color)["metadata"]["labels"] == labels
    assert labels["app"] == "analytics-api"
    assert labels["color"] == color
    expected = stack_yaml(stack)["config"]["analytics-platform:services"][0][color]["version"]
    assert labels["version"] == expected
    assert "version" not in spec["selector"]["matchLabels"]


def test_no_secret_looking_value_in_plain_env(run_stack: RunStack) -> None:
    run = run_stack("prod")
    for color in ("blue", "green"):
        for env in _container(run, color)["env"]:
            # The one TOKEN is a path: Pod Identity's projected token file.
            name = env["name"].removesuffix("_TOKEN_FILE")
            assert not any(w in name for w in ("PASSWORD", "SECRET", "TOKEN")), env
        sources = _container(run, color)["envFrom"]
        assert sources == [{"configMapRef": {"name": "analytics-api-config"}}]


def test_pods_connect_as_their_own_role_with_iam_tokens_and_no_password(
    run_stack: RunStack,
) -> None:
    """RDS rotates the managed master password every 7 days by default ("Password management
    with Amazon RDS and AWS Secrets Manager"): a copy written at deploy time breaks within a
    week. The pods get no password at all: no Secret, no env, no invoke reading the secret."""
    run = run_stack("prod")
    assert run.of_type("kubernetes:core/v1:Secret") == []
    assert not [i for i in run.invokes if i.token.startswith("aws:secretsmanager/")]
    assert FAKE_DB_PASSWORD not in json.dumps(run.to_json())
    config = run.one("kubernetes:core/v1:ConfigMap", "analytics-api-config").inputs["data"]
    assert config["DB_HOST"] == run.outputs["databaseEndpoint"]
    assert config["DB_PORT"] == "5432"
    assert config["DB_USER"] == "analytics_api"
    assert config["DB_USER"] != run.one("aws:rds/instance:Instance").inputs["username"]
    assert config["DB_AUTH"] == "iam"
    assert config["AWS_REGION"] == "eu-west-1"
    assert config["DB_SSLMODE"] == "require"
    for color in ("blue", "green"):
        container = _container(run, color)
        assert "DB_PASSWORD" not in {e["name"] for e in container["env"]}


def test_features_become_config_map_settings(run_stack: RunStack) -> None:
    services = [{"name": "analytics-api", "blue": {"version": "1.0.0"},
                 "green": {"version": "1.1.0"},
                 "features": {"newDashboard": True, "exportLimit": 500}}]  # fmt: skip
    run = run_stack("dev", overrides={"services": services})
    data = run.one("kubernetes:core/v1:ConfigMap", "analytics-api-config").inputs["data"]
    assert data["FEATURE_NEWDASHBOARD"] == "true"
    assert data["FEATURE_EXPORTLIMIT"] == "500"


@pytest.mark.parametrize(("stack", "active", "most", "preview"),
                         [("dev", 1, 2, 1), ("staging", 2, 4, 1), ("prod", 3, 10, 3)])  # fmt: skip
def test_each_color_has_its_own_hpa_and_no_deployment_sets_replicas(
    run_stack: RunStack, stack: str, active: int, most: int, preview: int
) -> None:
    """A Deployment under an HPA leaves spec.replicas unset, or every apply resets the HPA's
    count (Kubernetes, "Horizontal Pod Autoscaling: migrating Deployments and StatefulSets to
    horizontal autoscaling"). The active color scales with load; the idle one holds
    previewReplicaCount (min = max)."""
    run = run_stack(stack)
    for color in ("blue", "green"):
        assert "replicas" not in _deployment(run, color)["spec"]
    hpas = {r.name: r.inputs["spec"] for r in run.of_type(HPA)}
    assert set(hpas) == {"analytics-api-blue", "analytics-api-green"}
    for color, bounds in (("blue", (active, most)), ("green", (preview, preview))):
        spec = hpas[f"analytics-api-{color}"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": f"analytics-api-{color}"}  # fmt: skip
        assert (spec["minReplicas"], spec["maxReplicas"]) == bounds
        assert spec["metrics"][0]["resource"]["target"]["averageUtilization"] == 70


def test_each_color_has_a_disruption_budget_for_exactly_its_pods(run_stack: RunStack) -> None:
    run = run_stack("dev")
    pdbs = {r.name: r.inputs for r in run.of_type(PDB) if r.name.startswith("analytics-api")}
    assert set(pdbs) == {"analytics-api-blue", "analytics-api-green"}
    for color in ("blue", "green"):
        pdb = pdbs[f"analytics-api-{color}"]
        assert pdb["metadata"]["name"] == f"analytics-api-{color}"
        assert pdb["spec"] == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "analytics-api",
                                         "app": "analytics-api", "color": color}},
        }  # fmt: skip


def test_services_select_the_active_and_preview_colors(run_stack: RunStack) -> None:
    run = run_stack("prod")
    active = run.one(SERVICE, "analytics-api-active").inputs["spec"]
    preview = run.one(SERVICE, "analytics-api-preview").inputs["spec"]
    assert active["selector"]["color"] == "blue"
    assert preview["selector"]["color"] == "green"
    assert (active["type"], active["ports"][0]["nodePort"]) == ("NodePort", 30080)
    assert (preview["type"], preview["ports"][0]["nodePort"]) == ("NodePort", 30081)


def test_each_service_is_bound_to_its_own_target_group(run_stack: RunStack) -> None:
    """A TargetGroupBinding keeps one target group's targets in step with one Service (AWS Load
    Balancer Controller, "TargetGroupBinding"): active -> stable, preview -> canary."""
    run = run_stack("prod")
    bindings = {r.name: r.inputs for r in run.of_type(TGB)}
    groups = {r.name: r.outputs["arn"] for r in run.of_type("aws:lb/targetGroup:TargetGroup")}
    assert {name: b["spec"] for name, b in bindings.items()} == {
        "analytics-api-target-group": {
            "serviceRef": {"name": "analytics-api-active", "port": 80},
            "targetGroupARN": groups["api-analytics-api"],
            "targetType": "instance",
        },
        "analytics-api-preview-target-group": {
            "serviceRef": {"name": "analytics-api-preview", "port": 80},
            "targetGroupARN": groups["api-analytics-api-preview"],
            "targetType": "instance",
        },
    }
    names = {b["metadata"]["name"] for b in bindings.values()}
    assert names == {"analytics-api", "analytics-api-preview"}


def test_a_new_target_group_replaces_its_binding_instead_of_updating_it(
    run_stack: RunStack,
) -> None:
    """The AWS Load Balancer Controller's webhook rejects an update of spec.targetGroupARN
    ("TargetGroupBinding update may not change these fields", kubernetes-sigs/
    aws-load-balancer-controller, targetgroupbinding validator): Pulumi must replace the
    binding, deleting the old one first because the new one keeps its name."""
    for binding in run_stack("prod").of_type(TGB):
        assert binding.replace_on_changes == ["spec.targetGroupARN"]
        assert binding.delete_before_replace is True


@pytest.mark.parametrize("stack", STACKS)
def test_no_ingress_nginx_objects(run_stack: RunStack, stack: str) -> None:
    """Traffic enters through the ALB and never passes an ingress controller; ingress-nginx is
    retired upstream."""
    run = run_stack(stack)
    assert run.of_type("kubernetes:networking.k8s.io/v1:Ingress") == []
    assert not any("nginx" in json.dumps(r.inputs) for r in run.resources)


def test_network_policy_allows_the_app_port_in_and_dns_database_https_out(
    run_stack: RunStack,
) -> None:
    """Out: DNS, PostgreSQL, HTTPS, and the node's EKS Pod Identity agent, which listens on
    169.254.170.23 and fd00:ec2::23, port 80 ("Understand how EKS Pod Identity works"), and
    the trace collector's OTLP/HTTP port (tests/test_tracing.py)."""
    policy = run_stack("dev").one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "analytics-api")
    spec = policy.inputs["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    egress = [(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]]
    assert sorted(egress) == [(53, "TCP"), (53, "UDP"), (80, "TCP"), (443, "TCP"), (4318, "TCP"),
                              (5432, "TCP")]  # fmt: skip
    [agent] = [rule for rule in spec["egress"] if "ipBlock" in rule.get("to", [{}])[0]]
    assert agent["ports"] == [{"port": 80, "protocol": "TCP"}]
    assert agent["to"] == [{"ipBlock": {"cidr": "169.254.170.23/32"}},
                           {"ipBlock": {"cidr": "fd00:ec2::23/128"}}]  # fmt: skip


def _flip(stack: str) -> list[dict[str, Any]]:
    return [
        {**service, "activeColor": "green"}
        for service in stack_yaml(stack)["config"]["analytics-platform:services"]
    ]


def _changed_paths(before: Any, after: Any, path: str = "") -> set[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        changed: set[str] = set()
        for key in set(before) | set(after):
            changed |= _changed_paths(before.get(key), after.get(key), f"{path}.{key}")
        return changed
    return set() if before == after else {path}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_switching_colors_changes_only_selectors_and_hpa_bounds(
    run_stack: RunStack, stack: str
) -> None:
    before = {r.urn: r.to_json() for r in run_stack(stack).resources}
    after = {r.urn: r.to_json() for r in run_stack(stack, overrides={"services": _flip(stack)})
             .resources}  # fmt: skip
    assert set(before) == set(after), "a color switch must not add, remove or replace anything"
    changed = {
        urn.rpartition("::")[2] + path
        for urn in before
        for path in _changed_paths(before[urn]["inputs"], after[urn]["inputs"])
    }
    allowed = {
        "analytics-api-active.spec.selector.color",
        "analytics-api-preview.spec.selector.color",
        "analytics-api-blue.spec.minReplicas",
        "analytics-api-blue.spec.maxReplicas",
        "analytics-api-green.spec.minReplicas",
        "analytics-api-green.spec.maxReplicas",
        # The pod-delete experiment selects the active color (infra/chaos.py); prod has none.
        *(["chaos-pod-delete.targets"] if stack != "prod" else []),
    }
    assert changed <= allowed
    assert {"analytics-api-active.spec.selector.color",
            "analytics-api-preview.spec.selector.color"} <= changed  # fmt: skip
    hpas = {r.name: r.inputs["spec"] for r in run_stack(stack, overrides={"services":
            _flip(stack)}).of_type(HPA)}  # fmt: skip
    assert hpas["analytics-api-green"]["maxReplicas"] > hpas["analytics-api-blue"]["maxReplicas"]


def test_each_color_runs_its_own_image_and_version(run_stack: RunStack) -> None:
    run = run_stack("prod")
    config = stack_yaml("prod")["config"]["analytics-platform:services"][0]
    for color in ("blue", "green"):
        expected = config[color].get("image") or run.outputs["imageReference"]
        assert _container(run, color)["image"] == expected
        labels = _deployment(run, color)["spec"]["template"]["metadata"]["labels"]
        assert labels["version"] == config[color]["version"]


def test_pods_carry_prometheus_scrape_annotations_by_default(run_stack: RunStack) -> None:
    run = run_stack("staging")
    for color in ("blue", "green"):
        metadata = _deployment(run, color)["spec"]["template"]["metadata"]
        port = int(_container(run, color)["ports"][0]["containerPort"])
        assert metadata["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }
    assert not run.of_type("kubernetes:monitoring.coreos.com/v1:ServiceMonitor")


def test_a_service_monitor_replaces_the_annotations_when_the_operator_runs(
    run_stack: RunStack,
) -> None:
    prometheus = {"serviceMonitor": True, "serviceMonitorLabels": {"release": "prometheus"}}
    run = run_stack("prod", overrides={"monitoring": {"prometheus": prometheus}})
    monitor = run.one("kubernetes:monitoring.coreos.com/v1:ServiceMonitor").inputs
    assert monitor["metadata"]["namespace"] == "analytics-api"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    # It selects both Services, so both colors are scraped and told apart by their label.
    services = [s for s in run.of_type(SERVICE) if s.name.startswith("analytics-api")]
    assert len(services) == 2
    for service in services:
        assert selector.items() <= service.inputs["metadata"]["labels"].items()
    assert monitor["spec"]["podTargetLabels"] == ["color", "version"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "scheme": "http", "interval": "30s"}
    ports = {p["name"] for s in services for p in s.inputs["spec"]["ports"]}
    assert ports == {"http"}
    for color in ("blue", "green"):
        assert "annotations" not in _deployment(run, color)["spec"]["template"]["metadata"]
