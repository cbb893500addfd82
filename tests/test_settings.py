"""Typed stack settings: tier defaults, overrides, and every kind of bad input."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
from pydantic import BaseModel

from infra.mock_engine import FakeCloud, is_secret
from infra.settings import InvalidConfig, StackSettings, _model_in, parse_settings
from infra.stackfiles import load_stack_config
from infra.tiers import TIERS
from tests.conftest import PROJECT, RunStack, stack_yaml

MINIMAL = {
    f"{PROJECT}:tags": '{"owner": "data", "costCenter": "cc-1"}',
    f"{PROJECT}:aws": '{"region": "eu-west-1", "allowedAccountIds": ["123456789012"]}',
    f"{PROJECT}:kubernetes": '{"context": "ctx", "clusterName": "cluster"}',
    f"{PROJECT}:api": json.dumps(
        {
            "loadBalancerTls": {
                "certificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d",
                "serverName": "api-internal.example.com",
            }
        }
    ),
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
    assert settings.alerts.paging is None


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
    values = {**MINIMAL, f"{PROJECT}:environment": "dev", f"{PROJECT}:alerts": json.dumps(
        {"paging": {"service": "opsgenie",
                    "deliveryRetry": {"numRetries": 3, "maxDelaySeconds": 60}}})}  # fmt: skip
    settings = parse_settings(PROJECT, "dev", values, [f"{PROJECT}:alertsPagingEndpoint"])
    assert settings.alerts.paging is not None
    assert settings.alerts.paging.delivery_retry.num_retries == 3
    assert settings.alerts.paging.delivery_retry.max_delay_seconds == 60


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
     "analytics-platform:databse", "unknown key; allowed keys here: alerts, alertsPagingEndpoint"),
    ("unknown nested key", "dev", {"alerts": {"emailz": ["a@example.com"]}}, [],
     "alerts.emailz", "unknown key; allowed keys here: emails, chatbot, paging"),
    ("missing environment", "dev", {}, ["environment"], "analytics-platform:environment",
     "(not set): required key is not set"),
    ("unknown environment", "dev", {"environment": "qa"}, [], "environment",
     "allowed: 'dev', 'staging' or 'prod'"),
    ("out-of-range number", "dev",
     {"alerts": {"paging": {"service": "pagerduty", "deliveryRetry": {"numRetries": 500}}}}, [],
     "alerts.paging.deliveryRetry.numRetries", "= 500: allowed: less than or equal to 100"),
    ("out of range for the tier", "prod", {"kmsDeletionWindowDays": 7}, [],
     "kmsDeletionWindowDays", "at least 30 days"),
    ("inconsistent range", "dev",
     {"alerts": {"paging": {"service": "pagerduty", "deliveryRetry": {"minDelaySeconds": 900}}}},
     [], "alerts.paging.deliveryRetry", "must not exceed maxDelaySeconds"),
    ("bad email", "dev", {"alerts": {"emails": ["not-an-email"]}}, [], "alerts.emails[0]",
     '"not-an-email"'),
    ("production safety off", "prod", {"protectStatefulResources": False}, [],
     "protectStatefulResources", "production safety"),
    ("prod not pinned to an account", "prod", {"aws": {"region": "eu-west-1"}}, [],
     "aws.allowedAccountIds", "must pin its AWS account"),
    ("nobody paged in staging", "staging", {"alerts": {"emails": [], "chatbot": {}}}, [],
     "alerts.emails", "must page somebody"),
    ("no cluster to talk to", "dev", {"kubernetes": {}}, [], "kubernetes.clusterName",
     "ambient kubeconfig is never used"),
    ("provider namespace key", "dev", {"aws:region": "us-east-1"}, [], "aws:region",
     "configures its providers explicitly"),
    ("a role in stack config", "prod",
     {"aws": {"region": "eu-west-1", "allowedAccountIds": ["123456789012"],
              "assumeRoleArn": "arn:aws:iam::123456789012:role/deploy"}}, [],
     "aws.assumeRoleArn", "unknown key; allowed keys here: region, allowedAccountIds"),
    ("required secret not set", "prod", {"requiredSecrets": ["kubeconfig"]}, ["kubeconfig"],
     "analytics-platform:kubeconfig = "
     "(not set)", "set it: pulumi config set --secret kubeconfig < kubeconfig.yaml"),
    ("unknown required secret", "dev", {"requiredSecrets": ["dbPassword"]}, [],
     "requiredSecrets[0]", "'alertsPagingEndpoint' or 'kubeconfig'"),
    ("one NodePort for both target groups", "dev", {"api": {"previewNodePort": 30080}}, [],
     "api", "nodePort and previewNodePort must differ"),
    # HorizontalPodAutoscalerSpec.minReplicas is at least 1 unless the alpha HPAScaleToZero
    # gate is on (Kubernetes API reference, autoscaling/v2).
    ("idle color without pods", "dev", {"serviceDefaults": {"replicas": 1,
     "previewReplicaCount": 0, "maxReplicas": 2}}, [], "serviceDefaults.previewReplicaCount",
     "greater than or equal to 1"),
    ("rollback target is the active color", "dev", {"services": [{"name": "analytics-api",
     "activeColor": "blue", "previousColor": "blue", "blue": {"version": "1"},
     "green": {"version": "1"}}]}, [], "services[0]", "previousColor (blue) must be the idle"),
    ("a color on a moving tag", "prod", {"services": [{"name": "analytics-api",
     "blue": {"version": "1", "image": "r.example.com/a/api:latest"},
     "green": {"version": "1"}}]}, [], "services[0].blue", "the `latest` tag moves"),
    ("a service in the collector's namespace", "dev", {"services": [{"name": "tracing",
     "blue": {"version": "1"}, "green": {"version": "1"}}]}, [], 'services[0].name = "tracing"',
     "is a namespace the cluster or the platform owns"),
    ("a service in a cluster namespace", "dev", {"services": [{"name": "kube-system",
     "blue": {"version": "1"}, "green": {"version": "1"}}]}, [], "services[0].name",
     "(default, kube-*, tracing)"),
    ("a service in the default namespace", "dev", {"services": [{"name": "default",
     "blue": {"version": "1"}, "green": {"version": "1"}}]}, [], "services[0].name",
     "choose another name"),
    ("sampling more than every trace", "prod", {"tracing": {"samplingRatio": 1.5}}, [],
     "analytics-platform:tracing.samplingRatio = 1.5", "samplingRatio = 1.5: allowed: a sampling "
     "ratio from 0 (no new traces) to 1 (every trace), e.g. 0.25 samples one trace in four"),
    ("a negative sampling ratio", "dev", {"tracing": {"samplingRatio": -0.1}}, [],
     "tracing.samplingRatio = -0.1", "from 0 (no new traces) to 1 (every trace)"),
    ("a sampling ratio in words", "staging", {"tracing": {"samplingRatio": "some"}}, [],
     "tracing.samplingRatio", "valid number"),
    ("a collector on latest", "prod",
     {"tracing": {"collectorImage": "public.ecr.aws/aws-observability/aws-otel-collector:latest"}},
     [], "tracing.collectorImage", "the `latest` tag moves"),
    ("an untagged collector", "dev",
     {"tracing": {"collectorImage": "public.ecr.aws/aws-observability/aws-otel-collector"}},
     [], "tracing.collectorImage", "an untagged reference means `latest`"),
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
    values = {
        **MINIMAL,
        f"{PROJECT}:environment": "dev",
        f"{PROJECT}:alertsPagingEndpoint": "https://events.pagerduty.com/k/hunter2",
    }
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
    run = run_stack(
        "prod",
        overrides={"alerts": {"paging": {"service": "pagerduty"}}},
        secrets={
            "alertsPagingEndpoint": "https://events.pagerduty.com/integration/k/enqueue",
            "kubeconfig": "apiVersion: v1",
        },
    )
    provider = run.one("pulumi:providers:kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])
    paging = run.one("aws:sns/topicSubscription:TopicSubscription", "alerts-paging-pagerduty")
    assert is_secret(paging.inputs["endpoint"])


def test_required_secrets_get_offline_stand_ins_marked_secret(project_copy: Any) -> None:
    stack_file = stack_yaml("prod")
    stack_file["config"][f"{PROJECT}:requiredSecrets"] = ["kubeconfig"]
    loaded = load_stack_config(project_copy("prod", stack_file), "prod")
    config, secret_keys = loaded.config, loaded.secret_keys
    assert f"{PROJECT}:kubeconfig" in secret_keys
    assert (
        config[f"{PROJECT}:kubeconfig"]
        == "offline-stand-in-for-secret-analytics-platform:kubeconfig"
    )
    assert f"{PROJECT}:alertsWebhookUrl" not in config  # optional: absent until set


def _required(model: type[BaseModel], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        if field.is_required():
            found.add(key)
        sub = _model_in(field.annotation)
        if sub is not None:
            found |= _required(sub, f"{key}.")
    return found


# What a stack must say itself: a default here would let a stack run in the wrong place (a
# region, a VPC) or untagged. The tier-filled keys are required in the model too, so the tier
# table (not a model default) is where their value comes from.
MUST_BE_SET = {
    "environment", "tags", "tags.owner", "tags.costCenter", "aws", "aws.region", "network",
    "network.vpcId", "network.privateSubnetIds", "network.clusterNodeSecurityGroupId", "image",
    "services", "services.name", "services.blue", "services.blue.version", "services.green",
    "services.green.version",
    "alerts.paging.service", "alerts.chatbot.slack.name", "alerts.chatbot.slack.workspaceId",
    "alerts.chatbot.slack.channelId", "alerts.chatbot.teams.name", "alerts.chatbot.teams.teamId",
    "alerts.chatbot.teams.tenantId", "alerts.chatbot.teams.channelId",
    "api.customDomain.domainName", "api.customDomain.certificateArn",
    "api.loadBalancerTls.certificateArn", "api.loadBalancerTls.serverName",
}  # fmt: skip


def _tier_keys(value: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, item in value.items():
        keys.add(prefix + key)
        if isinstance(item, dict):
            keys |= _tier_keys(item, f"{prefix}{key}.")
    return keys


def test_required_settings_stay_required() -> None:
    """Each required key either comes from the tier table or must be set by the stack; none
    can quietly gain a default in the model."""
    tier_filled = _tier_keys(TIERS["dev"].defaults.model_dump(by_alias=True))
    # A service entry takes its replica counts from serviceDefaults (itself tier-filled).
    per_service = {"services.replicas", "services.previewReplicaCount", "services.maxReplicas"}
    # The one tier key with a model default: the tier's value is merged in before the model
    # sees the image settings, so the model's 30 applies only to an image built outside a stack.
    model_default = {"image.keepTaggedImages"}
    assert _required(StackSettings) == MUST_BE_SET | (tier_filled - model_default) | per_service


@pytest.mark.parametrize(
    ("key", "drop"),
    [
        ("environment", lambda v: v.pop(f"{PROJECT}:environment")),
        ("network", lambda v: v.pop(f"{PROJECT}:network")),
        ("tags.costCenter", lambda v: v.update({f"{PROJECT}:tags": '{"owner": "data"}'})),
        ("tags.owner", lambda v: v.update({f"{PROJECT}:tags": '{"costCenter": "cc-1"}'})),
        ("aws.region", lambda v: v.update({f"{PROJECT}:aws": "{}"})),
        ("network.vpcId", lambda v: v.update({f"{PROJECT}:network": json.dumps(
            {**json.loads(MINIMAL[f"{PROJECT}:network"]), "vpcId": None})})),
    ],
)  # fmt: skip
def test_a_required_key_left_out_is_one_line_naming_it(key: str, drop: Any) -> None:
    values = {**MINIMAL, f"{PROJECT}:environment": "dev"}
    drop(values)
    with pytest.raises(InvalidConfig) as caught:
        parse_settings(PROJECT, "any-stack", values, [])
    assert f"stack any-stack: {PROJECT}:{key} = " in caught.value.lines[0]
    assert len(caught.value.lines) == 1


def test_a_paging_url_without_its_service_is_refused_and_says_which_services(
    run_stack: RunStack,
) -> None:
    """SNS delivers to an HTTPS endpoint only once it confirms the subscription, which only the
    paging tools whose integrations confirm on their own do (README: Monitoring and alerting);
    a URL with no service named could be any webhook, so nothing is subscribed on a guess."""
    cloud = FakeCloud()
    with pytest.raises(InvalidConfig) as refused:
        run_stack("dev", secrets={"alertsPagingEndpoint": "https://events.pagerduty.com/x"},
                  cloud=cloud)  # fmt: skip
    assert refused.value.lines == [
        "stack dev: analytics-platform:alerts.paging = (not set): the secret "
        "alertsPagingEndpoint is set: name its service (alerts.paging.service: pagerduty or "
        "opsgenie)"
    ]
    assert cloud.created == []


def test_a_plain_key_set_as_a_secret_is_refused_without_showing_it(run_stack: RunStack) -> None:
    cloud = FakeCloud()
    with pytest.raises(InvalidConfig) as refused:
        run_stack("dev", secrets={"environment": "dev"}, cloud=cloud)
    assert refused.value.lines == [
        "stack dev: analytics-platform:environment = (secret): must not be a secret; only these "
        "keys are secrets: alertsPagingEndpoint, kubeconfig"
    ]
    assert cloud.created == []
