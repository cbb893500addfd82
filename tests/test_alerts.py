"""Alerts: an encrypted SNS topic that CloudWatch can publish to, and who it pages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.mock_engine import FAKE_ACCOUNT_ID, ProgramRun, is_secret, reveal
from tests.conftest import STACKS, RunStack, policy_doc, stack_account

TOPIC = "aws:sns/topic:Topic"
KEY = "aws:kms/key:Key"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"


def _statements(text: str) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in policy_doc(text)["Statement"]}


def _subscriptions(run: ProgramRun, protocol: str) -> list[Any]:
    return [r for r in run.of_type(SUBSCRIPTION) if r.inputs["protocol"] == protocol]


@pytest.mark.parametrize("stack", STACKS)
def test_alerts_key_rotates_and_lets_cloudwatch_use_it(run_stack: RunStack, stack: str) -> None:
    key = run_stack(stack).one(KEY, "alerts-key")
    assert key.inputs["enableKeyRotation"] is True
    statements = _statements(key.inputs["policy"])
    admin = statements["EnableAccountAdministration"]
    assert admin["Principal"] == {"AWS": f"arn:aws:iam::{stack_account(stack)}:root"}
    cloudwatch = statements["AllowCloudWatchAlarmsToUseKey"]
    assert cloudwatch["Effect"] == "Allow"
    assert cloudwatch["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}


@pytest.mark.parametrize(("stack", "days"), [("dev", 7), ("staging", 14), ("prod", 30)])
def test_key_deletion_window_follows_the_tier(run_stack: RunStack, stack: str, days: int) -> None:
    assert run_stack(stack).one(KEY, "alerts-key").inputs["deletionWindowInDays"] == days


def test_key_has_an_alias_named_after_the_stack(run_stack: RunStack) -> None:
    run = run_stack("staging")
    alias = run.one("aws:kms/alias:Alias", "alerts-key")
    assert alias.inputs["name"] == "alias/analytics-platform-staging-alerts-key"
    assert alias.inputs["targetKeyId"] == run.one(KEY, "alerts-key").outputs["keyId"]


@pytest.mark.parametrize("stack", STACKS)
def test_topic_is_encrypted_with_the_alerts_key(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    topic, key = run.one(TOPIC), run.one(KEY, "alerts-key")
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"]
    assert topic.inputs["kmsMasterKeyId"].startswith(
        f"arn:aws:kms:eu-west-1:{stack_account(stack)}:key/"
    )
    assert topic.inputs["name"] == f"analytics-platform-{stack}-alerts-topic"
    assert topic.inputs["signatureVersion"] == 2


def test_topic_policy_lets_only_cloudwatch_and_this_account_publish(run_stack: RunStack) -> None:
    run = run_stack("prod")
    topic_arn = run.one(TOPIC).outputs["arn"]
    policy = run.one("aws:sns/topicPolicy:TopicPolicy")
    assert policy.outputs["arn"] == topic_arn
    statements = _statements(policy.inputs["policy"])
    allows = [s for s in statements.values() if s["Effect"] == "Allow"]
    assert {json.dumps(s["Principal"], sort_keys=True) for s in allows} == {
        json.dumps({"Service": "cloudwatch.amazonaws.com"}),
        json.dumps({"AWS": f"arn:aws:iam::{FAKE_ACCOUNT_ID}:root"}),
    }
    for statement in allows:
        assert statement["Action"] == "sns:Publish"
        assert statement["Resource"] == topic_arn
    cloudwatch = statements["AllowCloudWatchAlarmsOfThisAccount"]
    assert cloudwatch["Condition"]["StringEquals"] == {"aws:SourceAccount": FAKE_ACCOUNT_ID}
    assert cloudwatch["Condition"]["ArnLike"] == {
        "aws:SourceArn": f"arn:aws:cloudwatch:eu-west-1:{FAKE_ACCOUNT_ID}:alarm:*"
    }
    deny = statements["DenyInsecureTransport"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_email_subscriptions_follow_config_and_keep_their_names(run_stack: RunStack) -> None:
    one = run_stack("dev", overrides={"alerts": {"emails": ["a@example.com"]}})
    two = run_stack("dev", overrides={"alerts": {"emails": ["b@example.com", "a@example.com"]}})
    assert [r.inputs["endpoint"] for r in _subscriptions(one, "email")] == ["a@example.com"]
    assert {r.inputs["endpoint"] for r in _subscriptions(two, "email")} == {
        "a@example.com",
        "b@example.com",
    }
    first_urn = _subscriptions(one, "email")[0].urn
    assert first_urn in {r.urn for r in _subscriptions(two, "email")}
    for record in _subscriptions(two, "email"):
        assert record.inputs["topic"] == two.one(TOPIC).outputs["arn"]


def test_webhook_subscription_is_https_secret_and_retries(run_stack: RunStack) -> None:
    url = "https://hooks.example.com/services/T0/B0/abc"
    run = run_stack("staging", secrets={"alertsWebhookUrl": url})
    [webhook] = _subscriptions(run, "https")
    assert is_secret(webhook.inputs["endpoint"])
    assert reveal(webhook.inputs["endpoint"]) == url
    policy = json.loads(webhook.inputs["deliveryPolicy"])
    assert policy["healthyRetryPolicy"] == {
        "numRetries": 10,
        "minDelayTarget": 20,
        "maxDelayTarget": 600,
        "numNoDelayRetries": 0,
        "numMinDelayRetries": 0,
        "numMaxDelayRetries": 0,
        "backoffFunction": "exponential",
    }
    assert policy["throttlePolicy"] == {"maxReceivesPerSecond": 1}


def test_webhook_retries_come_from_config(run_stack: RunStack) -> None:
    run = run_stack("prod", secrets={"alertsWebhookUrl": "https://hooks.example.com/x"})
    [webhook] = _subscriptions(run, "https")
    assert json.loads(webhook.inputs["deliveryPolicy"])["healthyRetryPolicy"]["numRetries"] == 20


def test_no_webhook_subscription_without_the_secret(run_stack: RunStack) -> None:
    assert _subscriptions(run_stack("dev"), "https") == []


def test_a_webhook_can_be_added_to_any_stack(run_stack: RunStack) -> None:
    run = run_stack("dev", secrets={"alertsWebhookUrl": "https://hooks.example.com/abc"})
    [webhook] = _subscriptions(run, "https")
    assert reveal(webhook.inputs["endpoint"]) == "https://hooks.example.com/abc"
    assert "https://hooks.example.com/abc" not in json.dumps(run.to_json())


@pytest.mark.parametrize(
    ("stack", "protected"), [("dev", False), ("staging", False), ("prod", True)]
)
def test_key_and_topic_are_protected_where_the_tier_says(
    run_stack: RunStack, stack: str, protected: bool
) -> None:
    run = run_stack(stack)
    assert run.one(KEY, "alerts-key").protect is protected
    assert run.one(TOPIC).protect is protected


def test_alerts_topic_arn_is_a_stack_output(run_stack: RunStack) -> None:
    run = run_stack("dev")
    assert run.outputs["alertsTopicArn"] == run.one(TOPIC).outputs["arn"]
    assert run.outputs["alertsTopicArn"].startswith("arn:aws:sns:eu-west-1:")
