"""ContainerImage: the stack's ECR repository, and the analytics API image that runs from it.

With `image.build` on, pulumi-docker builds the image from `image.context` (a folder of the
project root, whatever the program's working directory) and pushes it, tagged with the commit
it is built from, with credentials from ECR's authorization token. Otherwise the given reference
is used. Either way the exported reference carries a digest where one is known, so Deployments
can pin it. Staging and prod run promoted images copied into their own repository by digest
(README: Image promotion); `image.pullAccountIds` lets those accounts copy from this one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from infra.component import PlatformComponent, StackContext
from infra.settings import ImageSettings


def lifecycle_policy(settings: ImageSettings) -> str:
    """Untagged layers expire; tagged images expire by count only where no stack runs them by
    digest (`keepTaggedImages` null: never). ECR expires whatever still runs an image."""
    rules: list[dict[str, Any]] = [
        {
            "rulePriority": 1,
            "description": f"Expire untagged images after {settings.untagged_expiry_days} days",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": settings.untagged_expiry_days,
            },
            "action": {"type": "expire"},
        }
    ]
    if settings.keep_tagged_images is not None:
        rules.append(
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
            }
        )
    return json.dumps({"rules": rules}, sort_keys=True)


def pull_policy(account_ids: Sequence[str], partition: str) -> str:
    """Lets the listed accounts pull (only pull) images, for their promote step's copy."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PromoteStepsOfOtherAccountsPull",
                    "Effect": "Allow",
                    "Principal": {
                        "AWS": [f"arn:{partition}:iam::{a}:root" for a in sorted(account_ids)]
                    },
                    "Action": [
                        "ecr:BatchCheckLayerAvailability",
                        "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer",
                    ],
                }
            ],
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
        build_tag: str | None = None,
        partition: pulumi.Input[str] = "aws",
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
            # ECR refuses to delete a repository that holds images unless forced: a stack that
            # rotates its images (dev, throwaway copies) can be destroyed; one that keeps its
            # promoted releases forever (staging, prod) never loses them to a destroy.
            force_delete=settings.keep_tagged_images is not None,
            tags=self.tags(),
            opts=self.stateful_opts(),
        )
        aws.ecr.LifecyclePolicy(
            name,
            repository=repository.name,
            policy=lifecycle_policy(settings),
            opts=self.child_opts(),
        )

        if settings.pull_account_ids:
            aws.ecr.RepositoryPolicy(
                name,
                repository=repository.name,
                policy=pulumi.Output.from_input(partition).apply(
                    lambda p: pull_policy(settings.pull_account_ids, p)
                ),
                opts=self.child_opts(),
            )
        if settings.build:
            self.reference = self._build(name, settings, repository, build_tag or "")
        else:
            self.reference = pulumi.Output.from_input(settings.reference or "")

        self.repository_url = repository.repository_url
        self.finish({"repositoryUrl": self.repository_url, "reference": self.reference})

    def _build(
        self, name: str, settings: ImageSettings, repository: aws.ecr.Repository, tag: str
    ) -> pulumi.Output[str]:
        # The host runs the program, and its providers, from the `main` folder (infra/): build
        # paths start at the project root (pulumi.get_root_directory()), and are handed over
        # relative to the working directory, so that state does not change from one machine's
        # checkout path to another's.
        context = Path(os.path.relpath(Path(pulumi.get_root_directory()) / settings.context))
        token = aws.ecr.get_authorization_token_output(
            registry_id=repository.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        image = docker.Image(
            name,
            image_name=pulumi.Output.concat(repository.repository_url, ":", tag),
            build=docker.DockerBuildArgs(
                context=str(context),
                dockerfile=str(context / settings.dockerfile),
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
        return image.repo_digest
