"""BlueGreenService: one service delivered blue/green (and canary) on Kubernetes.

Vocabulary from Argo Rollouts: the active Service selects `activeColor`, the preview Service the
other color, which runs `previewReplicaCount` pods. Each color has its own HPA (the active one
scales with load, the idle one holds its size) and no Deployment sets `spec.replicas`, so an
apply never resets what an HPA chose. Switching `activeColor` changes only the two Services'
selectors and the two HPAs' bounds; every object keeps its name, so nothing is replaced.

For the API-fronted service both Services are NodePorts, each bound by its own
TargetGroupBinding (AWS Load Balancer Controller, instance targets) to one of the load
balancer's two target groups: active -> stable, preview -> canary. The listener's weights
(infra/api_gateway.py) decide how much traffic each gets; a switch never re-registers targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from infra.component import PlatformComponent, StackContext
from infra.database_access import (
    ClusterIdentity,
    DatabaseAccess,
    DatabaseConnection,
    PodSecurity,
    aws_client_egress,
    database_user,
    pod_identity_env,
    pod_identity_mount,
    pod_identity_volume,
)
from infra.settings import PrometheusSettings, ServiceSettings
from infra.tracing import OTLP_PROTOCOL, SAMPLER, TraceExport

COLORS = ("blue", "green")
APP_UID = 10001  # fixed non-root UID, the same as the image's (app/Dockerfile)
PRE_STOP_SLEEP_SECONDS = 10  # load balancers and kube-proxy stop sending before the app drains
DRAIN_SECONDS = 25  # the app's own drain after SIGTERM
TERMINATION_GRACE_SECONDS = PRE_STOP_SLEEP_SECONDS + DRAIN_SECONDS + 10
METRICS_PATH = "/metrics"  # prometheus_client, on the app port (app/analytics_api.py)
# The HPA's default scale-down stabilization window (Kubernetes: "Horizontal Pod Autoscaling").
HPA_SCALE_DOWN_STABILIZATION_SECONDS = 300


@dataclass(frozen=True)
class LoadBalancerBinding:
    """The load balancer's two target groups and the NodePorts their Services listen on."""

    stable_target_group_arn: pulumi.Output[str]
    preview_target_group_arn: pulumi.Output[str]
    node_port: int
    preview_node_port: int


