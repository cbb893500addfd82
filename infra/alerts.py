"""Alerts: the encrypted SNS topic that every alarm of the stack notifies, and who it pages.

Who can receive it: email addresses; Slack and Teams channels through AWS Chatbot (the only
supported chat path: incoming webhooks cannot confirm an SNS subscription, and would post the raw
envelope); and one incident tool whose SNS integration confirms its own HTTPS subscription
(PagerDuty or Opsgenie).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws_account import AwsAccount
from infra.component import PlatformComponent, StackContext
from infra.iam import service_trust_policy
from infra.kms import ServiceGrant, create_key
from infra.settings import AlertsSettings, DeliveryRetrySettings

# Incident tools accept bursts; one notification a second still keeps an alarm storm from
# being throttled away after SNS's retries run out.
PAGING_MAX_RECEIVES_PER_SECOND = 1
# Chatbot's channel members can do no more than read CloudWatch, whatever the role allows.
CHATBOT_GUARDRAIL_POLICY = "CloudWatchReadOnlyAccess"
# What Chatbot itself reads to render an alarm notification (AWS's "notifications only" set).
CHATBOT_NOTIFICATION_ACTIONS = ("cloudwatch:Describe*", "cloudwatch:Get*", "cloudwatch:List*")


def paging_delivery_policy(retry: DeliveryRetrySettings) -> str:
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
            "throttlePolicy": {"maxReceivesPerSecond": PAGING_MAX_RECEIVES_PER_SECOND},
            "requestPolicy": {"headerContentType": "application/json"},
        },
        sort_keys=True,
    )


def chatbot_trust_policy() -> str:
    return service_trust_policy("chatbot.amazonaws.com")


def topic_policy(topic_arn: str, account_id: str, partition: str, region: str) -> str:
    """Only CloudWatch alarms, RDS event subscriptions, budgets and cost anomaly monitors of this
    account, and principals of this account, may publish."""
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
            "Sid": "AllowRdsEventSubscriptionsOfThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": "events.rds.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {
                "ArnLike": {"aws:SourceArn": f"arn:{partition}:rds:{region}:{account_id}:es:*"},
                "StringEquals": {"aws:SourceAccount": account_id},
            },
        },
        {
            # AWS Budgets refuses a notification to a topic it may not publish to
            # ("Creating an Amazon SNS topic for budget notifications", AWS Cost Management).
            "Sid": "AllowBudgetsOfThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": "budgets.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {
                "ArnLike": {"aws:SourceArn": f"arn:{partition}:budgets::{account_id}:*"},
                "StringEquals": {"aws:SourceAccount": account_id},
            },
        },
        {
            # "Creating an Amazon SNS topic for anomaly notifications", AWS Cost Management.
            "Sid": "AllowCostAnomalyDetectionOfThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": "costalerts.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        },
        {
            # Operators' test notifications and this account's services. The conditions keep
            # it to principals of this account, over TLS (an encrypted topic requires it too).
            "Sid": "AllowThisAccountToPublish",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {
                "StringEquals": {"aws:PrincipalAccount": account_id},
                "Bool": {"aws:SecureTransport": "true"},
            },
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


def _same_account(partition: str, account_id: str, region: str) -> dict[str, Any]:
    return {"StringEquals": {"aws:SourceAccount": account_id}}


def _budgets_condition(partition: str, account_id: str, region: str) -> dict[str, Any]:
    # Budgets are global: their ARNs have no region.
    return {
        **_same_account(partition, account_id, region),
        "ArnLike": {"aws:SourceArn": f"arn:{partition}:budgets::{account_id}:*"},
    }


class Alerts(PlatformComponent):
    topic_arn: pulumi.Output[str]
    key_arn: pulumi.Output[str]
    # What a publisher that checks its permission on creation (AWS Budgets) must wait for.
    topic_policy: aws.sns.TopicPolicy

    def __init__(
        self,
        name: str,
        settings: AlertsSettings,
        paging_endpoint: pulumi.Output[str] | None,
        account: AwsAccount,
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("alerts:Alerts", name, ctx, opts)

        # The publishers (CloudWatch alarms, RDS events) must be able to use the key: without a
        # grant, their notifications to an encrypted topic are dropped without any error.
        # Subscribers (Chatbot, email, HTTPS) need none: SNS decrypts before it delivers.
        key = create_key(
            self,
            description=f"Alerts topic of {ctx.project}/{ctx.stack}",
            account=account,
            grants=[
                ServiceGrant("AllowCloudWatchAlarmsToUseKey", "cloudwatch.amazonaws.com"),
                ServiceGrant("AllowRdsEventsToUseKey", "events.rds.amazonaws.com"),
                ServiceGrant(
                    "AllowBudgetsToUseKey", "budgets.amazonaws.com", condition=_budgets_condition
                ),
                ServiceGrant(
                    "AllowCostAnomalyDetectionToUseKey",
                    "costalerts.amazonaws.com",
                    condition=_same_account,
                ),
            ],
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
        self.topic_policy = aws.sns.TopicPolicy(
            f"{name}-topic",
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, account.account_id, account.partition).apply(
                lambda args: topic_policy(args[0], args[1], args[2], account.region)
            ),
            opts=self.child_opts(),
        )
        self._emails(settings, topic)
        if settings.chat_channels:
            self._chatbot(settings, topic, account)
        if settings.paging is not None and paging_endpoint is not None:
            aws.sns.TopicSubscription(
                f"{name}-paging-{settings.paging.service}",
                topic=topic.arn,
                protocol="https",
                endpoint=pulumi.Output.secret(paging_endpoint),
                # PagerDuty and Opsgenie confirm the subscription themselves; Pulumi waits for it.
                endpoint_auto_confirms=True,
                delivery_policy=paging_delivery_policy(settings.paging.delivery_retry),
                opts=self.child_opts(additional_secret_outputs=["endpoint"]),
            )

        self.topic_arn = topic.arn
        self.key_arn = key.arn
        self.finish({"topicArn": self.topic_arn, "keyArn": self.key_arn})

    def _emails(self, settings: AlertsSettings, topic: aws.sns.Topic) -> None:
        for email in settings.emails:
            # Keyed by address, so adding or removing one address leaves the others alone.
            digest = hashlib.sha256(email.lower().encode()).hexdigest()[:10]
            aws.sns.TopicSubscription(
                f"{self.resource_name}-email-{digest}",
                topic=topic.arn,
                protocol="email",
                endpoint=email,
                opts=self.child_opts(),
            )

    def _chatbot(self, settings: AlertsSettings, topic: aws.sns.Topic, account: AwsAccount) -> None:
        """Slack and Teams channels through AWS Chatbot, which subscribes itself to the topic."""
        role = aws.iam.Role(
            f"{self.resource_name}-chatbot",
            name=self.physical_name("chatbot", max_length=64),
            description=f"AWS Chatbot: renders the alarms of {self.ctx.project}/{self.ctx.stack}",
            assume_role_policy=chatbot_trust_policy(),
            tags=self.tags(),
            opts=self.child_opts(),
        )
        aws.iam.RolePolicy(
            f"{self.resource_name}-chatbot",
            role=role.id,
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": list(CHATBOT_NOTIFICATION_ACTIONS),
                            "Resource": "*",
                        }
                    ],
                },
                sort_keys=True,
            ),
            opts=self.child_opts(),
        )
        guardrail = pulumi.Output.format(
            "arn:{0}:iam::aws:policy/{1}", account.partition, CHATBOT_GUARDRAIL_POLICY
        )
        common: dict[str, Any] = {
            "iam_role_arn": role.arn,
            "guardrail_policy_arns": [guardrail],
            "sns_topic_arns": [topic.arn],
            "logging_level": "ERROR",
            "tags": self.tags(),
        }
        for slack in settings.chatbot.slack:
            aws.chatbot.SlackChannelConfiguration(
                f"{self.resource_name}-slack-{slack.name}",
                configuration_name=self.physical_name(f"slack-{slack.name}", max_length=128),
                slack_team_id=slack.workspace_id,
                slack_channel_id=slack.channel_id,
                **common,
                opts=self.child_opts(),
            )
        for teams in settings.chatbot.teams:
            aws.chatbot.TeamsChannelConfiguration(
                f"{self.resource_name}-teams-{teams.name}",
                configuration_name=self.physical_name(f"teams-{teams.name}", max_length=128),
                team_id=teams.team_id,
                tenant_id=teams.tenant_id,
                channel_id=teams.channel_id,
                **common,
                opts=self.child_opts(),
            )
