"""Names, labels and ports of every Kubernetes object, against the API server's own validation.

The OpenAPI schema (tests/test_kubernetes_schema.py) types the fields; the API server also
validates their values, and refuses the object on the first `pulumi up`:
- Kubernetes, "Object Names and IDs": most names are DNS-1123 subdomains (253 characters); a
  Namespace, a container, a volume and a port of a Service are DNS-1123 labels (63); a Service
  name is an RFC 1035 label (it starts with a letter).
- "Labels and Selectors", syntax and character set: a key is an optional DNS subdomain prefix
  and `/`, then a name of at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
  alphanumeric; a value is empty or the same form.
- ContainerPort.name (API reference, core/v1): an IANA_SVC_NAME, at most 15 lowercase
  alphanumerics and `-`, with a letter, no `-` at either end or twice in a row; unique in the
  pod. A Service's string targetPort names such a port.
- Container.volumeMounts[].name must name a volume of the pod.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from infra.config_rules import quantity
from infra.mock_engine import ProgramRun, ResourceRecord
from tests.conftest import STACKS, RunStack

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
RFC_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
KUBERNETES = "kubernetes:"
POD_TEMPLATES = ("apps/v1:Deployment", "batch/v1:Job")


def dns_label(value: str) -> bool:
    return len(value) <= 63 and bool(DNS_LABEL.match(value))


def dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(DNS_SUBDOMAIN.match(value))


def label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return (
        (not prefix or dns_subdomain(prefix)) and len(name) <= 63 and bool(LABEL_NAME.match(name))
    )


def label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(LABEL_NAME.match(value)))


def port_name(value: str) -> bool:
    return (len(value) <= 15 and bool(IANA_SVC_NAME.match(value)) and "--" not in value
            and any(c.isalpha() for c in value))  # fmt: skip


def _labels(where: str, labels: dict[str, str] | None) -> Iterator[str]:
    for key, value in (labels or {}).items():
        if not label_key(key):
            yield f"{where}: label key {key!r}"
        if not label_value(value):
            yield f"{where}: label value {key}={value!r}"


def pod_problems(where: str, pod: dict[str, Any]) -> Iterator[str]:
    volumes = [v["name"] for v in pod.get("volumes") or []]
    for name in volumes:
        if not dns_label(name):
            yield f"{where}: volume {name!r}"
    ports: list[str] = []
    for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
        if not dns_label(container["name"]):
            yield f"{where}: container {container['name']!r}"
        for port in container.get("ports") or []:
            if "name" in port:
                ports.append(port["name"])
                if not port_name(port["name"]):
                    yield f"{where}: port name {port['name']!r}"
            if port.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
                yield f"{where}: port protocol {port['protocol']!r}"
        yield from _resource_problems(f"{where} {container['name']}", container.get("resources"))
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in volumes:
                yield f"{where}: mount of {mount['name']!r}, which is no volume of the pod"
    if len(ports) != len(set(ports)):
        yield f"{where}: repeated port names {ports}"


def _resource_problems(where: str, resources: dict[str, Any] | None) -> Iterator[str]:
    """ResourceRequirements: each value a quantity (k8s.io/apimachinery resource.Quantity),
    and a request no larger than its limit (the API server: "must be less than or equal to
    cpu limit")."""
    amounts: dict[str, dict[str, Any]] = {}
    for kind in ("requests", "limits"):
        for name, text in ((resources or {}).get(kind) or {}).items():
            try:
                amounts.setdefault(kind, {})[name] = quantity(str(text))
            except ValueError:
                yield f"{where}: {kind}.{name} {text!r} is not a quantity"
    for name, request in amounts.get("requests", {}).items():
        limit = amounts.get("limits", {}).get(name)
        if limit is not None and request > limit:
            yield f"{where}: requests.{name} over limits.{name}"


def object_problems(resource: ResourceRecord) -> Iterator[str]:
    inputs, kind = resource.inputs, resource.type.rsplit(":", 1)[1]
    where = f"{kind} {resource.name}"
    metadata = inputs.get("metadata") or {}
    name = metadata.get("name", "")
    if kind == "Namespace" and not dns_label(name):
        yield f"{where}: name {name!r} is not a DNS-1123 label"
    elif kind == "Service" and not (len(name) <= 63 and RFC_1035_LABEL.match(name)):
        yield f"{where}: name {name!r} is not an RFC 1035 label"
    elif not dns_subdomain(name):
        yield f"{where}: name {name!r} is not a DNS-1123 subdomain"
    if "namespace" in metadata and not dns_label(metadata["namespace"]):
        yield f"{where}: namespace {metadata['namespace']!r}"
    yield from _labels(where, metadata.get("labels"))
    spec = inputs.get("spec") or {}
    if any(resource.type.endswith(t) for t in POD_TEMPLATES):
        template = spec["template"]
        yield from _labels(f"{where} pods", template["metadata"].get("labels"))
        yield from pod_problems(where, template["spec"])
    if kind == "Service":
        yield from _labels(f"{where} selector", spec.get("selector"))
        for port in spec.get("ports") or []:
            if "name" in port and not dns_label(port["name"]):
                yield f"{where}: port name {port['name']!r}"


def kubernetes_objects(run: ProgramRun) -> list[ResourceRecord]:
    return [r for r in run.resources if r.type.startswith(KUBERNETES) and r.custom
            and "providers" not in r.type]  # fmt: skip


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_name_label_and_port_is_one_the_api_server_accepts(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack, overrides={"chaos": {"enabled": True}})
    objects = kubernetes_objects(run)
    assert {o.type.rsplit(":", 1)[1] for o in objects} >= {"Deployment", "Job", "Service",
                                                          "Namespace"}  # fmt: skip
    assert [p for o in objects for p in object_problems(o)] == []


@pytest.mark.parametrize("stack", STACKS)
def test_a_services_named_target_port_is_a_port_of_its_pods(
    run_stack: RunStack, stack: str
) -> None:
    """ServiceSpec.ports[].targetPort: a string is looked up as a named port in the selected
    pods (Kubernetes, "Service": "Port definitions")."""
    run = run_stack(stack)
    pods = [r for r in kubernetes_objects(run) if r.type.endswith(POD_TEMPLATES[0])]
    named = {
        (p["name"], d.inputs["metadata"]["namespace"])
        for d in pods
        for c in d.inputs["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports") or []
        if "name" in p
    }
    targets = [
        (port["targetPort"], service.inputs["metadata"]["namespace"])
        for service in run.of_type("kubernetes:core/v1:Service")
        for port in service.inputs["spec"]["ports"]
        if isinstance(port.get("targetPort"), str)
    ]
    assert targets
    assert [t for t in targets if t not in named] == []


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (dns_label, ["api", "a-1", "x" * 63], ["API", "-a", "a-", "a.b", "x" * 64, ""]),
        (dns_subdomain, ["a.b-c", "x" * 253], ["A.b", "a..b", "a_b", "x" * 254]),
        (label_key, ["app", "app.kubernetes.io/name", "a_b.C"], ["-a", "a/", "Bad_/x", "x" * 64]),
        (label_value, ["", "blue", "1.4.2", "a_B"], ["-x", "x-", "a b", "x" * 64]),
        (port_name, ["http", "otlp-http", "x" * 15, "h2c"], ["HTTP", "1234", "a--b", "x" * 16]),
    ],
)
def test_each_name_rule_accepts_and_refuses_as_the_api_server_does(
    check: Any, good: list[str], bad: list[str]
) -> None:
    assert [v for v in good if not check(v)] == []
    assert [v for v in bad if check(v)] == []


