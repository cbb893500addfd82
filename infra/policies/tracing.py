"""Tracing: the collector's role only writes to X-Ray; the apps export to the in-cluster collector.

The collector is the Deployment whose pods listen on OTLP/HTTP (4318); its role is the one its
ServiceAccount's Pod Identity association names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pulumi_policy import PolicyResource

from infra.policies._rules import get, stack_rule
from infra.policies.kubernetes import containers

CATEGORY = "tracing"
OTLP_HTTP_PORT = 4318
# What the awsxray exporter may call (AWS X-Ray API Reference): segments, and its own telemetry.
XRAY_WRITE_ACTIONS = frozenset({"xray:PutTraceSegments", "xray:PutTelemetryRecords"})
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
ROLE = "aws:iam/role:Role"
# Other ways a role gains permissions: attachments naming roles in a list, and the exclusive
# attachment resources (one role each, by its name).
LIST_ATTACHMENTS = frozenset(
    {
        "aws:iam/policyAttachment:PolicyAttachment",
        "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive",
        "aws:iam/rolePoliciesExclusive:RolePoliciesExclusive",
    }
)


def _namespace(resource: PolicyResource) -> str:
    return str(get(resource.props, "metadata", "namespace") or "default")


def _pod(resource: PolicyResource) -> Mapping[str, Any]:
    spec = get(resource.props, "spec", "template", "spec")
    return spec if isinstance(spec, Mapping) else {}


def _is_collector(resource: PolicyResource) -> bool:
    return resource.resource_type == DEPLOYMENT and any(
        get(port, "containerPort") == OTLP_HTTP_PORT
        for container in containers(_pod(resource))
        for port in container.get("ports") or []
    )


def _collectors(resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    return [r for r in resources if _is_collector(r)]


def _listed(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value or [])


def _statement_problems(text: object) -> Iterable[str]:
    if not isinstance(text, str):  # unknown during a first preview
        return
    for statement in json.loads(text).get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        extra = sorted(set(_listed(statement.get("Action"))) - XRAY_WRITE_ACTIONS)
        if extra or statement.get("NotAction"):
            shown = ", ".join(extra) or "NotAction"
            yield f"the collector's role may only write to X-Ray, not {shown}"


def _collector_role_scope(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    for collector in _collectors(resources):
        account = _pod(collector).get("serviceAccountName")
        roles = [
            role
            for a in resources
            if a.resource_type == ASSOCIATION
            and get(a.props, "namespace") == _namespace(collector)
            and get(a.props, "serviceAccount") == account
            for role in a.property_dependencies.get("roleArn", [])
        ]
        for r in resources:
            if r.resource_type == ROLE and r in roles:
                for inline in get(r.props, "inlinePolicies") or []:
                    for problem in _statement_problems(get(inline, "policy")):
                        yield r.urn, problem
                for managed in get(r.props, "managedPolicyArns") or []:
                    yield r.urn, _managed_problem(managed)
                continue
            if r.resource_type in LIST_ATTACHMENTS and any(
                d in roles
                for key in ("roles", "roleName")
                for d in r.property_dependencies.get(key, [])
            ):
                yield (
                    r.urn,
                    f"the collector's role gets permissions through a {r.resource_type}; it may "
                    "only write to X-Ray, through its own inline policy",
                )
                continue
            bound = any(d in roles for d in r.property_dependencies.get("role", []))
            if bound and r.resource_type == ROLE_POLICY:
                for problem in _statement_problems(get(r.props, "policy")):
                    yield r.urn, problem
            elif bound and r.resource_type == ATTACHMENT:
                yield r.urn, _managed_problem(get(r.props, "policyArn"))


def _managed_problem(managed: object) -> str:
    return (
        f"the collector's role gets the managed policy {managed}; it may only write to X-Ray, "
        "through its own inline policy"
    )


def _collector_endpoints(resources: Sequence[PolicyResource]) -> set[str]:
    """http://<Service>.<namespace>.svc.cluster.local:4318 of each Service of a collector."""
    endpoints: set[str] = set()
    for collector in _collectors(resources):
        labels = get(collector.props, "spec", "template", "metadata", "labels") or {}
        for service in (r for r in resources if r.resource_type == SERVICE):
            selector = get(service.props, "spec", "selector") or {}
            ports = [get(p, "port") for p in get(service.props, "spec", "ports") or []]
            if (
                _namespace(service) == _namespace(collector)
                and selector
                and all(labels.get(k) == v for k, v in selector.items())
                and OTLP_HTTP_PORT in ports
            ):
                name = get(service.props, "metadata", "name")
                endpoints.add(
                    f"http://{name}.{_namespace(service)}.svc.cluster.local:{OTLP_HTTP_PORT}"
                )
    return endpoints


def _export_problems(container: Mapping[str, Any], endpoints: set[str]) -> Iterable[str]:
    env = {get(e, "name"): get(e, "value") for e in container.get("env") or []}
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint not in endpoints:
        allowed = ", ".join(sorted(endpoints)) or "none: the stack has no collector"
        yield (
            f"OTEL_EXPORTER_OTLP_ENDPOINT is {endpoint!r}, not the in-cluster collector ({allowed})"
        )
    if env.get("OTEL_EXPORTER_OTLP_PROTOCOL") != "http/protobuf":
        yield (
            f"OTEL_EXPORTER_OTLP_PROTOCOL is {env.get('OTEL_EXPORTER_OTLP_PROTOCOL')!r}; the "
            "collector receives http/protobuf only"
        )
    if not env.get("OTEL_SERVICE_NAME"):
        yield "OTEL_SERVICE_NAME is not set: X-Ray would name the service unknown_service"


def _apps_export(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    endpoints = _collector_endpoints(resources)
    for r in resources:
        if r.resource_type != DEPLOYMENT or _is_collector(r):
            continue
        for container in list(_pod(r).get("containers") or []):
            for problem in _export_problems(container, endpoints):
                yield r.urn, f"container {container.get('name')!r}: {problem}"


POLICIES = [
    stack_rule("tracing-collector-role-writes-only-xray", CATEGORY, "The trace collector's "
               "Pod Identity role may only write trace data to X-Ray (xray:PutTraceSegments, "
               "xray:PutTelemetryRecords).", _collector_role_scope,
               "Keep the collector's inline policy to infra/tracing.py XRAY_ACTIONS; attach no "
               "managed policy to its role."),
    stack_rule("tracing-apps-export-to-collector", CATEGORY, "Every app Deployment exports "
               "its traces over OTLP/HTTP to the stack's in-cluster collector, under a "
               "service name.", _apps_export,
               "Give the Deployment BlueGreenService's trace env (TraceCollector.export): "
               "OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME."),
]  # fmt: skip
