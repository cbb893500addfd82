"""TraceCollector: the cluster's OpenTelemetry collector, which sends the apps' spans to X-Ray.

- The apps export OTLP/HTTP (protobuf) to the collector's ClusterIP Service on 4318; their SDKs
  sample by `tracing.samplingRatio` (parentbased_traceidratio), so the collector keeps every
  span it receives. One pipeline: `otlp` -> `memory_limiter` -> `batch` -> `awsxray`.
- The image is the AWS Distro for OpenTelemetry collector, not upstream otelcol-contrib: AWS
  builds, scans and supports it with the components that reach AWS (the `awsxray` exporter is
  beta upstream, and ADOT is the distribution the X-Ray guide documents), and it carries
  nothing this pipeline does not need from contrib's hundreds of components.
- Its AWS identity comes from EKS Pod Identity: a role that may only `xray:PutTraceSegments`,
  the one call the exporter makes (its own telemetry, PutTelemetryRecords, stays off). The pods
  mount the Pod Identity token themselves and get no Kubernetes API token.
- The namespace enforces Pod Security Standards "restricted"; the pods run as a fixed non-root
  UID on a read-only root filesystem. A NetworkPolicy admits only the services' pods, on 4318;
  out, only DNS, HTTPS (X-Ray) and the node's Pod Identity agent.
- The resource attributes `deployment.color` and `service.version` become X-Ray annotations
  (`indexed_attributes`), so that traces can be filtered by color during a canary.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra.component import PlatformComponent, StackContext
from infra.database_access import (
    ClusterIdentity,
    PodSecurity,
    aws_client_egress,
    pod_identity_env,
    pod_identity_mount,
    pod_identity_role,
    pod_identity_volume,
)
from infra.settings import TracingSettings

NAMESPACE = "tracing"
COLLECTOR = "otel-collector"
# OTLP/HTTP (the OTLP specification's default port); gRPC (4317) is not opened: nothing sends it.
OTLP_HTTP_PORT = 4318
OTLP_PROTOCOL = "http/protobuf"
# The health_check extension's default port; the probes ask it.
HEALTH_PORT = 13133
# A fixed UID of our own: the image's user `aoc` (4317) is below the policy floor (10000).
COLLECTOR_UID = 10002
CONFIG_FILE = "collector.yaml"
CONFIG_DIR = "/conf"
# The only X-Ray call the awsxray exporter makes ("PutTraceSegments", AWS X-Ray API Reference).
XRAY_ACTIONS = ("xray:PutTraceSegments",)
# Resource attributes the app sets (APP_COLOR, APP_VERSION); indexed as annotations.
INDEXED_RESOURCE_ATTRIBUTES = ("deployment.color", "service.version")
# The awsxray exporter names a resource attribute `otel.resource.<key>` and, with the
# exporter.xray.allowDot gate off, writes its annotation with `_` for every other character.
# The gate was added in contrib v0.97.0 and is beta (on by default) since contrib PR #32694
# (2024); it is switched off on the command line so that
# the annotation keys are the plain `[A-Za-z0-9_]` names every X-Ray filter expression accepts.
XRAY_FEATURE_GATES = "-exporter.xray.allowDot"
SAMPLER = "parentbased_traceidratio"


def indexed_attribute(resource_attribute: str) -> str:
    """The name `indexed_attributes` takes for a resource attribute."""
    return f"otel.resource.{resource_attribute}"


def annotation_key(resource_attribute: str) -> str:
    """The X-Ray annotation the exporter writes for an indexed resource attribute."""
    return re.sub(r"[^A-Za-z0-9]", "_", indexed_attribute(resource_attribute))


def traces_console_url(region: str, expression: str, time_range: str = "PT1H") -> str:
    """The X-Ray console's traces list, filtered ("Console deep linking", X-Ray Developer
    Guide: `xray/home?region=<region>#/traces?filter=<expression>&timeRange=<ISO 8601>`)."""
    return (
        f"https://console.aws.amazon.com/xray/home?region={region}#/traces"
        f"?filter={quote(expression, safe='')}&timeRange={time_range}"
    )


def collector_config(region: str) -> dict[str, Any]:
    """The collector's configuration; every key is from the components' READMEs (awsxray
    exporter, otlp receiver, memory_limiter and batch processors, health_check extension)."""
    pod_ip = "${env:MY_POD_IP}"
    return {
        "extensions": {
            # The default is localhost:13133, which the kubelet cannot reach.
            "health_check": {"endpoint": f"{pod_ip}:{HEALTH_PORT}", "path": "/"},
        },
        "receivers": {
            # The default is localhost:4318; the pod's IP, as the collector's security guide
            # advises, rather than every interface. (An IPv6 cluster would need the address in
            # brackets: [${env:MY_POD_IP}]:4318.)
            "otlp": {"protocols": {"http": {"endpoint": f"{pod_ip}:{OTLP_HTTP_PORT}"}}},
        },
        "processors": {
            # Percentages of the container's memory limit (cgroups): refuse data before the
            # kernel kills the pod; the apps' exporters retry on the refusal.
            "memory_limiter": {
                "check_interval": "1s",
                "limit_percentage": 80,
                "spike_limit_percentage": 20,
            },
            "batch": {"timeout": "1s", "send_batch_size": 512},
        },
        "exporters": {
            "awsxray": {
                "region": region,
                "indexed_attributes": [indexed_attribute(a) for a in INDEXED_RESOURCE_ATTRIBUTES],
            },
        },
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": ["awsxray"],
                }
            },
        },
    }


@dataclass(frozen=True)
class TraceExport:
    """Where a service's pods send their spans, and how many they sample."""

    endpoint: str
    namespace: str
    pod_labels: Mapping[str, str]
    port: int
    sampling_ratio: float


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": COLLECTOR, "app": COLLECTOR}


