"""The explicit providers. Every resource uses these; default providers are disabled."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.settings import Settings


@dataclass(frozen=True)
class Providers:
    aws: aws.Provider
    kubernetes: k8s.Provider

    @property
    def all(self) -> list[pulumi.ProviderResource]:
        return [self.aws, self.kubernetes]


def create_providers(settings: Settings) -> Providers:
    # Logical names stay fixed: a provider whose URN changes makes every resource it manages
    # look new to the engine.
    aws_config = settings.config.aws
    aws_provider = aws.Provider(
        "aws",
        region=aws_config.region,
        allowed_account_ids=list(aws_config.allowed_account_ids) or None,
        assume_roles=(
            [
                aws.ProviderAssumeRoleArgs(
                    role_arn=aws_config.assume_role_arn,
                    session_name=f"pulumi-{settings.project}-{settings.stack}"[:64],
                )
            ]
            if aws_config.assume_role_arn
            else None
        ),
    )
    k8s_config = settings.config.kubernetes
    kubernetes_provider = k8s.Provider(
        "kubernetes",
        kubeconfig=settings.secrets.kubeconfig,
        context=k8s_config.context,
        cluster_identifier=(
            k8s_config.cluster_name or k8s_config.context or f"{settings.project}-{settings.stack}"
        ),
        enable_server_side_apply=True,
    )
    return Providers(aws=aws_provider, kubernetes=kubernetes_provider)
