"""Kubernetes: hardened pods, pinned images, disruption budgets, network policies, no leaks."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pulumi_policy import PolicyResource, ResourceValidationArgs

from infra.policies._rules import ADVISORY, get, is_secret_key, resource_rule, stack_rule

CATEGORY = "kubernetes"
MIN_UID = 10000
# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
WORKLOADS = list(POD_SPEC_PATHS)
# Run to completion: liveness and readiness mean nothing there.
_BATCH = {"kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob"}
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def pod_spec(args: ResourceValidationArgs | PolicyResource) -> Mapping[str, Any]:
    spec = get(args.props, *POD_SPEC_PATHS[args.resource_type])
    return spec if isinstance(spec, Mapping) else {}


def containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    every = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    return [c for c in every if isinstance(c, Mapping)]


PerContainer = Callable[[Mapping[str, Any], Mapping[str, Any]], Iterable[str]]


def each_container(check: PerContainer) -> Callable[[ResourceValidationArgs], Iterable[str]]:
    """Runs `check(pod_spec, container)` on every container, naming the container."""

    def run(args: ResourceValidationArgs) -> Iterable[str]:
        spec = pod_spec(args)
        for container in containers(spec):
            for problem in check(spec, container):
                yield f"container {container.get('name')!r}: {problem}"

    return run


def _security(spec: Mapping[str, Any], container: Mapping[str, Any], key: str) -> Any:
    """A security setting as it applies to the container: its own, else the pod's."""
    own = get(container, "securityContext", key)
    return own if own is not None else get(spec, "securityContext", key)


def _probes(spec: Mapping[str, Any], container: Mapping[str, Any]) -> Iterable[str]:
    if container in list(spec.get("initContainers") or []):
        return
    for probe in ("readinessProbe", "livenessProbe"):
        if not container.get(probe):
            yield f"no {probe}"


def _probes_for(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type not in _BATCH:
        yield from each_container(_probes)(args)


def _resources(_: Mapping[str, Any], container: Mapping[str, Any]) -> Iterable[str]:
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if not get(container, "resources", kind, resource):
                yield f"no resources.{kind}.{resource}"


def _non_root(spec: Mapping[str, Any], container: Mapping[str, Any]) -> Iterable[str]:
    if _security(spec, container, "runAsNonRoot") is not True:
        yield "runAsNonRoot is not true"
    uid = _security(spec, container, "runAsUser")
    if uid is None or uid < MIN_UID:
        yield f"runAsUser is {uid}; use a fixed UID of at least {MIN_UID}"


def _read_only(_: Mapping[str, Any], container: Mapping[str, Any]) -> Iterable[str]:
    if get(container, "securityContext", "readOnlyRootFilesystem") is not True:
        yield "readOnlyRootFilesystem is not true"


def _no_escalation(_: Mapping[str, Any], container: Mapping[str, Any]) -> Iterable[str]:
    if get(container, "securityContext", "allowPrivilegeEscalation") is not False:
        yield "allowPrivilegeEscalation is not false"


def _drop_all(_: Mapping[str, Any], container: Mapping[str, Any]) -> Iterable[str]:
    if "ALL" not in (get(container, "securityContext", "capabilities", "drop") or []):
        yield "capabilities.drop does not include ALL"


def _seccomp(spec: Mapping[str, Any], container: Mapping[str, Any]) -> Iterable[str]:
    profile = get(_security(spec, container, "seccompProfile"), "type")
    if profile not in ("RuntimeDefault", "Localhost"):
        yield f"seccompProfile.type is {profile!r}; use RuntimeDefault"


def _tag(image: str) -> str:
    return image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]


def _pinned(_: Mapping[str, Any], container: Mapping[str, Any]) -> Iterable[str]:
    image = str(container.get("image") or "")
    if not _DIGEST.search(image) and _tag(image) in ("", "latest"):
        yield f"image {image!r} is untagged or latest; pin a version tag or a digest"


def _digest(_: Mapping[str, Any], container: Mapping[str, Any]) -> Iterable[str]:
    image = str(container.get("image") or "")
    if not _DIGEST.search(image):
        yield f"image {image!r} is not pinned by digest (@sha256:...)"


# A ServiceAccount whose pods must call the API (the FIS pod: infra/chaos.py) says why here;
# the exemption is the ServiceAccount's only, never a pod's, and reviewed like any change.
API_CLIENT_ANNOTATION = "analytics-platform/kubernetes-api-client"


