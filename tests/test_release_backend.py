"""The release tool's Pulumi backend: what it asks of the Automation API, and what it reads back.

The Stack and its workspace are autospecced from the installed `pulumi.automation`, so a call
with an argument the Automation API does not take fails here as it would against the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from pulumi import automation as auto

from infra.release import BadInput, PulumiStack, ReleaseFailed, config_set_args

PROJECT = "analytics-platform"
URN = "urn:pulumi:prod::analytics-platform::k:d::api-green"


@pytest.fixture
def stack() -> Any:
    made = mock.create_autospec(auto.Stack, instance=True)
    # Instance attributes, which a class spec cannot see: the stack's LocalWorkspace and its CLI.
    made.workspace = mock.NonCallableMock(spec=["pulumi_command", "work_dir", "env_vars"])
    made.workspace.pulumi_command = mock.create_autospec(auto.PulumiCommand, instance=True)
    made.workspace.work_dir = "/repo"
    made.workspace.env_vars = {"PULUMI_CONFIG_PASSPHRASE": "x"}
    return made


def backend(stack: Any, work_dir: Path = Path("/repo")) -> PulumiStack:
    """A PulumiStack over `stack`, without the CLI its constructor looks for on PATH."""
    made = PulumiStack.__new__(PulumiStack)
    made._auto = auto
    made._work_dir = work_dir
    made._stack = stack
    made.project = PROJECT
    made.name = "prod"
    return made


def test_a_constructor_without_the_pulumi_cli_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BadInput, match="no Pulumi CLI on PATH: install it, or use --dry-run"):
        PulumiStack("prod")


def test_config_splits_plain_values_from_secret_keys(stack: Any) -> None:
    stack.get_all_config.return_value = {
        f"{PROJECT}:environment": auto.ConfigValue("prod"),
        f"{PROJECT}:alerts": auto.ConfigValue('{"pagingEndpoint": "x"}', secret=True),
    }
    assert backend(stack).config() == (
        {f"{PROJECT}:environment": "prod"},
        [f"{PROJECT}:alerts"],
    )


@pytest.mark.parametrize(("value", "kind"), [("green", "string"), (4, "int"), ("10", "string")])
def test_a_path_is_set_with_its_own_type_through_the_cli(stack: Any, value: Any, kind: str) -> None:
    """`pulumi config set --path` stores a value that looks like a number as a number unless
    `--type string` says otherwise (Pulumi CLI, `pulumi config set`); the Automation API's
    set_config has no type, so the backend runs the CLI in the stack's workspace."""
    backend(stack).set_path("services[0].green.version", value)
    workspace = stack.workspace
    workspace.pulumi_command.run.assert_called_once_with(
        config_set_args(PROJECT, "prod", "services[0].green.version", value),
        workspace.work_dir,
        workspace.env_vars,
    )
    args = workspace.pulumi_command.run.call_args.args[0]
    assert args[:5] == ["config", "set", "--path", "--type", kind]
    assert args[-2:] == ["--", str(value)]


def test_removing_a_path_removes_the_project_key_by_path(stack: Any) -> None:
    """`Stack.remove_config(key, path=True)`: the key is project-qualified, the path inside it."""
    backend(stack).remove_path("services[0].green.minReplicas")
    stack.remove_config.assert_called_once_with(
        f"{PROJECT}:services[0].green.minReplicas", path=True
    )


@pytest.mark.parametrize(
    ("targets", "target"), [(None, None), ([], None), (["a", "b"], ["a", "b"])]
)
def test_up_targets_what_it_is_given_and_always_runs_the_policy_pack(
    stack: Any, targets: list[str] | None, target: list[str] | None
) -> None:
    backend(stack, Path("/repo")).up(targets)
    stack.up.assert_called_once_with(
        target=target,
        policy_packs=["/repo/policy"],
        on_output=print,
        color="never",
        show_secrets=False,
    )


