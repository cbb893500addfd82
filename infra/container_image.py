"""ContainerImage: the stack's ECR repository, and the analytics API image that runs from it.

With `image.build` on, pulumi-docker builds the image from `image.context` and pushes it with
credentials from ECR's authorization token. Otherwise the given reference is used. Either way
the exported reference carries a digest where one is known, so Deployments can pin it.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from infra.component import PlatformComponent, StackContext
from infra.settings import ImageSettings


def lifecycle_policy(settings: ImageSettings) -> str:
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": (
                        f"Expire untagged images after {settings.untagged_expiry_days} days"
                    ),
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": settings.untagged_expiry_days,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"Keep the last {settings.keep_tagged_images} tagged images",
                    "selection": {
                        "tagStatus": "tagged",
                        "tagPatternList": ["*"],
                        "countType": "imageCountMoreThan",
                        "countNumber": settings.keep_tagged_images,
                    },
                    "action": {"type": "expire"},
                },
            ]
        },
        sort_keys=True,
    )


class ContainerImage(PlatformComponent):
    repository_url: pulumi.Output[str]
    reference: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: ImageSettings,
        key_arn: pulumi.Output[str],
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("image:ContainerImage", name, ctx, opts)
        repository = aws.ecr.Repository(
            name,
            name=self.physical_name(),
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(
                    encryption_type="KMS", kms_key=key_arn
                )
            ],
            force_delete=False,
            tags=self.tags(),
            opts=self.stateful_opts(),
        )
        aws.ecr.LifecyclePolicy(
            name,
            repository=repository.name,
            policy=lifecycle_policy(settings),
            opts=self.child_opts(),
        )

        if settings.build:
            token = aws.ecr.get_authorization_token_output(
                registry_id=repository.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
            )
            image = docker.Image(
                name,
                image_name=pulumi.Output.concat(repository.repository_url, ":", settings.tag or ""),
                build=docker.DockerBuildArgs(
                    context=settings.context,
                    dockerfile=f"{settings.context}/{settings.dockerfile}",
                    platform=settings.platform,
                ),
                registry=docker.RegistryArgs(
                    server=repository.repository_url,
                    username=token.user_name,
                    password=pulumi.Output.secret(token.password),
                ),
                opts=self.child_opts(),
            )
            # repo_digest is `<repository>@sha256:<digest>`: exactly what was pushed.
            self.reference = image.repo_digest
        else:
            self.reference = pulumi.Output.from_input(settings.reference or "")

        self.repository_url = repository.repository_url
        self.finish({"repositoryUrl": self.repository_url, "reference": self.reference})
