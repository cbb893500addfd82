"""Alerts: an encrypted SNS topic that CloudWatch can publish to, and who it pages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.mock_engine import FAKE_ACCOUNT_ID, ProgramRun, is_secret, reveal
from infra.settings import InvalidConfig
from tests.conftest import STACKS, RunStack, policy_doc, stack_account, stack_yaml

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


def test_a_long_stack_name_keeps_every_alias_whole(run_stack: RunStack) -> None:
    """An alias name may be 256 characters, `alias/` included (AWS KMS API reference,
    CreateAlias: AliasName), far past the 63 most other names are cut to: a throwaway stack
    with a long name still finds its keys by the whole name."""
    stack = "pr-4242-reporting-backfill-for-the-quarterly-finance-export"
    run = run_stack("dev", name=stack, overrides={"kubernetes": {"clusterName": "analytics-pr"}})
    names = sorted(a.inputs["name"] for a in run.of_type("aws:kms/alias:Alias"))
    assert names
    assert all(len(n) > 63 for n in names)
    assert names == sorted(f"alias/analytics-platform-{stack}-{a.name}"
                           for a in run.of_type("aws:kms/alias:Alias"))  # fmt: skip


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
    """ "Amazon SNS security best practices" (least privilege; enforce encryption in transit
    with aws:SecureTransport) and "Example cases for Amazon SNS access control" (service
    principals limited by aws:SourceArn / aws:SourceAccount): every Allow carries a condition,
    the same-account one included, which scanners flag when bare."""
    run = run_stack("prod")
    topic_arn = run.one(TOPIC).outputs["arn"]
    policy = run.one("aws:sns/topicPolicy:TopicPolicy")
    assert policy.outputs["arn"] == topic_arn
    statements = _statements(policy.inputs["policy"])
    allows = [s for s in statements.values() if s["Effect"] == "Allow"]
    assert {json.dumps(s["Principal"], sort_keys=True) for s in allows} == {
        json.dumps({"Service": "cloudwatch.amazonaws.com"}),
        json.dumps({"Service": "events.rds.amazonaws.com"}),
        json.dumps({"Service": "budgets.amazonaws.com"}),
        json.dumps({"Service": "costalerts.amazonaws.com"}),
        json.dumps({"AWS": f"arn:aws:iam::{FAKE_ACCOUNT_ID}:root"}),
    }
    rds_events = statements["AllowRdsEventSubscriptionsOfThisAccount"]
    assert rds_events["Condition"] == {
        "ArnLike": {"aws:SourceArn": f"arn:aws:rds:eu-west-1:{FAKE_ACCOUNT_ID}:es:*"},
        "StringEquals": {"aws:SourceAccount": FAKE_ACCOUNT_ID},
    }
    for statement in allows:
        assert statement["Action"] == "sns:Publish"
        assert statement["Resource"] == topic_arn
    same_account = statements["AllowThisAccountToPublish"]
    # Security Hub / scanners flag an Allow on a topic without a condition.
    assert same_account["Condition"] == {
        "StringEquals": {"aws:PrincipalAccount": FAKE_ACCOUNT_ID},
        "Bool": {"aws:SecureTransport": "true"},
    }
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


PAGERDUTY = "https://events.pagerduty.com/integration/0123456789abcdef0123456789abcdef/enqueue"


def _paging(stack: str = "dev", service: str = "pagerduty", **retry: int) -> dict[str, Any]:
    paging: dict[str, Any] = {"service": service}
    if retry:
        paging["deliveryRetry"] = retry
    emails = {"emails": ["a@example.com"]}
    return {"alerts": {**emails, "paging": paging}}


def test_a_paging_tool_gets_the_only_https_subscription_secret_and_auto_confirmed(
    run_stack: RunStack,
) -> None:
    """ "Fanout to HTTP/S endpoints" (Amazon SNS Developer Guide): SNS delivers nothing to an
    HTTP/S endpoint until it answers the SubscriptionConfirmation. PagerDuty's and Opsgenie's SNS
    integrations confirm on their own (the provider's `endpoint_auto_confirms`, "e.g.,
    PagerDuty"); a Slack or Teams incoming webhook cannot, so it is never subscribed."""
    run = run_stack("dev", overrides=_paging(), secrets={"alertsPagingEndpoint": PAGERDUTY})
    [paging] = _subscriptions(run, "https")
    assert paging.name == "alerts-paging-pagerduty"
    assert paging.inputs["endpointAutoConfirms"] is True
    assert is_secret(paging.inputs["endpoint"])
    assert reveal(paging.inputs["endpoint"]) == PAGERDUTY
    assert PAGERDUTY not in json.dumps(run.to_json())
    policy = json.loads(paging.inputs["deliveryPolicy"])
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
    # PagerDuty's and Opsgenie's SNS integrations read the body as JSON; SNS sends text/plain
    # unless the delivery policy's requestPolicy says otherwise ("Creating an HTTP/S delivery
    # policy", Amazon SNS Developer Guide: headerContentType).
    assert policy["requestPolicy"] == {"headerContentType": "application/json"}
    assert set(policy) == {"healthyRetryPolicy", "throttlePolicy", "requestPolicy"}


@pytest.mark.parametrize("stack", STACKS)
def test_no_https_subscription_without_a_paging_tool(run_stack: RunStack, stack: str) -> None:
    assert _subscriptions(run_stack(stack), "https") == []


def test_paging_needs_its_endpoint_and_an_endpoint_needs_its_service(run_stack: RunStack) -> None:
    with pytest.raises(
        InvalidConfig,
        match=r"alertsPagingEndpoint = \(not set\): alerts\.paging "
        "needs the integration URL",
    ):
        run_stack("dev", overrides=_paging(service="opsgenie"))
    with pytest.raises(
        InvalidConfig,
        match=r"alerts\.paging = \(not set\): the secret "
        "alertsPagingEndpoint is set",
    ):
        run_stack("dev", secrets={"alertsPagingEndpoint": PAGERDUTY})


def test_a_chat_webhook_key_is_refused_with_what_replaces_it(run_stack: RunStack) -> None:
    """Slack and Teams incoming webhooks cannot confirm an SNS subscription ("Fanout to HTTP/S
    endpoints"), so the old `alertsWebhookUrl` never delivered; a stack that still sets it is
    told what to use, without its value being echoed."""
    with pytest.raises(InvalidConfig) as caught:
        run_stack("dev", secrets={"alertsWebhookUrl": "https://hooks.slack.com/services/T/B/x"})
    [line] = [line for line in caught.value.lines if "alertsWebhookUrl" in line]
    assert line.startswith("stack dev: analytics-platform:alertsWebhookUrl = (not shown): removed")
    assert "alerts.chatbot" in line
    assert "alerts.paging" in line
    assert "hooks.slack.com" not in str(caught.value)


@pytest.mark.parametrize(
    ("retry", "allowed"),
    [({"numRetries": 10, "minDelaySeconds": 20, "maxDelaySeconds": 600}, True),   # 3,100 s
     ({"numRetries": 12, "minDelaySeconds": 20, "maxDelaySeconds": 600}, False),  # 3,720 s
     ({"numRetries": 100, "minDelaySeconds": 1, "maxDelaySeconds": 60}, True),    # 3,050 s
     ({"numRetries": 3, "minDelaySeconds": 3599, "maxDelaySeconds": 3600}, False)],  # re:Post
)  # fmt: skip
def test_the_retry_policy_stays_within_snss_3600_second_limit(
    run_stack: RunStack, retry: dict[str, int], allowed: bool
) -> None:
    """ "Amazon SNS message delivery retries": the total policy retry time for an HTTP/S endpoint
    cannot be greater than 3,600 seconds (a hard limit); SNS refuses such a policy at deploy
    time. The exponential backoff from minDelay to maxDelay stays under the straight line
    between them, so numRetries x (min + max) / 2 bounds it; beyond that is a config error."""
    overrides = _paging(**retry)
    secrets = {"alertsPagingEndpoint": PAGERDUTY}
    worst = retry["numRetries"] * (retry["minDelaySeconds"] + retry["maxDelaySeconds"]) / 2
    assert (worst <= 3600) is allowed
    if allowed:
        [paging] = _subscriptions(run_stack("dev", overrides=overrides, secrets=secrets), "https")
        healthy = json.loads(paging.inputs["deliveryPolicy"])["healthyRetryPolicy"]
        assert healthy["numRetries"] == retry["numRetries"]
        return
    with pytest.raises(InvalidConfig) as caught:
        run_stack("dev", overrides=overrides, secrets=secrets)
    [line] = caught.value.lines
    assert line.startswith("stack dev: analytics-platform:alerts.paging.deliveryRetry = ")
    assert f"= {worst:g} s of retries; SNS allows at most 3600 s in total" in line


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_chat_reaches_slack_through_aws_chatbot_with_a_guardrail(
    run_stack: RunStack, stack: str
) -> None:
    """ "What is AWS Chatbot?" / "Understanding permissions" (AWS Chatbot Administrator Guide):
    Chatbot subscribes itself to the SNS topics of a channel configuration and renders alarms;
    its channel role needs only CloudWatch read ("notifications only" policy), and the
    guardrail policy caps what any channel member can do (AdministratorAccess when unset)."""
    run = run_stack(stack)
    topic_arn = run.one(TOPIC).outputs["arn"]
    slack = stack_yaml(stack)["config"]["analytics-platform:alerts"]["chatbot"]["slack"][0]
    [config] = run.of_type("aws:chatbot/slackChannelConfiguration:SlackChannelConfiguration")
    assert config.inputs["slackTeamId"] == slack["workspaceId"]
    assert config.inputs["slackChannelId"] == slack["channelId"]
    assert config.inputs["snsTopicArns"] == [topic_arn]
    assert config.inputs["guardrailPolicyArns"] == [
        "arn:aws:iam::aws:policy/CloudWatchReadOnlyAccess"
    ]
    assert (
        config.inputs["configurationName"]
        == f"analytics-platform-{stack}-alerts-slack-{slack['name']}"
    )
    role = run.one("aws:iam/role:Role", "alerts-chatbot")
    assert config.inputs["iamRoleArn"] == role.outputs["arn"]
    [trust] = policy_doc(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "chatbot.amazonaws.com"}
    [allowed] = policy_doc(run.one("aws:iam/rolePolicy:RolePolicy", "alerts-chatbot")
                           .inputs["policy"])["Statement"]  # fmt: skip
    assert allowed["Action"] == ["cloudwatch:Describe*", "cloudwatch:Get*", "cloudwatch:List*"]


def test_teams_channels_reach_chat_through_aws_chatbot_too(run_stack: RunStack) -> None:
    teams = {"name": "ops", "teamId": "5d1e2c3b-0a9f-4e8d-b7c6-a5b4c3d2e1f0",
             "tenantId": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
             "channelId": "19%3ab6ef35dc342d56ba5654e6fc6d25a071%40thread.tacv2"}  # fmt: skip
    run = run_stack("dev", overrides={"alerts": {"chatbot": {"teams": [teams]}}})
    [config] = run.of_type("aws:chatbot/teamsChannelConfiguration:TeamsChannelConfiguration")
    assert (config.inputs["teamId"], config.inputs["tenantId"], config.inputs["channelId"]) == (
        teams["teamId"], teams["tenantId"], teams["channelId"])  # fmt: skip
    assert config.inputs["snsTopicArns"] == [run.one(TOPIC).outputs["arn"]]
    assert (
        config.inputs["iamRoleArn"] == run.one("aws:iam/role:Role", "alerts-chatbot").outputs["arn"]
    )


def test_without_chat_channels_there_is_no_chatbot_role(run_stack: RunStack) -> None:
    run = run_stack("dev")
    assert [r for r in run.of_type("aws:iam/role:Role") if r.name == "alerts-chatbot"] == []


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_publisher_needs_the_topic_key(run_stack: RunStack, stack: str) -> None:
    """ "Encryption at rest" (Amazon SNS Developer Guide): SNS decrypts a message itself just
    before delivering it, so subscribers (Chatbot, email, HTTPS) need no key grant; the
    publishers do (CloudWatch alarms, RDS event subscriptions: kms:GenerateDataKey* and
    kms:Decrypt), else their notifications are dropped silently ("Why didn't I receive an SNS
    notification for my CloudWatch alarm trigger?"; RDS: "Subscribing to Amazon RDS event
    notification", encrypted topics)."""
    statements = _statements(run_stack(stack).one(KEY, "alerts-key").inputs["policy"])
    services = {
        json.dumps(s["Principal"]) for s in statements.values() if "Service" in s["Principal"]
    }
    assert services == {
        json.dumps({"Service": "cloudwatch.amazonaws.com"}),
        json.dumps({"Service": "events.rds.amazonaws.com"}),
        # Budgets and Cost Anomaly Detection publish too (tests/test_costs.py).
        json.dumps({"Service": "budgets.amazonaws.com"}),
        json.dumps({"Service": "costalerts.amazonaws.com"}),
    }
    assert set(statements["AllowRdsEventsToUseKey"]["Action"]) == {
        "kms:Decrypt",
        "kms:GenerateDataKey*",
    }


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
