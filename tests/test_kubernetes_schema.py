"""Every Kubernetes object validates against the OpenAPI schema of the cluster's version."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from infra.mock_engine import ProgramRun, reveal_all
from tests.conftest import STACKS, RunStack, stack_yaml

# Custom resources have no schema in kubernetes-validate; these fields are what their
# controllers require.
CRD_REQUIRED = {
    ("elbv2.k8s.aws/v1beta1", "TargetGroupBinding"): [
        ("spec", "serviceRef", "name"),
        ("spec", "serviceRef", "port"),
        ("spec", "targetGroupARN"),
    ],
    ("monitoring.coreos.com/v1", "ServiceMonitor"): [
        ("spec", "selector"),
        ("spec", "endpoints"),
    ],
}


def manifests(run: ProgramRun) -> list[dict[str, Any]]:
    """The Kubernetes objects of a run, as the provider will send them to the API server."""
    objects = []
    for record in run.resources:
        if record.custom and record.type.startswith("kubernetes:"):
            objects.append(reveal_all(record.inputs))
    return objects


def _get(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None  # type: ignore[assignment]
    return obj


def check(manifest: dict[str, Any], version: str) -> None:
    required = CRD_REQUIRED.get((manifest["apiVersion"], manifest["kind"]))
    if required is not None:
        missing = [".".join(p) for p in required if _get(manifest, p) in (None, "")]
        assert not missing, f"{manifest['kind']} lacks {missing}"
        return
    kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_matches_the_cluster_schema(
    run_stack: RunStack, stack: str
) -> None:
    version = stack_yaml(stack)["config"]["analytics-platform:kubernetes"]["version"]
    services = copy.deepcopy(stack_yaml(stack)["config"]["analytics-platform:services"])
    services[0]["canary"] = {"weight": 5}
    objects = []
    for service_monitor in (False, True):
        prometheus = {"prometheus": {"serviceMonitor": service_monitor}}
        objects += manifests(
            run_stack(stack, overrides={"services": services, "monitoring": prometheus})
        )
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "TargetGroupBinding", "Job",
            "ServiceAccount",
            "ServiceMonitor"} <= kinds  # fmt: skip
    for manifest in objects:
        check(manifest, version)


def test_the_trace_collectors_objects_are_among_those_checked(run_stack: RunStack) -> None:
    """infra/tracing.py: every kind it creates reaches the schema check above."""
    kinds = {
        o["kind"]
        for o in manifests(run_stack("prod"))
        if o["metadata"].get("namespace") == "tracing" or o["metadata"]["name"] == "tracing"
    }
    assert kinds == {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                     "PodDisruptionBudget", "NetworkPolicy"}  # fmt: skip


def test_a_misspelled_field_fails_strict_validation(run_stack: RunStack) -> None:
    [deployment, *_] = [o for o in manifests(run_stack("dev")) if o["kind"] == "Deployment"]
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        check(deployment, "1.34")


def test_a_service_monitor_without_endpoints_fails(run_stack: RunStack) -> None:
    prometheus = {"prometheus": {"serviceMonitor": True}}
    [monitor] = [o for o in manifests(run_stack("dev", overrides={"monitoring": prometheus}))
                 if o["kind"] == "ServiceMonitor"]  # fmt: skip
    check(monitor, "1.34")
    del monitor["spec"]["endpoints"]
    with pytest.raises(AssertionError, match="endpoints"):
        check(monitor, "1.34")


def test_a_target_group_binding_without_its_target_group_fails(run_stack: RunStack) -> None:
    bindings = [o for o in manifests(run_stack("dev")) if o["kind"] == "TargetGroupBinding"]
    assert len(bindings) == 2  # stable and canary target groups
    for binding in bindings:
        del binding["spec"]["targetGroupARN"]
        with pytest.raises(AssertionError, match="targetGroupARN"):
            check(binding, "1.34")
