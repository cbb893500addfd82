"""Customer-managed KMS keys: rotation on, an alias, and a key policy that names its users."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws_account import AwsAccount
from infra.component import PlatformComponent

# (partition, account id, region) -> an IAM condition block
ConditionFor = Callable[[str, str, str], dict[str, Any]]


@dataclass(frozen=True)
class ServiceGrant:
    """Lets an AWS service principal use the key, e.g. CloudWatch publishing to an SNS topic."""

    sid: str
    service: str
    actions: Sequence[str] = ("kms:Decrypt", "kms:GenerateDataKey*")
    condition: ConditionFor | None = None


def key_policy(account: AwsAccount, grants: Sequence[ServiceGrant]) -> pulumi.Output[str]:
    def build(args: list[str]) -> str:
        partition, account_id = args
        statements: list[dict[str, Any]] = [
            # Without this the key is unmanageable, and IAM policies in the account cannot grant it.
            {
                "Sid": "EnableAccountAdministration",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ]
        for grant in grants:
            statement: dict[str, Any] = {
                "Sid": grant.sid,
                "Effect": "Allow",
                "Principal": {"Service": grant.service},
                "Action": list(grant.actions),
                "Resource": "*",
            }
            if grant.condition is not None:
                statement["Condition"] = grant.condition(partition, account_id, account.region)
            statements.append(statement)
        return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)

    return pulumi.Output.all(account.partition, account.account_id).apply(build)


def create_key(
    owner: PlatformComponent,
    description: str,
    account: AwsAccount,
    grants: Sequence[ServiceGrant] = (),
    suffix: str = "key",
    provider: pulumi.ProviderResource | None = None,
    name: str | None = None,
) -> aws.kms.Key:
    """A rotating key owned by `owner`, protected where the tier says, with an alias.

    Its logical name is `<name>-<suffix>`, `name` defaulting to the owner's.
    """
    base = f"{name or owner.resource_name}-{suffix}"
    key = aws.kms.Key(
        base,
        description=description,
        enable_key_rotation=True,
        deletion_window_in_days=owner.ctx.kms_deletion_window_days,
        policy=key_policy(account, grants),
        tags=owner.tags(),
        opts=owner.stateful_opts(provider=provider),
    )
    aws.kms.Alias(
        base,
        name=f"alias/{owner.ctx.physical_name(base, max_length=250)}",
        target_key_id=key.key_id,
        opts=owner.child_opts(provider=provider),
    )
    return key
