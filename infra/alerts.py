"""Alerts: the encrypted SNS topic that every alarm of the stack notifies, and who it pages."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws_account import AwsAccount
from infra.component import PlatformComponent, StackContext
from infra.kms import ServiceGrant, create_key
from infra.settings import AlertsSettings, WebhookRetrySettings

# Chat webhooks (Slack, Teams) accept about one message a second; faster delivery gets throttled
# by the chat service and the alerts are lost after SNS's retries run out.
WEBHOOK_MAX_RECEIVES_PER_SECOND = 1


def webhook_delivery_policy(retry: WebhookRetrySettings) -> str:
    """SNS HTTP/S delivery policy: exponential backoff between the configured delays."""
    return json.dumps(
        {
            "healthyRetryPolicy": {
                "numRetries": retry.num_retries,
                "minDelayTarget": retry.min_delay_seconds,
                "maxDelayTarget": retry.max_delay_seconds,
                "numNoDelayRetries": 0,
                "numMinDelayRetries": 0,
                "numMaxDelayRetries": 0,
                "backoffFunction": "exponential",
            },
            "throttlePolicy": {"maxReceivesPerSecond": WEBHOOK_MAX_RECEIVES_PER_SECOND},
            "requestPolicy": {"headerContentType": "application/json"},
        },
        sort_keys=True,
    )


def topic_policy(topic_arn: str, account_id: str, partition: str, region: str) -> str:
    """Only CloudWatch alarms of this account, and principals of this account, may publish."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "AllowCloudWatchAlarmsOfThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {
                "ArnLike": {
                    "aws:SourceArn": f"arn:{partition}:cloudwatch:{region}:{account_id}:alarm:*"
                },
                "StringEquals": {"aws:SourceAccount": account_id},
            },
        },
        {
            "Sid": "AllowThisAccountToPublish",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
            "Action": "sns:Publish",
            "Resource": topic_arn,
        },
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


class Alerts(PlatformComponent):
    topic_arn: pulumi.Output[str]
    key_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: AlertsSettings,
        webhook_url: pulumi.Output[str] | None,
        account: AwsAccount,
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("alerts:Alerts", name, ctx, opts)

        # CloudWatch must be able to use the key: without this grant, alarm notifications to an
        # encrypted topic are dropped without any error.
        key = create_key(
            self,
            description=f"Alerts topic of {ctx.project}/{ctx.stack}",
            account=account,
            grants=[ServiceGrant("AllowCloudWatchAlarmsToUseKey", "cloudwatch.amazonaws.com")],
        )
        topic = aws.sns.Topic(
            f"{name}-topic",
            name=self.physical_name("topic", max_length=256),
            kms_master_key_id=key.arn,
            # SHA256 signatures on notifications, so subscribers can verify them.
            signature_version=2,
            tags=self.tags(),
            opts=self.stateful_opts(),
        )
        aws.sns.TopicPolicy(
            f"{name}-topic",
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, account.account_id, account.partition).apply(
                lambda args: topic_policy(args[0], args[1], args[2], account.region)
            ),
            opts=self.child_opts(),
        )
        for email in settings.emails:
            # Keyed by address, so adding or removing one address leaves the others alone.
            digest = hashlib.sha256(email.lower().encode()).hexdigest()[:10]
            aws.sns.TopicSubscription(
                f"{name}-email-{digest}",
                topic=topic.arn,
                protocol="email",
                endpoint=email,
                opts=self.child_opts(),
            )
        if webhook_url is not None:
            aws.sns.TopicSubscription(
                f"{name}-webhook",
                topic=topic.arn,
                protocol="https",
                endpoint=pulumi.Output.secret(webhook_url),
                delivery_policy=webhook_delivery_policy(settings.webhook_retry),
                opts=self.child_opts(additional_secret_outputs=["endpoint"]),
            )

        self.topic_arn = topic.arn
        self.key_arn = key.arn
        self.finish({"topicArn": self.topic_arn, "keyArn": self.key_arn})