def _labels(settings: ServiceSettings, color: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": settings.name, "app": settings.name}
    return {**labels, "color": color} if color else labels


class BlueGreenService(PlatformComponent):
    active_service_name: str
    preview_service_name: str

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        default_image: pulumi.Output[str],
        database: DatabaseConnection,
        cluster: ClusterIdentity,
        ctx: StackContext,
        scrape: PrometheusSettings,
        traces: TraceExport,
        binding: LoadBalancerBinding | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("delivery:BlueGreenService", name, ctx, opts)
        self.settings = settings
        self.scrape = scrape
        self.traces = traces
        self.cluster = cluster
        namespace = k8s.core.v1.Namespace(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=settings.name,
                labels={
                    **_labels(settings),
                    # Pod Security Standards: reject any pod that is not hardened.
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                },
            ),
            opts=self.child_opts(),
        )
        self.namespace = settings.name
        # What other components' objects in this namespace wait for (infra/chaos.py).
        self.namespace_resource: pulumi.Resource = namespace
        k8s_opts = self.child_opts(depends_on=[namespace])

        account = k8s.core.v1.ServiceAccount(
            name,
            metadata=self._meta(settings.name),
            automount_service_account_token=False,
            opts=k8s_opts,
        )
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=self._meta(f"{settings.name}-config"),
            data=self._config_data(database),
            opts=k8s_opts,
        )
        # No password reaches a pod: the pods sign IAM tokens as their own database role, and
        # only the role's bootstrap Job reads the master secret, at run time.
        access = DatabaseAccess(
            f"{name}-database-access",
            settings.name,
            database,
            cluster,
            image=default_image,
            security=self._pod_security(),
            ctx=ctx,
            opts=self.child_opts(depends_on=[namespace]),
        )

        for color in COLORS:
            color_settings = getattr(settings, color)
            deployment = k8s.apps.v1.Deployment(
                f"{name}-{color}",
                metadata=self._meta(
                    f"{settings.name}-{color}",
                    {**_labels(settings, color), "version": color_settings.version},
                ),
                spec=self._deployment_spec(
                    color, color_settings.image or default_image, color_settings.version
                ),
                # The pods read the ConfigMap at start (envFrom) and turn ready only once they
                # can log in: a rollout started before their role and Pod Identity exist would
                # time out waiting.
                opts=self.child_opts(
                    depends_on=[
                        namespace,
                        account,
                        config_map,
                        access.bootstrap_job,
                        access.connect_association,
                    ]
                ),
            )
            self._autoscaler(name, color, deployment, k8s_opts)
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-{color}",
                metadata=self._meta(f"{settings.name}-{color}"),
                spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                    max_unavailable=1,
                    selector=k8s.meta.v1.LabelSelectorArgs(match_labels=_labels(settings, color)),
                ),
                opts=k8s_opts,
            )

        self.active_service_name = f"{settings.name}-active"
        self.preview_service_name = f"{settings.name}-preview"
        for role, color in (("active", settings.active_color), ("preview", settings.preview_color)):
            node_port = None
            if binding is not None:
                node_port = binding.node_port if role == "active" else binding.preview_node_port
            k8s.core.v1.Service(
                f"{name}-{role}",
                metadata=self._meta(f"{settings.name}-{role}"),
                spec=k8s.core.v1.ServiceSpecArgs(
                    type="NodePort" if node_port else "ClusterIP",
                    selector=_labels(settings, color),
                    ports=[
                        k8s.core.v1.ServicePortArgs(
                            name="http",
                            port=80,
                            target_port="http",
                            protocol="TCP",
                            node_port=node_port,
                        )
                    ],
                ),
                opts=k8s_opts,
            )

        self._network_policy(name, database, k8s_opts)

        if binding is not None:
            self._target_group_bindings(name, binding, k8s_opts)
        if scrape.service_monitor:
            self._service_monitor(name, k8s_opts)

        self.finish(
            {
                "namespace": self.namespace,
                "activeColor": settings.active_color,
                "activeService": self.active_service_name,
                "previewService": self.preview_service_name,
            }
        )

    def _meta(self, name: str, labels: dict[str, str] | None = None) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(
            name=name,
            namespace=self.settings.name,
            labels=labels or _labels(self.settings),
        )

    def _config_data(self, database: DatabaseConnection) -> pulumi.Output[dict[str, str]]:
        features = {
            f"FEATURE_{key.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in sorted(self.settings.features.items())
        }
        return pulumi.Output.all(database.host, database.port, database.name).apply(
            lambda db: {
                "APP_ENVIRONMENT": self.ctx.environment,
                "DB_HOST": str(db[0]),
                "DB_PORT": str(db[1]),
                "DB_NAME": str(db[2]),
                # The service's own role, logging in with an IAM token signed per connection.
                "DB_USER": database_user(self.settings.name),
                "DB_AUTH": "iam",
                "AWS_REGION": self.cluster.account.region,
                # rds.force_ssl=1 on the server (and IAM authentication needs TLS); the client
                # insists too.
                "DB_SSLMODE": "require",
                **features,
            }
        )

    def _deployment_spec(
        self, color: str, image: pulumi.Input[str], version: str
    ) -> k8s.apps.v1.DeploymentSpecArgs:
        settings = self.settings
        labels = {**_labels(settings, color), "version": version}
        probe = k8s.core.v1.HTTPGetActionArgs
        resources = settings.resources
        security = self._pod_security()
        return k8s.apps.v1.DeploymentSpecArgs(
            # No `replicas`: each color's HorizontalPodAutoscaler owns the count. A replicas
            # field here would reset the HPA's count on every apply (Kubernetes: "Migrating
            # Deployments and StatefulSets to horizontal autoscaling").
            # The selector is immutable: it names app and color, never the version.
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=_labels(settings, color)),
            strategy=k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate",
                rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                    max_unavailable=0, max_surge=1
                ),
            ),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    labels=labels, annotations=self._scrape_annotations()
                ),
                spec=k8s.core.v1.PodSpecArgs(
                    service_account_name=settings.name,
                    automount_service_account_token=False,
                    termination_grace_period_seconds=TERMINATION_GRACE_SECONDS,
                    security_context=security.pod,
                    topology_spread_constraints=[
                        k8s.core.v1.TopologySpreadConstraintArgs(
                            max_skew=1,
                            topology_key="topology.kubernetes.io/zone",
                            when_unsatisfiable="ScheduleAnyway",
                            label_selector=k8s.meta.v1.LabelSelectorArgs(
                                match_labels=_labels(settings, color)
                            ),
                        )
                    ],
                    containers=[
                        k8s.core.v1.ContainerArgs(
                            name="app",
                            image=image,
                            ports=[
                                k8s.core.v1.ContainerPortArgs(
                                    name="http", container_port=settings.port, protocol="TCP"
                                )
                            ],
                            env=[
                                k8s.core.v1.EnvVarArgs(name="APP_COLOR", value=color),
                                k8s.core.v1.EnvVarArgs(name="APP_VERSION", value=version),
                                k8s.core.v1.EnvVarArgs(name="PORT", value=str(settings.port)),
                                k8s.core.v1.EnvVarArgs(
                                    name="DRAIN_SECONDS", value=str(DRAIN_SECONDS)
                                ),
                                *self._trace_env(color, version),
                                *pod_identity_env(),
                            ],
                            env_from=[
                                k8s.core.v1.EnvFromSourceArgs(
                                    config_map_ref=k8s.core.v1.ConfigMapEnvSourceArgs(
                                        name=f"{settings.name}-config"
                                    )
                                ),
                            ],
                            readiness_probe=k8s.core.v1.ProbeArgs(
                                http_get=probe(path="/health/ready", port="http"),
                                period_seconds=5,
                                failure_threshold=2,
                            ),
                            liveness_probe=k8s.core.v1.ProbeArgs(
                                http_get=probe(path="/health/live", port="http"),
                                period_seconds=10,
                                failure_threshold=3,
                            ),
                            startup_probe=k8s.core.v1.ProbeArgs(
                                http_get=probe(path="/health/live", port="http"),
                                period_seconds=2,
                                failure_threshold=30,
                            ),
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={
                                    "cpu": resources.cpu_request,
                                    "memory": resources.memory_request,
                                },
                                limits={
                                    "cpu": resources.cpu_limit,
                                    "memory": resources.memory_limit,
                                },
                            ),
                            lifecycle=k8s.core.v1.LifecycleArgs(
                                pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                                    exec_=k8s.core.v1.ExecActionArgs(
                                        command=["sleep", str(PRE_STOP_SLEEP_SECONDS)]
                                    )
                                )
                            ),
                            security_context=security.container,
                            volume_mounts=[
                                k8s.core.v1.VolumeMountArgs(
                                    # a per-pod emptyDir, not a shared host /tmp
                                    name="tmp",
                                    mount_path="/tmp",  # noqa: S108 - a per-pod emptyDir  # nosec B108
                                ),
                                pod_identity_mount(),
                            ],
                        )
                    ],
                    # The root filesystem is read-only; the app may write only here.
                    volumes=[
                        k8s.core.v1.VolumeArgs(
                            name="tmp",
                            empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="64Mi"),
                        ),
                        pod_identity_volume(),
                    ],
                ),
            ),
        )

    def _trace_env(self, color: str, version: str) -> list[k8s.core.v1.EnvVarArgs]:
        """The OpenTelemetry SDK's own variables ("Environment Variable Specification",
        OTLP Exporter Configuration): spans over OTLP/HTTP to the cluster's collector, sampled
        by the tier's ratio. In the pod template, not the ConfigMap, so that a new ratio rolls
        the pods (envFrom is read only at start). APP_ENVIRONMENT comes from the ConfigMap.
        The color and version the collector indexes are set here too (OTEL_RESOURCE_ATTRIBUTES,
        values percent-encoded as the specification asks), so X-Ray can filter a canary's
        traces whatever the image's own code sets."""
        traces = self.traces
        attributes = ",".join(
            f"{key}={quote(value, safe='-._~')}"
            for key, value in (("deployment.color", color), ("service.version", version))
        )
        return [
            k8s.core.v1.EnvVarArgs(name=key, value=value)
            for key, value in (
                ("OTEL_SERVICE_NAME", self.settings.name),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", traces.endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOL),
                ("OTEL_TRACES_SAMPLER", SAMPLER),
                ("OTEL_TRACES_SAMPLER_ARG", str(traces.sampling_ratio)),
                ("OTEL_RESOURCE_ATTRIBUTES", attributes),
            )
        ]

    def _pod_security(self) -> PodSecurity:
        """Non-root, read-only, no privileges: the Deployments' pods and the bootstrap Job's."""
        return PodSecurity.hardened(APP_UID)

    def _scrape_annotations(self) -> dict[str, str] | None:
        """The `prometheus.io/*` convention, for Prometheus without the operator."""
        if self.scrape.service_monitor:
            return None  # the ServiceMonitor scrapes; annotations would scrape twice
        return {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(self.settings.port),
            "prometheus.io/path": METRICS_PATH,
        }

    def _service_monitor(self, name: str, opts: pulumi.ResourceOptions) -> None:
        """Prometheus operator: scrape both Services' pods; each series keeps its color."""
        k8s.apiextensions.CustomResource(
            f"{name}-metrics",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=self._meta(
                self.settings.name, {**_labels(self.settings), **self.scrape.service_monitor_labels}
            ),
            spec={
                "selector": {"matchLabels": _labels(self.settings)},
                "podTargetLabels": ["color", "version"],
                "endpoints": [
                    {
                        "port": "http",
                        "path": METRICS_PATH,
                        "scheme": "http",
                        "interval": f"{self.scrape.scrape_interval_seconds}s",
                    }
                ],
            },
            opts=opts,
        )

    def _network_policy(
        self, name: str, database: DatabaseConnection, opts: pulumi.ResourceOptions
    ) -> None:
        """In: the app port only. Out: DNS, PostgreSQL, HTTPS, the node's Pod Identity agent,
        the trace collector's OTLP port (its pods, in its namespace)."""

        def port(number: pulumi.Input[int], protocol: str = "TCP") -> Any:
            return k8s.networking.v1.NetworkPolicyPortArgs(port=number, protocol=protocol)

        k8s.networking.v1.NetworkPolicy(
            name,
            metadata=self._meta(self.settings.name),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=_labels(self.settings)),
                policy_types=["Ingress", "Egress"],
                ingress=[
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(ports=[port(self.settings.port)])
                ],
                egress=[
                    *aws_client_egress(),
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(ports=[port(database.port)]),
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                        to=[
                            k8s.networking.v1.NetworkPolicyPeerArgs(
                                namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                                    match_labels={
                                        "kubernetes.io/metadata.name": self.traces.namespace
                                    }
                                ),
                                pod_selector=k8s.meta.v1.LabelSelectorArgs(
                                    match_labels=dict(self.traces.pod_labels)
                                ),
                            )
                        ],
                        ports=[port(self.traces.port)],
                    ),
                ],
            ),
            opts=opts,
        )

    def _autoscaler(
        self,
        name: str,
        color: str,
        deployment: k8s.apps.v1.Deployment,
        opts: pulumi.ResourceOptions,
    ) -> None:
        """One HPA per color: the active one scales with load, the idle one holds its size.

        The idle color's HPA pins `previewReplicaCount` (min = max). Around a switch the
        release tool sets a floor (`<color>.minReplicas`) on both colors: the incoming one is
        scaled to the outgoing one's size before traffic moves, and neither HPA can scale down
        on a recommendation it computed before the move.
        """
        settings = self.settings
        floor = getattr(settings, color).min_replicas or 0
        if color == settings.active_color:
            low = max(settings.replicas, floor)
            high = max(settings.max_replicas, low)
        else:
            low = high = max(settings.preview_replica_count, floor)
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-{color}",
            metadata=self._meta(f"{settings.name}-{color}", _labels(settings, color)),
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1",
                    kind="Deployment",
                    name=deployment.metadata.name,
                ),
                min_replicas=low,
                max_replicas=high,
                # Stated, not defaulted: the release tool keeps a color's floor this long after
                # traffic moves to it, until the HPA's history holds real load.
                behavior=k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
                    scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(
                        stabilization_window_seconds=HPA_SCALE_DOWN_STABILIZATION_SECONDS
                    )
                ),
                metrics=[
                    k8s.autoscaling.v2.MetricSpecArgs(
                        type="Resource",
                        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                            name="cpu",
                            target=k8s.autoscaling.v2.MetricTargetArgs(
                                type="Utilization",
                                average_utilization=settings.target_cpu_percent,
                            ),
                        ),
                    )
                ],
            ),
            opts=opts,
        )

    def _target_group_bindings(
        self, name: str, binding: LoadBalancerBinding, opts: pulumi.ResourceOptions
    ) -> None:
        """One TargetGroupBinding per Service: stable group <- active, canary group <- preview.

        The controller keeps one target group's targets in step with one Service (AWS Load
        Balancer Controller, TargetGroupBinding); instance targets = the nodes on the NodePort.
        """
        for resource, binding_name, service, arn in (
            (f"{name}-target-group", self.settings.name, self.active_service_name,
             binding.stable_target_group_arn),
            (f"{name}-preview-target-group", f"{self.settings.name}-preview",
             self.preview_service_name, binding.preview_target_group_arn),
        ):  # fmt: skip
            k8s.apiextensions.CustomResource(
                resource,
                api_version="elbv2.k8s.aws/v1beta1",
                kind="TargetGroupBinding",
                metadata=self._meta(binding_name),
                spec={
                    "serviceRef": {"name": service, "port": 80},
                    "targetGroupARN": arn,
                    "targetType": "instance",
                },
                # The controller's webhook refuses a changed targetGroupARN ("TargetGroupBinding
                # update may not change these fields"): a new target group replaces the binding,
                # deleted first because the new one has the same name.
                opts=pulumi.ResourceOptions.merge(
                    opts,
                    pulumi.ResourceOptions(
                        replace_on_changes=["spec.targetGroupARN"], delete_before_replace=True
                    ),
                ),
            )
