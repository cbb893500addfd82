"""What every component shares: parent=self, physical names, common tags, register_outputs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.settings import Settings

# Component type tokens are `analytics-platform:<module>:<Name>`. Changing one changes the URN
# of every child, so a rename needs an alias.
TYPE_PACKAGE = "analytics-platform"


@dataclass(frozen=True)
class StackContext:
    """Facts about the stack that components need and may not read from config themselves."""

    project: str
    stack: str
    environment: str
    tags: Mapping[str, str]
    # pulumi `protect` on stateful resources (keys, topics, the database).
    protect: bool
    kms_deletion_window_days: int
    log_retention_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> StackContext:
        config = settings.config
        return cls(
            project=settings.project,
            stack=settings.stack,
            environment=config.environment,
            tags={
                "Environment": config.environment,
                "Project": settings.project,
                "Stack": settings.stack,
                "Owner": config.tags.owner,
                "CostCenter": config.tags.cost_center,
                "ManagedBy": "pulumi",
            },
            protect=config.protect_stateful_resources,
            kms_deletion_window_days=config.kms_deletion_window_days,
            log_retention_days=config.log_retention_days,
        )

    def physical_name(self, name: str, max_length: int = 63) -> str:
        """The name AWS sees: `<project>-<stack>-<name>`, lowercase.

        Stable for a given stack and name, so that it never changes behind a resource's back.
        Names longer than `max_length` keep their start and end in a short hash, so that two
        long names never collide after truncation.
        """
        full = f"{self.project}-{self.stack}-{name}".lower()
        if len(full) <= max_length:
            return full
        digest = hashlib.sha256(full.encode()).hexdigest()[:8]
        return f"{full[: max_length - 9].rstrip('-')}-{digest}"


class PlatformComponent(pulumi.ComponentResource):
    """Base of every component: type token, context, and the options its children get."""

    def __init__(
        self,
        type_name: str,
        name: str,
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(f"{TYPE_PACKAGE}:{type_name}", name, None, opts)
        self.resource_name = name
        self.ctx = ctx

    def child_opts(self, **options: Any) -> pulumi.ResourceOptions:
        """Options for a child resource: always parented here, providers inherited."""
        return pulumi.ResourceOptions(parent=self, **options)

    def stateful_opts(self, **options: Any) -> pulumi.ResourceOptions:
        """Options for a resource holding data or keys: `protect` where the tier asks for it."""
        return self.child_opts(protect=self.ctx.protect, **options)

    def tags(self, **extra: str) -> dict[str, str]:
        """The common tags, plus `Component` and anything resource-specific."""
        return {**self.ctx.tags, "Component": self.resource_name, **extra}

    def log_group(
        self, name: str, log_group_name: str, kms_key_arn: pulumi.Input[str]
    ) -> aws.cloudwatch.LogGroup:
        """A log group made before anything writes to it, so AWS never makes an unmanaged one
        (which would never expire and be unencrypted): the tier's retention, our KMS key."""
        return aws.cloudwatch.LogGroup(
            name,
            name=log_group_name,
            retention_in_days=self.ctx.log_retention_days,
            kms_key_id=kms_key_arn,
            tags=self.tags(),
            opts=self.stateful_opts(),
        )

    def physical_name(self, suffix: str = "", max_length: int = 63) -> str:
        name = f"{self.resource_name}-{suffix}" if suffix else self.resource_name
        return self.ctx.physical_name(name, max_length)

    def finish(self, outputs: Mapping[str, pulumi.Input[Any]]) -> None:
        self.register_outputs(dict(outputs))