def _no_token(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == "kubernetes:core/v1:ServiceAccount":
        annotations = get(args.props, "metadata", "annotations") or {}
        if annotations.get(API_CLIENT_ANNOTATION):
            return
        value = args.props.get("automountServiceAccountToken")
    else:
        value = pod_spec(args).get("automountServiceAccountToken")
    if value is not False:
        yield "automountServiceAccountToken is not false: the pod would get an API token"


def _internal_only(args: ResourceValidationArgs) -> Iterable[str]:
    if get(args.props, "spec", "type") != "LoadBalancer":
        return
    annotations = get(args.props, "metadata", "annotations") or {}
    internal = (
        annotations.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal"
        or annotations.get("service.beta.kubernetes.io/aws-load-balancer-internal") == "true"
    )
    if not internal:
        yield "a LoadBalancer Service without the internal scheme is open to the internet"


def _no_secret_env(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == "kubernetes:core/v1:ConfigMap":
        for key in sorted(args.props.get("data") or {}):
            if is_secret_key(key):
                yield f"ConfigMap key {key} looks like a secret; put it in a Secret"
        return
    for container in containers(pod_spec(args)):
        for env in container.get("env") or []:
            if is_secret_key(str(get(env, "name"))) and get(env, "value") is not None:
                yield (
                    f"container {container.get('name')!r}: env {get(env, 'name')} has a plain "
                    "value; take it from a Secret (valueFrom.secretKeyRef)"
                )


def _namespace(resource: PolicyResource) -> str:
    return str(get(resource.props, "metadata", "namespace") or "default")


def _matches(selector: Mapping[str, Any] | None, labels: Mapping[str, Any]) -> bool:
    wanted = get(selector, "matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _pdbs(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    budgets = [
        r for r in resources if r.resource_type == "kubernetes:policy/v1:PodDisruptionBudget"
    ]
    for r in resources:
        if r.resource_type not in (
            "kubernetes:apps/v1:Deployment",
            "kubernetes:apps/v1:StatefulSet",
        ):
            continue
        replicas = get(r.props, "spec", "replicas")
        if replicas is not None and replicas < 1:
            continue  # an idle color: nothing to disrupt
        labels = get(r.props, "spec", "template", "metadata", "labels") or {}
        if not any(
            _namespace(b) == _namespace(r) and _matches(get(b.props, "spec", "selector"), labels)
            for b in budgets
        ):
            yield r.urn, "no PodDisruptionBudget selects this workload's pods"


def _network_policies(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    covered = {
        _namespace(r)
        for r in resources
        if r.resource_type == "kubernetes:networking.k8s.io/v1:NetworkPolicy"
    }
    for r in resources:
        if r.resource_type == "kubernetes:core/v1:Namespace":
            name = str(get(r.props, "metadata", "name"))
        elif r.resource_type in POD_SPEC_PATHS:
            name = _namespace(r)
        else:
            continue
        if name not in covered:
            yield r.urn, f"namespace {name} has no NetworkPolicy: every pod in it is reachable"


POLICIES = [
    resource_rule("k8s-probes", CATEGORY, "Every long-running container has readiness and "
                  "liveness probes.", WORKLOADS, _probes_for,
                  "Add readiness_probe (/health/ready) and liveness_probe (/health/live)."),
    resource_rule("k8s-requests-and-limits", CATEGORY, "Every container sets CPU and memory "
                  "requests and limits.", WORKLOADS, each_container(_resources),
                  "Set services[].resources (cpuRequest, memoryRequest, cpuLimit, memoryLimit)."),
    resource_rule("k8s-run-as-non-root", CATEGORY, f"Containers run as non-root with a UID of at "
                  f"least {MIN_UID}.", WORKLOADS, each_container(_non_root),
                  f"Set run_as_non_root=True and run_as_user >= {MIN_UID} (the image's USER)."),
    resource_rule("k8s-read-only-root-filesystem", CATEGORY, "Containers have a read-only root "
                  "filesystem.", WORKLOADS, each_container(_read_only),
                  "Set read_only_root_filesystem=True; mount an emptyDir where the app writes."),
    resource_rule("k8s-no-privilege-escalation", CATEGORY, "Containers cannot gain privileges.",
                  WORKLOADS, each_container(_no_escalation),
                  "Set allow_privilege_escalation=False."),
    resource_rule("k8s-drop-all-capabilities", CATEGORY, "Containers drop every Linux "
                  "capability.", WORKLOADS, each_container(_drop_all),
                  "Set capabilities.drop=['ALL'] and add back only what is needed."),
    resource_rule("k8s-seccomp", CATEGORY, "Containers run under a seccomp profile.", WORKLOADS,
                  each_container(_seccomp), "Set seccomp_profile type RuntimeDefault on the pod."),
    resource_rule("k8s-image-pinned", CATEGORY, "Images are never `latest` or untagged.",
                  WORKLOADS, each_container(_pinned),
                  "Use image.reference with a digest or a version tag, or build (IMAGE_TAG)."),
    resource_rule("k8s-image-digest", CATEGORY, "Images are pinned by digest.", WORKLOADS,
                  each_container(_digest), "Prefer registry/repo@sha256:... (image.build "
                  "exports the pushed digest).", level=ADVISORY),
    resource_rule("k8s-no-token-automount", CATEGORY, "Pods and service accounts do not mount "
                  "an API token.", [*WORKLOADS, "kubernetes:core/v1:ServiceAccount"], _no_token,
                  "Set automount_service_account_token=False on the pod spec and ServiceAccount "
                  "(a ServiceAccount whose pods must call the API names why in the annotation "
                  "analytics-platform/kubernetes-api-client)."),
    stack_rule("k8s-pdb-per-deployment", CATEGORY, "Every Deployment with replicas has a "
               "PodDisruptionBudget.", _pdbs,
               "Create a PodDisruptionBudget whose selector matches the pod template's labels."),
    stack_rule("k8s-network-policy-per-namespace", CATEGORY, "Every namespace with workloads "
               "has a NetworkPolicy.", _network_policies,
               "Create a NetworkPolicy in the namespace (infra/blue_green.py has one per "
               "service)."),
    resource_rule("k8s-no-public-load-balancer", CATEGORY, "No Service is a public load "
                  "balancer.", ["kubernetes:core/v1:Service"], _internal_only,
                  "Use ClusterIP or NodePort behind the API gateway, or annotate "
                  "service.beta.kubernetes.io/aws-load-balancer-scheme: internal."),
    resource_rule("k8s-no-secrets-in-env", CATEGORY, "Secret-looking settings come from "
                  "Secrets, never plain env or ConfigMaps.",
                  [*WORKLOADS, "kubernetes:core/v1:ConfigMap"], _no_secret_env,
                  "Move the value into a Secret and reference it with valueFrom.secretKeyRef "
                  "or envFrom.secretRef."),
]  # fmt: skip