def test_a_pod_that_mounts_what_it_does_not_have_is_refused() -> None:
    pod = {
        "volumes": [{"name": "tmp"}],
        "containers": [
            {"name": "app", "ports": [{"name": "http", "protocol": "tcp"}, {"name": "http"}],
             "volumeMounts": [{"name": "cache"}]},
            {"name": "Collector", "resources": {"requests": {"cpu": "2", "memory": "x1"},
                                                "limits": {"cpu": "1"}}},
        ],
    }  # fmt: skip
    assert list(pod_problems("pod", pod)) == [
        "pod: port protocol 'tcp'",
        "pod: mount of 'cache', which is no volume of the pod",
        "pod: container 'Collector'",
        "pod Collector: requests.memory 'x1' is not a quantity",
        "pod Collector: requests.cpu over limits.cpu",
        "pod: repeated port names ['http', 'http']",
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_every_deployment_spreads_its_own_pods_across_zones(
    run_stack: RunStack, stack: str
) -> None:
    """Kubernetes, "Pod Topology Spread Constraints": the scheduler counts only the pods that
    the constraint's labelSelector matches, so a selector that misses the Deployment's own pods
    spreads nothing; `topology.kubernetes.io/zone` is the well-known zone label, and
    whenUnsatisfiable is DoNotSchedule or ScheduleAnyway."""
    deployments = run_stack(stack).of_type("kubernetes:apps/v1:Deployment")
    assert deployments
    for deployment in deployments:
        template = deployment.inputs["spec"]["template"]
        labels = template["metadata"]["labels"]
        [spread] = template["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone", deployment.name
        assert spread["maxSkew"] == 1, deployment.name
        assert spread["whenUnsatisfiable"] in ("DoNotSchedule", "ScheduleAnyway")
        selector = spread["labelSelector"]["matchLabels"]
        assert selector, deployment.name
        assert selector.items() <= labels.items(), deployment.name
