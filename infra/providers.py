"""The explicit providers. Every resource uses these; default providers are disabled."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.settings import AwsSettings, Settings


@dataclass(frozen=True)
class Providers:
    aws: aws.Provider
    kubernetes: k8s.Provider
    # The disaster-recovery region, when database backups are replicated there.
    aws_dr: aws.Provider | None
    # Only when the stack builds its image.
    docker: docker.Provider | None
    # Local random values (the final snapshot's suffix); no credentials, no cloud calls.
    random: random.Provider

    @property
    def inherited(self) -> list[pulumi.ProviderResource]:
        """The providers every component inherits, one per package."""
        found: list[pulumi.ProviderResource | None] = [
            self.aws,
            self.kubernetes,
            self.docker,
            self.random,
        ]
        return [p for p in found if p is not None]


def _aws_provider(name: str, region: str, config: AwsSettings) -> aws.Provider:
    # The credentials are the caller's (read-only for preview and drift, the deploy role for up):
    # assuming a role here would make every operation, read-only ones too, run as that role.
    return aws.Provider(
        name,
        region=region,
        allowed_account_ids=list(config.allowed_account_ids) or None,
    )


def eks_kubeconfig(name: str, region: str, aws_provider: aws.Provider) -> pulumi.Output[str]:
    """A kubeconfig for the EKS cluster `name`, as `aws eks update-kubeconfig` writes it.

    The endpoint and CA come from the cluster itself; the token from an exec of
    `aws eks get-token` under the caller's own AWS credentials (the workflow's OIDC role of the
    operation), so no kubeconfig is ever handed around.
    """
    cluster = aws.eks.get_cluster_output(
        name=name, opts=pulumi.InvokeOutputOptions(provider=aws_provider)
    )
    args = ["--region", region, "eks", "get-token", "--cluster-name", name, "--output", "json"]

    def render(endpoint: str, ca: str, arn: str) -> str:
        return json.dumps({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": arn, "cluster": {
                "server": endpoint, "certificate-authority-data": ca}}],
            "contexts": [{"name": arn, "context": {"cluster": arn, "user": arn}}],
            "current-context": arn,
            "users": [{"name": arn, "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "aws",
                "args": args,
                "interactiveMode": "Never",
            }}}],
        }, sort_keys=True)  # fmt: skip

    return pulumi.Output.all(
        cluster.endpoint, cluster.certificate_authorities[0].data, cluster.arn
    ).apply(lambda parts: render(*parts))


def _kubernetes_provider(settings: Settings, aws_provider: aws.Provider) -> k8s.Provider:
    # Precedence: the secret kubeconfig, then a context of the ambient kubeconfig, then the EKS
    # cluster itself. The identifier never changes with credentials, so new credentials update
    # the provider instead of replacing every Kubernetes object it manages.
    k8s_config, aws_config = settings.config.kubernetes, settings.config.aws
    kubeconfig: pulumi.Input[str] | None = settings.secrets.kubeconfig
    if kubeconfig is None and k8s_config.context is None and k8s_config.cluster_name:
        kubeconfig = eks_kubeconfig(k8s_config.cluster_name, aws_config.region, aws_provider)
    return k8s.Provider(
        "kubernetes",
        kubeconfig=kubeconfig,
        context=k8s_config.context,
        cluster_identifier=(
            k8s_config.cluster_name or k8s_config.context or f"{settings.project}-{settings.stack}"
        ),
        enable_server_side_apply=True,
    )


def create_providers(settings: Settings) -> Providers:
    # Logical names stay fixed: a provider whose URN changes makes every resource it manages
    # look new to the engine.
    config = settings.config
    dr = config.database.disaster_recovery
    aws_provider = _aws_provider("aws", config.aws.region, config.aws)
    return Providers(
        aws=aws_provider,
        aws_dr=_aws_provider("aws-dr", dr.region, config.aws) if dr.enabled else None,
        kubernetes=_kubernetes_provider(settings, aws_provider),
        docker=docker.Provider("docker") if config.image.build else None,
        random=random.Provider("random"),
    )
