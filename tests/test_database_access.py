"""Database access: the pods' own role through EKS Pod Identity, and the Job that creates it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.mock_engine import FAKE_DB_PASSWORD, ProgramRun, ResourceRecord
from infra.settings import InvalidConfig
from tests.conftest import STACKS, RunStack, policy_doc, stack_account, stack_yaml

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
JOB = "kubernetes:batch/v1:Job"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ACCESS = "analytics-api-database-access"


def _pod(record: ResourceRecord) -> dict[str, Any]:
    return record.inputs["spec"]["template"]["spec"]


def _statements(run: ProgramRun, purpose: str) -> list[dict[str, Any]]:
    return policy_doc(run.one(ROLE_POLICY, f"{ACCESS}-{purpose}").inputs["policy"])["Statement"]


@pytest.mark.parametrize("stack", STACKS)
def test_pods_assume_a_role_that_may_only_connect_as_their_database_user(
    run_stack: RunStack, stack: str
) -> None:
    """ "Creating and using an IAM policy for IAM database access" (Amazon RDS User Guide):
    rds-db:connect on arn:<partition>:rds-db:<region>:<account>:dbuser:<DbiResourceId>/<user>.
    "Create an IAM role for EKS Pod Identity": the role trusts pods.eks.amazonaws.com for
    sts:AssumeRole and sts:TagSession, and an association binds it to one ServiceAccount."""
    run = run_stack(stack)
    role = run.one(ROLE, f"{ACCESS}-connect")
    [trust] = policy_doc(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(trust["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    account = stack_account(stack)
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": account}}
    resource_id = run.one("aws:rds/instance:Instance").outputs["resourceId"]
    assert _statements(run, "connect") == [
        {
            "Effect": "Allow",
            "Action": "rds-db:connect",
            "Resource": f"arn:aws:rds-db:eu-west-1:{account}:dbuser:{resource_id}/analytics_api",
        }
    ]
    association = run.one(ASSOCIATION, f"{ACCESS}-connect")
    cluster = stack_yaml(stack)["config"]["analytics-platform:kubernetes"]["clusterName"]
    assert association.inputs["clusterName"] == cluster
    assert association.inputs["namespace"] == "analytics-api"
    assert association.inputs["roleArn"] == role.outputs["arn"]
    for color in ("blue", "green"):
        pod = _pod(run.one(DEPLOYMENT, f"analytics-api-{color}"))
        assert pod["serviceAccountName"] == association.inputs["serviceAccount"]


def test_pods_mount_the_pod_identity_token_but_no_kubernetes_api_token(
    run_stack: RunStack,
) -> None:
    """ "Understand how EKS Pod Identity works" (Amazon EKS User Guide): the SDK's container
    credential provider reads AWS_CONTAINER_CREDENTIALS_FULL_URI (the node's agent) and
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, a projected ServiceAccount token with the audience
    pods.eks.amazonaws.com. The pods project that token themselves (the EKS webhook leaves a pod
    that already has the volume alone), so automountServiceAccountToken stays false: that
    setting only governs the Kubernetes API token ("Configure Service Accounts for Pods")."""
    run = run_stack("prod")
    for record in [*run.of_type(DEPLOYMENT), run.one(JOB)]:
        pod = _pod(record)
        assert pod["automountServiceAccountToken"] is False
        [token] = [v for v in pod["volumes"] if v["name"] == "eks-pod-identity-token"]
        assert token["projected"]["sources"] == [
            {"serviceAccountToken": {"audience": "pods.eks.amazonaws.com",
                                     "expirationSeconds": 86400,
                                     "path": "eks-pod-identity-token"}}
        ]  # fmt: skip
        [container] = pod["containers"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == token["name"])
        assert mount == {
            "name": "eks-pod-identity-token",
            "readOnly": True,
            "mountPath": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount",
        }
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == "http://169.254.170.23/v1/credentials"
        token_file = env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
        assert token_file == f"{mount['mountPath']}/eks-pod-identity-token"
    for account in run.of_type("kubernetes:core/v1:ServiceAccount"):
        assert account.inputs["automountServiceAccountToken"] is False


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_bootstrap_job_may_read_the_master_secret(run_stack: RunStack, stack: str) -> None:
    """ "Password management with Amazon RDS and AWS Secrets Manager": the master secret is
    encrypted with the database's key, so reading it takes secretsmanager:GetSecretValue on it
    and kms:Decrypt through Secrets Manager ("How AWS Secrets Manager uses AWS KMS",
    kms:ViaService). Only the Job's own role gets either; the pods' role can only connect."""
    run = run_stack(stack)
    secret_arn = run.outputs["databaseMasterSecretArn"]
    key_arn = run.one("aws:kms/key:Key", "database-key").outputs["arn"]
    assert _statements(run, "bootstrap") == [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret_arn},
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn,
         "Condition": {"StringEquals": {"kms:ViaService":
                                        "secretsmanager.eu-west-1.amazonaws.com"}}},
    ]  # fmt: skip
    assert secret_arn not in json.dumps(_statements(run, "connect"))
    association = run.one(ASSOCIATION, f"{ACCESS}-bootstrap")
    job = run.one(JOB)
    assert association.inputs["serviceAccount"] == _pod(job)["serviceAccountName"]
    assert association.inputs["serviceAccount"] == "analytics-api-db-bootstrap"
    assert association.inputs["roleArn"] == run.one(ROLE, f"{ACCESS}-bootstrap").outputs["arn"]
    assert association.urn in job.dependencies


def test_the_bootstrap_job_reads_the_secret_at_run_time_and_is_hardened(
    run_stack: RunStack,
) -> None:
    """ "Creating a database account using IAM authentication" (Amazon RDS User Guide): the role
    is `CREATE USER ...; GRANT rds_iam TO ...`, run by app/db_bootstrap.py as the master user.
    The Job gets the secret's ARN, never its value; it runs under the Deployments' hardening
    (Pod Security Standards "restricted"); Pulumi waits for it to complete
    (pulumi-kubernetes Job await), and a failed one is replaced on the next update."""
    run = run_stack("prod")
    job = run.one(JOB)
    pod = _pod(job)
    [container] = pod["containers"]
    assert container["command"] == ["python", "/app/db_bootstrap.py"]
    env = {e["name"]: e["value"] for e in container["env"]}
    # What app/db_bootstrap.py reads (main: env[...]), each from the instance it bootstraps.
    assert {k: v for k, v in env.items() if not k.startswith("AWS_CONTAINER_")} == {
        "MASTER_SECRET_ARN": run.outputs["databaseMasterSecretArn"],
        "APP_DB_USERS": "analytics_api",
        "AWS_REGION": "eu-west-1",
        "DB_HOST": run.outputs["databaseEndpoint"],
        "DB_PORT": "5432",
        "DB_NAME": run.outputs["databaseName"],
        "DB_SSLMODE": "require",
    }
    assert FAKE_DB_PASSWORD not in json.dumps(job.inputs)
    assert container["image"] == run.outputs["imageReference"]
    deployment_pod = _pod(run.one(DEPLOYMENT, "analytics-api-blue"))
    assert pod["securityContext"] == deployment_pod["securityContext"]
    assert container["securityContext"] == deployment_pod["containers"][0]["securityContext"]
    assert pod["restartPolicy"] == "Never"
    assert job.inputs["spec"]["backoffLimit"] == 3
    assert job.inputs["metadata"]["annotations"] == {"pulumi.com/replaceUnready": "true"}
    assert job.inputs["metadata"]["namespace"] == "analytics-api"
    # Its pod is under the service's NetworkPolicy (DNS, PostgreSQL, HTTPS, Pod Identity).
    assert job.inputs["spec"]["template"]["metadata"]["labels"]["app"] == "analytics-api"
    assert "color" not in job.inputs["spec"]["template"]["metadata"]["labels"]


def test_deployments_roll_only_after_the_role_and_its_pod_identity_exist(
    run_stack: RunStack,
) -> None:
    """A pod that cannot log in never turns ready, and the rollout times out: the Deployments
    wait for the bootstrap Job and the pods' Pod Identity association ("Assign an IAM role to a
    Kubernetes service account": pods started before the association get no credentials)."""
    run = run_stack("staging")
    job = run.one(JOB)
    association = run.one(ASSOCIATION, f"{ACCESS}-connect")
    for deployment in (run.one(DEPLOYMENT, f"analytics-api-{c}") for c in ("blue", "green")):
        assert job.urn in deployment.dependencies
        assert association.urn in deployment.dependencies


def test_the_job_runs_again_when_what_it_does_changes_and_only_then(run_stack: RunStack) -> None:
    """ "Jobs" (kubernetes.io): a Job's pod template is immutable and a completed Job never runs
    again. The name carries a hash of the Job's image and settings: a new image or database is
    a new Job (Pulumi replaces it and runs it), an unrelated change keeps the same one."""
    base = run_stack("staging").one(JOB).inputs["metadata"]["name"]
    assert base.startswith("analytics-api-db-bootstrap-")
    image = ("111122223333.dkr.ecr.eu-west-1.amazonaws.com/analytics-platform-dev-image@sha256:"
             + "1" * 64)  # fmt: skip
    new_image = run_stack("staging", overrides={"image": {"reference": image}})
    assert new_image.one(JOB).inputs["metadata"]["name"] != base
    unrelated = run_stack(
        "staging", overrides={"monitoring": {"service": {"maxErrorLogsPerMinute": 20}}}
    )
    assert unrelated.one(JOB).inputs["metadata"]["name"] == base


def test_a_stack_without_the_eks_cluster_name_is_refused(run_stack: RunStack) -> None:
    with pytest.raises(InvalidConfig) as caught:
        run_stack("dev", overrides={"kubernetes": {"version": "1.34", "context": "analytics-dev"}})
    [line] = [line for line in caught.value.lines if "kubernetes.clusterName" in line]
    assert line.startswith(
        "stack dev: analytics-platform:kubernetes.clusterName = (not set): required: the EKS "
        "cluster's name"
    )
    assert "Pod Identity associations (database access without passwords)" in line
