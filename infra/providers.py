"""The explicit providers. Every resource uses these; default providers are disabled."""

from __future__ import annotations

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


def _aws_provider(name: str, region: str, config: AwsSettings, settings: Settings) -> aws.Provider:
    return aws.Provider(
        name,
        region=region,
        allowed_account_ids=list(config.allowed_account_ids) or None,
        assume_roles=(
            [
                aws.ProviderAssumeRoleArgs(
                    role_arn=config.assume_role_arn,
                    session_name=f"pulumi-{settings.project}-{settings.stack}"[:64],
                )
            ]
            if config.assume_role_arn
            else None
        ),
    )


def create_providers(settings: Settings) -> Providers:
    # Logical names stay fixed: a provider whose URN changes makes every resource it manages
    # look new to the engine.
    config = settings.config
    dr = config.database.disaster_recovery
    k8s_config = config.kubernetes
    return Providers(
        aws=_aws_provider("aws", config.aws.region, config.aws, settings),
        aws_dr=_aws_provider("aws-dr", dr.region, config.aws, settings) if dr.enabled else None,
        kubernetes=k8s.Provider(
            "kubernetes",
            kubeconfig=settings.secrets.kubeconfig,
            context=k8s_config.context,
            cluster_identifier=(
                k8s_config.cluster_name
                or k8s_config.context
                or f"{settings.project}-{settings.stack}"
            ),
            enable_server_side_apply=True,
        ),
        docker=docker.Provider("docker") if config.image.build else None,
        random=random.Provider("random"),
    )