class TraceCollector(PlatformComponent):
    """The collector's namespace, identity, configuration, Deployment, Service and policies."""

    export: TraceExport

    def __init__(
        self,
        name: str,
        settings: TracingSettings,
        *,
        region: str,
        sources: Sequence[str],
        cluster: ClusterIdentity,
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tracing:TraceCollector", name, ctx, opts)
        self.settings = settings
        self.export = TraceExport(
            endpoint=f"http://{COLLECTOR}.{NAMESPACE}.svc.cluster.local:{OTLP_HTTP_PORT}",
            namespace=NAMESPACE,
            pod_labels=_labels(),
            port=OTLP_HTTP_PORT,
            sampling_ratio=settings.sampling_ratio,
        )
        namespace = self._namespace()
        k8s_opts = self.child_opts(depends_on=[namespace])
        account = k8s.core.v1.ServiceAccount(
            name,
            metadata=self._meta(COLLECTOR),
            automount_service_account_token=False,
            opts=k8s_opts,
        )
        association = pod_identity_role(
            self,
            cluster,
            NAMESPACE,
            "collector",
            COLLECTOR,
            f"The trace collector of {ctx.project}/{ctx.stack}: writes trace segments to X-Ray",
            [{"Effect": "Allow", "Action": list(XRAY_ACTIONS), "Resource": "*"}],
        )
        config_text = yaml.safe_dump(collector_config(region), sort_keys=False)
        config_map = k8s.core.v1.ConfigMap(
            name,
            metadata=self._meta(COLLECTOR),
            data={CONFIG_FILE: config_text},
            opts=k8s_opts,
        )
        k8s.apps.v1.Deployment(
            name,
            metadata=self._meta(COLLECTOR),
            spec=self._deployment_spec(config_text),
            # Pods of a ServiceAccount that does not exist yet are refused, and retried with
            # a backoff that eats into the rollout's wait.
            opts=self.child_opts(depends_on=[namespace, account, config_map, association]),
        )
        k8s.core.v1.Service(
            name,
            metadata=self._meta(COLLECTOR),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=_labels(),
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="otlp-http", port=OTLP_HTTP_PORT, target_port="otlp-http",
                        protocol="TCP",
                    )
                ],
            ),
            opts=k8s_opts,
        )  # fmt: skip
        k8s.policy.v1.PodDisruptionBudget(
            name,
            metadata=self._meta(COLLECTOR),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=_labels()),
            ),
            opts=k8s_opts,
        )
        self._network_policy(name, sources, k8s_opts)
        self.finish(
            {
                "endpoint": self.export.endpoint,
                "namespace": NAMESPACE,
                "samplingRatio": settings.sampling_ratio,
            }
        )

    def _meta(self, name: str) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=NAMESPACE, labels=_labels())

    def _namespace(self) -> k8s.core.v1.Namespace:
        return k8s.core.v1.Namespace(
            self.resource_name,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=NAMESPACE,
                labels={
                    "app.kubernetes.io/name": COLLECTOR,
                    # Pod Security Standards: reject any pod that is not hardened.
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                },
            ),
            opts=self.child_opts(),
        )

    def _deployment_spec(self, config_text: str) -> k8s.apps.v1.DeploymentSpecArgs:
        security = PodSecurity.hardened(COLLECTOR_UID)
        health = k8s.core.v1.HTTPGetActionArgs(path="/", port="health")
        return k8s.apps.v1.DeploymentSpecArgs(
            # No HPA: the count is the setting's, and an apply keeps it.
            replicas=self.settings.collector_replicas,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=_labels()),
            strategy=k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate",
                rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                    max_unavailable=0, max_surge=1
                ),
            ),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    labels=_labels(),
                    # The collector reads its file once: a changed config must roll the pods.
                    annotations={
                        "checksum/config": hashlib.sha256(config_text.encode()).hexdigest()
                    },
                ),
                spec=k8s.core.v1.PodSpecArgs(
                    service_account_name=COLLECTOR,
                    automount_service_account_token=False,
                    security_context=security.pod,
                    topology_spread_constraints=[
                        k8s.core.v1.TopologySpreadConstraintArgs(
                            max_skew=1,
                            topology_key="topology.kubernetes.io/zone",
                            when_unsatisfiable="ScheduleAnyway",
                            label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=_labels()),
                        )
                    ],
                    containers=[
                        k8s.core.v1.ContainerArgs(
                            name="collector",
                            image=self.settings.collector_image,
                            # The image's entrypoint is /awscollector.
                            args=[
                                f"--config={CONFIG_DIR}/{CONFIG_FILE}",
                                f"--feature-gates={XRAY_FEATURE_GATES}",
                            ],
                            ports=[
                                k8s.core.v1.ContainerPortArgs(
                                    name="otlp-http", container_port=OTLP_HTTP_PORT, protocol="TCP"
                                ),
                                k8s.core.v1.ContainerPortArgs(
                                    name="health", container_port=HEALTH_PORT, protocol="TCP"
                                ),
                            ],
                            env=[
                                k8s.core.v1.EnvVarArgs(
                                    name="MY_POD_IP",
                                    value_from=k8s.core.v1.EnvVarSourceArgs(
                                        field_ref=k8s.core.v1.ObjectFieldSelectorArgs(
                                            field_path="status.podIP"
                                        )
                                    ),
                                ),
                                *pod_identity_env(),
                            ],
                            readiness_probe=k8s.core.v1.ProbeArgs(
                                http_get=health, period_seconds=5, failure_threshold=2
                            ),
                            liveness_probe=k8s.core.v1.ProbeArgs(
                                http_get=health, period_seconds=10, failure_threshold=3
                            ),
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "100m", "memory": "256Mi"},
                                limits={"cpu": "1", "memory": "512Mi"},
                            ),
                            security_context=security.container,
                            volume_mounts=[
                                k8s.core.v1.VolumeMountArgs(
                                    name="config", mount_path=CONFIG_DIR, read_only=True
                                ),
                                pod_identity_mount(),
                            ],
                        )
                    ],
                    volumes=[
                        k8s.core.v1.VolumeArgs(
                            name="config",
                            config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=COLLECTOR),
                        ),
                        pod_identity_volume(),
                    ],
                ),
            ),
        )

    def _network_policy(
        self, name: str, sources: Sequence[str], opts: pulumi.ResourceOptions
    ) -> None:
        """In: the services' pods, on 4318. Out: DNS, HTTPS (X-Ray), the Pod Identity agent.

        The kubelet's probes need no rule: traffic from the pod's own node is always allowed
        (Kubernetes, "Network Policies")."""

        def port(number: int, protocol: str = "TCP") -> Any:
            return k8s.networking.v1.NetworkPolicyPortArgs(port=number, protocol=protocol)

        k8s.networking.v1.NetworkPolicy(
            name,
            metadata=self._meta(COLLECTOR),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=_labels()),
                policy_types=["Ingress", "Egress"],
                ingress=[
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=[
                            k8s.networking.v1.NetworkPolicyPeerArgs(
                                namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                                    match_labels={"kubernetes.io/metadata.name": service}
                                ),
                                pod_selector=k8s.meta.v1.LabelSelectorArgs(
                                    match_labels={"app": service}
                                ),
                            )
                            for service in sources
                        ],
                        ports=[port(OTLP_HTTP_PORT)],
                    )
                ],
                egress=aws_client_egress(),
            ),
            opts=opts,
        )
