"""Typed stack settings: tier defaults, overrides, and every kind of bad input."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from infra.mock_engine import FakeCloud, is_secret
from infra.settings import InvalidConfig, StackSettings, parse_settings
from infra.tiers import TIERS
from tests.conftest import PROJECT, RunStack, stack_config

MINIMAL = {
    f"{PROJECT}:tags": '{"owner": "data", "costCenter": "cc-1"}',
    f"{PROJECT}:aws": '{"region": "eu-west-1", "allowedAccountIds": ["123456789012"]}',
    f"{PROJECT}:kubernetes": '{"context": "ctx"}',
    f"{PROJECT}:alerts": '{"emails": ["oncall@example.com"]}',
    f"{PROJECT}:network": json.dumps(
        {
            "vpcId": "vpc-0123456789abcdef0",
            "privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
            "clusterNodeSecurityGroupId": "sg-0123456789abcdef0",
        }
    ),
    f"{PROJECT}:image": json.dumps(
        {"reference": f"registry.example.com/team/api@sha256:{'a' * 64}"}
    ),
}


def parse(environment: str, **extra: str) -> StackSettings:
    values = {**MINIMAL, f"{PROJECT}:environment": environment}
    values.update({f"{PROJECT}:{k}": v for k, v in extra.items()})
    return parse_settings(PROJECT, "any-stack", values, [])


@pytest.mark.parametrize(
    ("environment", "protect", "kms_window"),
    [("dev", False, 7), ("staging", False, 14), ("prod", True, 30)],
)
def test_each_tier_fills_in_its_defaults(environment: str, protect: bool, kms_window: int) -> None:
    settings = parse(environment)
    assert settings.environment == environment
    assert settings.protect_stateful_resources is protect
    assert settings.kms_deletion_window_days == kms_window
    assert settings.alerts.webhook_retry.num_retries == 10


def _is_subset(part: Any, whole: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            k in whole and _is_subset(v, whole[k]) for k, v in part.items()
        )
    return bool(part == whole)


@pytest.mark.parametrize("environment", list(TIERS))
def test_tier_defaults_are_the_table_in_tiers_py(environment: str) -> None:
    settings = parse(environment).model_dump(by_alias=True, mode="json")
    defaults = TIERS[environment].defaults.model_dump(by_alias=True, mode="json")
    assert _is_subset(defaults, settings)
    assert defaults["database"]["instanceClass"] == settings["database"]["instanceClass"]


def test_a_stack_overrides_a_tier_default() -> None:
    settings = parse("dev", protectStatefulResources="true", kmsDeletionWindowDays="20")
    assert settings.protect_stateful_resources is True
    assert settings.kms_deletion_window_days == 20


def test_nested_keys_are_camel_case() -> None:
    settings = parse("dev", alerts='{"webhookRetry": {"numRetries": 3, "maxDelaySeconds": 60}}')
    assert settings.alerts.webhook_retry.num_retries == 3
    assert settings.alerts.webhook_retry.max_delay_seconds == 60


def test_any_stack_name_works_with_an_environment(run_stack: RunStack) -> None:
    run = run_stack("dev", name="pr-123")
    assert run.stack == "pr-123"
    topic = run.one("aws:sns/topic:Topic")
    assert topic.inputs["name"] == "analytics-platform-pr-123-alerts-topic"
    assert topic.inputs["tags"]["Stack"] == "pr-123"
    assert topic.inputs["tags"]["Environment"] == "dev"


# (what is wrong, stack, overrides, keys removed, key path named, what the message must say)
BAD_CONFIGS: list[tuple[str, str, dict[str, Any], list[str], str, str]] = [
    ("wrong type", "dev", {"tags": {"owner": 5, "costCenter": "x"}}, [], "tags.owner", "= 5"),
    ("wrong type at top level", "dev", {"kmsDeletionWindowDays": "soon"}, [],
     "kmsDeletionWindowDays", "valid integer"),
    ("unknown top-level key", "dev", {"databse": {"instanceClass": "db.t4g.micro"}}, [],
     "analytics-platform:databse", "unknown key; allowed keys here: alerts, alertsWebhookUrl"),
    ("unknown nested key", "dev", {"alerts": {"emailz": ["a@example.com"]}}, [],
     "alerts.emailz", "unknown key; allowed keys here: emails, webhookRetry"),
    ("missing environment", "dev", {}, ["environment"], "analytics-platform:environment",
     "(not set): required key is not set"),
    ("unknown environment", "dev", {"environment": "qa"}, [], "environment",
     "allowed: 'dev', 'staging' or 'prod'"),
    ("out-of-range number", "dev", {"alerts": {"webhookRetry": {"numRetries": 500}}}, [],
     "alerts.webhookRetry.numRetries", "= 500: allowed: less than or equal to 100"),
    ("out of range for the tier", "prod", {"kmsDeletionWindowDays": 7}, [],
     "kmsDeletionWindowDays", "at least 30 days"),
    ("inconsistent range", "dev", {"alerts": {"webhookRetry": {"minDelaySeconds": 900}}}, [],
     "alerts.webhookRetry", "must not exceed maxDelaySeconds"),
    ("bad email", "dev", {"alerts": {"emails": ["not-an-email"]}}, [], "alerts.emails[0]",
     '"not-an-email"'),
    ("production safety off", "prod", {"protectStatefulResources": False}, [],
     "protectStatefulResources", "production safety"),
    ("prod not pinned to an account", "prod", {"aws": {"region": "eu-west-1"}}, [],
     "aws.allowedAccountIds", "must pin its AWS account"),
    ("nobody paged in staging", "staging", {"alerts": {"emails": []}}, ["alertsWebhookUrl"],
     "alerts.emails", "must page somebody"),
    ("no cluster to talk to", "dev", {"kubernetes": {}}, [], "kubernetes.context",
     "ambient kubeconfig is never used"),
    ("provider namespace key", "dev", {"aws:region": "us-east-1"}, [], "aws:region",
     "configures its providers explicitly"),
    ("bad role arn", "prod", {"aws": {"region": "eu-west-1", "allowedAccountIds": ["123456789012"],
                                      "assumeRoleArn": "deploy-role"}}, [],
     "aws.assumeRoleArn", "arn:aws"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stack", "overrides", "remove", "path", "says"),
    [case[1:] for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
def test_bad_config_stops_before_any_resource_with_a_precise_message(
    run_stack: RunStack,
    stack: str,
    overrides: dict[str, Any],
    remove: list[str],
    path: str,
    says: str,
) -> None:
    cloud = FakeCloud()
    with pytest.raises(InvalidConfig) as caught:
        run_stack(stack, overrides=overrides, remove=remove, cloud=cloud)
    assert cloud.created == []
    line = next((line for line in caught.value.lines if path in line), None)
    assert line is not None, caught.value.lines
    assert line.startswith(f"stack {stack}: ")
    assert says in line
    assert "Traceback" not in str(caught.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse("dev", foo="1", kmsDeletionWindowDays="99", alerts='{"emails": "x"}')
    assert len(caught.value.lines) == 3


def test_invalid_config_is_a_run_error_so_pulumi_prints_no_traceback() -> None:
    with pytest.raises(pulumi.RunError):
        parse("prod", protectStatefulResources="false")


def test_a_plaintext_secret_is_refused_without_echoing_it() -> None:
    values = {**MINIMAL, f"{PROJECT}:environment": "dev",
              f"{PROJECT}:alertsWebhookUrl": "https://hooks.example.com/T0/B0/hunter2"}  # fmt: skip
    with pytest.raises(InvalidConfig) as caught:
        parse_settings(PROJECT, "dev", values, [])
    assert "must be a secret" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_malformed_object_text_is_reported_once() -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse("dev", tags='{"owner": ')
    assert len(caught.value.lines) == 1
    assert "analytics-platform:tags" in caught.value.lines[0]


def test_secrets_are_read_as_secret_outputs(run_stack: RunStack) -> None:
    run = run_stack("prod")
    provider = run.one("pulumi:providers:kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])
    webhook = run.one("aws:sns/topicSubscription:TopicSubscription", "alerts-webhook")
    assert is_secret(webhook.inputs["endpoint"])


def test_secure_values_in_stack_files_are_marked_secret() -> None:
    config, secret_keys = stack_config("prod")
    assert f"{PROJECT}:alertsWebhookUrl" in secret_keys
    assert f"{PROJECT}:kubeconfig" in secret_keys
    assert not any(value.startswith("v1:") for value in config.values())
