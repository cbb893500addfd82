"""Customer-managed KMS keys: rotation on, an alias, and a key policy that names its users."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws_account import AwsAccount
from infra.component import PlatformComponent


@dataclass(frozen=True)
class ServiceGrant:
    """Lets an AWS service principal use the key, e.g. CloudWatch publishing to an SNS topic."""

    sid: str
    service: str
    actions: Sequence[str] = ("kms:Decrypt", "kms:GenerateDataKey*")


def key_policy(account: AwsAccount, grants: Sequence[ServiceGrant]) -> pulumi.Output[str]:
    def build(root: str) -> str:
        statements: list[dict[str, Any]] = [
            # Without this the key is unmanageable, and IAM policies in the account cannot grant it.
            {
                "Sid": "EnableAccountAdministration",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": "kms:*",
                "Resource": "*",
            }
        ]
        statements += [
            {
                "Sid": grant.sid,
                "Effect": "Allow",
                "Principal": {"Service": grant.service},
                "Action": list(grant.actions),
                "Resource": "*",
            }
            for grant in grants
        ]
        return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)

    return account.root_principal().apply(build)


def create_key(
    owner: PlatformComponent,
    description: str,
    account: AwsAccount,
    grants: Sequence[ServiceGrant],
) -> aws.kms.Key:
    """A protected-where-the-tier-says, rotating key owned by `owner`, with an alias."""
    key = aws.kms.Key(
        f"{owner.resource_name}-key",
        description=description,
        enable_key_rotation=True,
        deletion_window_in_days=owner.ctx.kms_deletion_window_days,
        policy=key_policy(account, grants),
        tags=owner.tags(),
        opts=owner.stateful_opts(),
    )
    aws.kms.Alias(
        f"{owner.resource_name}-key",
        name=f"alias/{owner.physical_name('key', max_length=250)}",
        target_key_id=key.key_id,
        opts=owner.child_opts(),
    )
    return key
