"""SNS, KMS and CloudWatch Logs: encrypted, rotating, kept as long as the tier requires."""

from __future__ import annotations

from collections.abc import Iterable

from pulumi_policy import ResourceValidationArgs

from infra.policies._rules import environment, resource_rule, tier

CATEGORY = "sns-kms-logs"
TOPIC = "aws:sns/topic:Topic"
KEY = "aws:kms/key:Key"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"


def _topic_encrypted(args: ResourceValidationArgs) -> Iterable[str]:
    if not args.props.get("kmsMasterKeyId"):
        yield "kmsMasterKeyId is not set: alerts would be stored unencrypted"


def _rotation(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("enableKeyRotation") is not True:
        yield "enableKeyRotation is not true"


def _retention(args: ResourceValidationArgs) -> Iterable[str]:
    days = args.props.get("retentionInDays")
    floor = tier(args.props).policy.min_log_retention_days
    if not days:
        yield "retentionInDays is not set: the logs would be kept forever"
    elif days < floor:
        yield (
            f"retentionInDays is {days:g}; a {environment(args.props)} stack keeps logs at "
            f"least {floor} days"
        )


def _logs_encrypted(args: ResourceValidationArgs) -> Iterable[str]:
    if not args.props.get("kmsKeyId"):
        yield "kmsKeyId is not set: the log group is not encrypted with our key"


POLICIES = [
    resource_rule("sns-topic-encrypted", CATEGORY, "SNS topics are encrypted with a KMS key.",
                  [TOPIC], _topic_encrypted, "Set kms_master_key_id to the alerts key, whose "
                  "policy lets CloudWatch use it (infra/alerts.py)."),
    resource_rule("kms-key-rotation", CATEGORY, "Customer-managed KMS keys rotate yearly.",
                  [KEY], _rotation, "Set enable_key_rotation=True (infra/kms.py create_key)."),
    resource_rule("log-retention", CATEGORY,
                  "Log groups have a retention, at least the tier's minimum.", [LOG_GROUP],
                  _retention, "Create log groups with PlatformComponent.log_group, which sets "
                  "logRetentionDays; raise it to the tier's floor."),
    resource_rule("log-group-encrypted", CATEGORY,
                  "Log groups are encrypted with the platform KMS key.", [LOG_GROUP],
                  _logs_encrypted, "Pass the platform key's ARN as kms_key_id; its policy must "
                  "allow logs.<region>.amazonaws.com."),
]  # fmt: skip
