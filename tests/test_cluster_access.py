"""Clusters reached without hand-made kubeconfigs: from the EKS cluster each stack names, with
the credentials of the stack's OIDC deploy role alone.

Amazon EKS User Guide, "Connect kubectl to an EKS cluster by creating a kubeconfig file": the
endpoint and certificate authority come from the cluster, the token from `aws eks get-token`
(client.authentication.k8s.io/v1beta1 exec), optionally under `--role-arn`.
Pulumi Kubernetes provider docs, `clusterIdentifier`: the provider is replaced only when it
changes; every other change to its configuration is an update.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from infra.mock_engine import FakeCloud
from infra.settings import InvalidConfig
from tests.conftest import PROJECT, ROOT, STACKS, RunStack, stack_account, stack_yaml

GET_CLUSTER = "aws:eks/getCluster:getCluster"
# The secrets the deploy workflow may read; none of them reaches a cluster.
NON_CLUSTER_SECRETS = {
    "secrets.PULUMI_ACCESS_TOKEN", "secrets.PULUMI_CONFIG_PASSPHRASE", "secrets.CHAT_WEBHOOK_URL",
}  # fmt: skip


def _kubeconfig(run_stack: RunStack, stack: str) -> dict[str, Any]:
    provider = run_stack(stack).one("pulumi:providers:kubernetes")
    return json.loads(provider.inputs["kubeconfig"])


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_names_its_eks_cluster_and_needs_no_kubeconfig(stack: str) -> None:
    config = stack_yaml(stack)["config"]
    kubernetes = config[f"{PROJECT}:kubernetes"]
    assert kubernetes["clusterName"] == f"analytics-{stack}"
    assert "context" not in kubernetes
    assert f"{PROJECT}:kubeconfig" not in config


@pytest.mark.parametrize("stack", STACKS)
def test_the_kubernetes_provider_is_built_from_the_eks_cluster(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    [lookup] = [i for i in run.invokes if i.token == GET_CLUSTER]
    assert lookup.args["name"] == f"analytics-{stack}"
    assert lookup.provider is not None
    assert "pulumi:providers:aws::aws::" in lookup.provider
    provider = run.one("pulumi:providers:kubernetes")
    assert provider.inputs["clusterIdentifier"] == f"analytics-{stack}"
    assert "context" not in provider.inputs
    kubeconfig = json.loads(provider.inputs["kubeconfig"])
    # client-go's clientcmd reads a kubeconfig as a v1 Config (Kubernetes, "Organizing Cluster
    # Access Using kubeconfig Files"; `aws eks update-kubeconfig` writes the same header).
    assert (kubeconfig["apiVersion"], kubeconfig["kind"]) == ("v1", "Config")
    assert set(kubeconfig) == {"apiVersion", "kind", "clusters", "contexts", "current-context",
                               "users"}  # fmt: skip
    arn = f"arn:aws:eks:eu-west-1:{stack_account(stack)}:cluster/analytics-{stack}"
    [cluster] = kubeconfig["clusters"]
    assert cluster["name"] == arn
    assert cluster["cluster"]["server"].startswith("https://")
    assert cluster["cluster"]["server"].endswith(".gr7.eu-west-1.eks.amazonaws.com")
    ca = base64.b64decode(cluster["cluster"]["certificate-authority-data"]).decode()
    assert ca == f"offline CA of analytics-{stack}"  # what the cluster lookup answered
    assert kubeconfig["current-context"] == arn
    assert kubeconfig["contexts"] == [{"name": arn, "context": {"cluster": arn, "user": arn}}]


@pytest.mark.parametrize("stack", STACKS)
def test_get_token_runs_under_the_callers_own_credentials(run_stack: RunStack, stack: str) -> None:
    """No role from stack config: `aws eks get-token` runs as the operation's OIDC role (the
    read-only one for preview and drift, the deploy role for up), never a role the stack names
    (AWS CLI, `aws eks get-token`; EKS, "Grant IAM users access to Kubernetes with access
    entries")."""
    exec_ = _kubeconfig(run_stack, stack)["users"][0]["user"]["exec"]
    assert exec_ == {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": "aws",
        "args": ["--region", "eu-west-1", "eks", "get-token", "--cluster-name",
                 f"analytics-{stack}", "--output", "json"],
        "interactiveMode": "Never",
    }  # fmt: skip


def test_the_secret_kubeconfig_still_wins_and_skips_the_cluster_lookup(
    run_stack: RunStack,
) -> None:
    cloud = FakeCloud()
    run = run_stack("dev", secrets={"kubeconfig": "apiVersion: v1"}, cloud=cloud)
    assert not [i for i in cloud.invokes if i.token == GET_CLUSTER]
    assert run.one("pulumi:providers:kubernetes").inputs["clusterIdentifier"] == "analytics-dev"


def test_a_cluster_name_eks_would_refuse_is_a_config_error(run_stack: RunStack) -> None:
    with pytest.raises(InvalidConfig, match=r"analytics-platform:kubernetes.clusterName = "):
        run_stack("dev", overrides={"kubernetes": {"clusterName": "not a name"}})


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("job_name", ["up", "release"])
def test_the_deploy_workflow_reaches_each_stacks_cluster_with_its_oidc_role_alone(
    stack: str, job_name: str
) -> None:
    """GitHub docs, "Configuring OpenID Connect in Amazon Web Services"; the deploy role of the
    stack's environment is the only credential, and the program needs nothing else."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    job = workflow["jobs"][job_name]
    if job_name == "up":
        assert f'"{stack}"' in job["strategy"]["matrix"]["stack"]
    else:
        assert stack in workflow[True]["workflow_dispatch"]["inputs"]["stack"]["options"]
    # The stack's environment holds its deploy role.
    assert "'production'" in job["environment"]["name"]
    assert job["permissions"]["id-token"] == "write"
    aws = [s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws")]
    assert [s["with"]["role-to-assume"] for s in aws] == ["${{ vars.AWS_DEPLOY_ROLE_ARN }}"]
    text = yaml.safe_dump(job)
    for word in ("kubeconfig", "kubectl", "update-kubeconfig", ".kube"):
        assert word not in text.lower(), word
    secrets = {part.split("}}")[0].strip() for part in text.split("${{")[1:] if "secrets." in part}
    assert secrets <= NON_CLUSTER_SECRETS
    # ...and the stack the job deploys builds its kubeconfig from the cluster it names.
    kubernetes = stack_yaml(stack)["config"][f"{PROJECT}:kubernetes"]
    assert kubernetes.get("clusterName")
    assert "context" not in kubernetes
