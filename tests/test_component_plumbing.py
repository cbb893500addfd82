"""Component plumbing: tags, physical names, parents and explicit providers."""

from __future__ import annotations

import json

import pytest

from infra.component import StackContext
from infra.mock_engine import ProgramRun, is_secret
from infra.policies._rules import is_taggable
from tests.conftest import STACKS, RunStack, stack_yaml


@pytest.mark.parametrize("stack", STACKS)
def test_every_taggable_aws_resource_carries_the_common_tags(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    config = stack_yaml(stack)["config"]
    expected = {
        "Environment": config["analytics-platform:environment"],
        "Project": "analytics-platform",
        "Stack": stack,
        "Owner": config["analytics-platform:tags"]["owner"],
        "CostCenter": config["analytics-platform:tags"]["costCenter"],
        "ManagedBy": "pulumi",
    }
    taggable = [r for r in run.resources if r.type.startswith("aws:") and is_taggable(r.type)]
    assert len(taggable) >= 2
    for record in taggable:
        tags = record.inputs.get("tags", {})
        assert expected.items() <= tags.items(), f"{record.urn} tags: {tags}"
        assert tags["Component"]


def test_untaggable_types_are_recognised() -> None:
    assert is_taggable("aws:sns/topic:Topic")
    assert not is_taggable("aws:sns/topicPolicy:TopicPolicy")


def _context(stack: str = "dev") -> StackContext:
    return StackContext(
        project="analytics-platform",
        stack=stack,
        environment="dev",
        tags={},
        protect=False,
        kms_deletion_window_days=7,
        log_retention_days=7,
    )


def test_physical_names_are_project_stack_and_name() -> None:
    assert _context().physical_name("alerts-topic") == "analytics-platform-dev-alerts-topic"
    assert _context("PR-7").physical_name("db") == "analytics-platform-pr-7-db"


def test_long_physical_names_keep_a_stable_hash_within_the_limit() -> None:
    ctx = _context("feature-with-a-very-long-branch-name")
    first = ctx.physical_name("target-group-blue", max_length=32)
    second = ctx.physical_name("target-group-green", max_length=32)
    assert len(first) <= 32
    assert len(second) <= 32
    assert first != second
    assert first == ctx.physical_name("target-group-blue", max_length=32)


def _providers(run: ProgramRun) -> dict[str, str]:
    return {r.name: r.urn for r in run.resources if r.type.startswith("pulumi:providers:")}


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        ("dev", {"aws", "kubernetes", "docker", "random"}),
        ("staging", {"aws", "kubernetes", "random"}),
        ("prod", {"aws", "aws-dr", "kubernetes", "random"}),
    ],
)
def test_every_resource_uses_an_explicit_provider(
    run_stack: RunStack, stack: str, expected: set[str]
) -> None:
    run = run_stack(stack)
    providers = _providers(run)
    assert set(providers) == expected
    for record in run.resources:
        if not record.custom or record.type.startswith("pulumi:providers:"):
            continue
        package = record.type.split(":")[0]
        assert record.provider is not None, record.urn
        provider_urn = record.provider.rpartition("::")[0]
        assert provider_urn in providers.values(), record.urn
        assert provider_urn.endswith(f"pulumi:providers:{package}::" + provider_urn.split("::")[-1])
    for invoke in run.invokes:
        assert invoke.provider is not None
        assert invoke.provider.startswith(providers["aws"] + "::"), invoke.token


def test_every_resource_but_the_providers_sits_under_the_platform(run_stack: RunStack) -> None:
    run = run_stack("prod")
    roots = [r for r in run.resources if r.parent is None]
    assert sorted(r.type for r in roots) == [
        "analytics-platform:index:AnalyticsPlatform",
        "pulumi:providers:aws",
        "pulumi:providers:aws",
        "pulumi:providers:kubernetes",
        "pulumi:providers:random",
    ]


def test_aws_provider_takes_region_and_account_pin_but_no_role_from_config(
    run_stack: RunStack,
) -> None:
    """The caller's credentials are the role: a preview or refresh builds the provider from
    stack config, so a role there would be assumed by the read-only jobs too (Pulumi AWS
    provider, assumeRoles; .github/workflows choose the role per operation)."""
    run = run_stack("prod")
    for provider in [r for r in run.resources if r.type == "pulumi:providers:aws"]:
        assert provider.inputs["region"] in ("eu-west-1", "eu-central-1")
        # Provider config reaches the engine with structured values as JSON text.
        assert json.loads(provider.inputs["allowedAccountIds"]) == ["123456789012"]
        assert "assumeRoles" not in provider.inputs
        assert "assumeRole" not in provider.inputs


def test_kubernetes_provider_uses_a_context_or_the_secret_kubeconfig_when_given(
    run_stack: RunStack,
) -> None:
    context = {"version": "1.34", "context": "kind-analytics", "clusterName": "analytics-dev"}
    dev = run_stack("dev", overrides={"kubernetes": context}).one("pulumi:providers:kubernetes")
    assert dev.inputs["context"] == "kind-analytics"
    assert "kubeconfig" not in dev.inputs
    assert dev.inputs["clusterIdentifier"] == "analytics-dev"
    prod = run_stack("prod", secrets={"kubeconfig": "apiVersion: v1"}).one(
        "pulumi:providers:kubernetes"
    )
    assert prod.inputs["clusterIdentifier"] == "analytics-prod"
    assert "context" not in prod.inputs
    assert is_secret(prod.inputs["kubeconfig"])