def test_ready_replicas_refreshes_the_deployment_and_reads_its_live_status(stack: Any) -> None:
    """A targeted refresh writes the live object's status into the state (Pulumi, `pulumi
    refresh --target`); the Deployment's `status.readyReplicas` is absent while none is ready
    (Kubernetes API, DeploymentStatus)."""
    resources = [
        {"urn": "urn:other", "outputs": {"status": {"readyReplicas": 9}}},
        {"urn": URN, "outputs": {"status": {"readyReplicas": 4}}},
    ]
    stack.export_stack.return_value = auto.Deployment(deployment={"resources": resources})
    assert backend(stack).ready_replicas(URN) == 4
    stack.refresh.assert_called_once_with(target=[URN], color="never")
    resources[1]["outputs"] = {"status": {}}
    assert backend(stack).ready_replicas(URN) == 0
    resources[1]["outputs"] = None
    assert backend(stack).ready_replicas(URN) == 0


def test_ready_replicas_of_an_object_not_in_the_stack_fails(stack: Any) -> None:
    stack.export_stack.return_value = auto.Deployment(deployment=None)
    with pytest.raises(ReleaseFailed, match=f"^{URN} is not in the stack$"):
        backend(stack).ready_replicas(URN)


def test_resource_urns_are_the_states_in_order(stack: Any) -> None:
    stack.export_stack.return_value = auto.Deployment(
        deployment={"resources": [{"urn": "urn:b"}, {"urn": "urn:a"}]}
    )
    assert backend(stack).resource_urns() == ["urn:b", "urn:a"]


def test_outputs_leave_secrets_out(stack: Any) -> None:
    stack.outputs.return_value = {
        "apiEndpoint": auto.OutputValue("https://api", secret=False),
        "kubeconfig": auto.OutputValue("secret", secret=True),
    }
    assert backend(stack).outputs() == {"apiEndpoint": "https://api"}


def test_canary_metrics_read_the_preview_target_group_behind_the_stacks_load_balancer() -> None:
    """Target-group metrics carry both `TargetGroup` and `LoadBalancer` dimensions, each the
    ARN's suffix (Elastic Load Balancing, "CloudWatch metrics for your Application Load
    Balancer"); the stack exports both, and the region the client reads from."""
    from types import SimpleNamespace

    from infra.release import _canary_metrics

    outputs = {
        "loadBalancerArnSuffix": "app/analytics-platform-prod-api-lb/50dc6c495c0c9188",
        "previewTargetGroupArnSuffixes": {"analytics-api": "targetgroup/canary/73e2d6bc24d8a067"},
        "region": "eu-west-1",
    }
    release = SimpleNamespace(
        backend=SimpleNamespace(outputs=lambda: outputs), service_name="analytics-api"
    )
    metrics = _canary_metrics(release)  # type: ignore[arg-type]
    assert metrics._dimensions == [
        {"Name": "TargetGroup", "Value": "targetgroup/canary/73e2d6bc24d8a067"},
        {"Name": "LoadBalancer", "Value": "app/analytics-platform-prod-api-lb/50dc6c495c0c9188"},
    ]
    assert metrics._cloudwatch.meta.region_name == "eu-west-1"
    del outputs["previewTargetGroupArnSuffixes"]
    with pytest.raises(BadInput, match="the stack exports no canary target group for "
                       "analytics-api: run a full `pulumi up` first"):  # fmt: skip
        _canary_metrics(release)  # type: ignore[arg-type]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_release_tool_reads_the_outputs_the_program_exports(stack: str) -> None:
    """The release tool runs against `pulumi stack output` of the real stack, not against the
    fakes' hand-written outputs: every output it reads is one the program exports, and the
    canary's dimensions name the stack's own load balancer and preview target group."""
    from types import SimpleNamespace

    from infra.mock_engine import reveal_all
    from infra.release import _canary_metrics
    from tests.conftest import unchanged_run

    run = unchanged_run(stack)
    outputs = reveal_all(run.outputs)
    assert outputs["apiEndpoint"].startswith("https://")
    assert outputs["region"] == "eu-west-1"
    release = SimpleNamespace(
        backend=SimpleNamespace(outputs=lambda: outputs), service_name="analytics-api"
    )
    metrics = _canary_metrics(release)  # type: ignore[arg-type]
    preview = run.one("aws:lb/targetGroup:TargetGroup", "api-analytics-api-preview").outputs
    balancer = run.one("aws:lb/loadBalancer:LoadBalancer").outputs
    assert metrics._dimensions == [
        {"Name": "TargetGroup", "Value": preview["arnSuffix"]},
        {"Name": "LoadBalancer", "Value": balancer["arnSuffix"]},
    ]
