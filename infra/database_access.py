"""DatabaseAccess: how one service's pods reach PostgreSQL without any password.

- The service's pods log in as their own PostgreSQL role (`analytics_api` for the service
  `analytics-api`) with an RDS IAM token that the app signs for each new connection. Their AWS
  identity comes from EKS Pod Identity: an association of the service's ServiceAccount with an IAM
  role that may only `rds-db:connect` as that role of this instance.
- The role is created by a Kubernetes Job on every deploy whose spec changed (idempotent SQL in
  app/db_bootstrap.py). That Job alone reads the RDS-managed master secret, at run time, with its
  own Pod Identity role; the password is never in Pulumi's inputs, a Kubernetes Secret or an env.

Nothing here is a copy of a credential: RDS rotates the master password every 7 days by default,
and IAM tokens live 15 minutes, so a deploy-time copy would stop working within days.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.aws_account import AwsAccount
from infra.component import PlatformComponent, StackContext
from infra.iam import service_trust_policy

# EKS Pod Identity: the agent on every node, and the token it accepts ("Understand how EKS Pod
# Identity works"). The pods mount the token themselves: their automountServiceAccountToken
# stays false, so they get no Kubernetes API token, and this token's audience is not the API's.
POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"
POD_IDENTITY_AGENT_IPS = ("169.254.170.23/32", "fd00:ec2::23/128")
POD_IDENTITY_AGENT_PORT = 80
# Names and paths, not tokens:
POD_IDENTITY_TOKEN_VOLUME = "eks-pod-identity-token"  # noqa: S105  # nosec B105
POD_IDENTITY_TOKEN_DIR = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"  # noqa: S105  # nosec B105
POD_IDENTITY_TOKEN_SECONDS = 86400  # the kubelet renews it at 80 % of its life
BOOTSTRAP_TIMEOUT_SECONDS = 600


def database_user(service: str) -> str:
    """The service's PostgreSQL role: its name with `_` for `-` (a valid, unquoted name)."""
    return service.replace("-", "_")


@dataclass(frozen=True)
class DatabaseConnection:
    host: pulumi.Output[str]
    port: pulumi.Output[int]
    name: pulumi.Output[str]
    # The instance's DbiResourceId, which rds-db:connect ARNs name.
    resource_id: pulumi.Output[str]
    master_secret_arn: pulumi.Output[str]
    # The key that encrypts the master secret.
    key_arn: pulumi.Output[str]


@dataclass(frozen=True)
class ClusterIdentity:
    """Where Pod Identity associations are made: the EKS cluster and the account."""

    cluster_name: str
    account: AwsAccount


@dataclass(frozen=True)
class PodSecurity:
    """The hardening every pod of the service gets (infra/blue_green.py)."""

    pod: k8s.core.v1.PodSecurityContextArgs
    container: k8s.core.v1.SecurityContextArgs

    @classmethod
    def hardened(cls, uid: int) -> PodSecurity:
        """Non-root as `uid`, read-only root filesystem, no privileges, RuntimeDefault seccomp:
        what the Pod Security Standard "restricted" and policies k8s-* ask of every pod."""
        seccomp = k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")
        return cls(
            pod=k8s.core.v1.PodSecurityContextArgs(
                run_as_non_root=True,
                run_as_user=uid,
                run_as_group=uid,
                fs_group=uid,
                seccomp_profile=seccomp,
            ),
            container=k8s.core.v1.SecurityContextArgs(
                run_as_non_root=True,
                run_as_user=uid,
                run_as_group=uid,
                read_only_root_filesystem=True,
                allow_privilege_escalation=False,
                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                seccomp_profile=seccomp,
            ),
        )


def pod_identity_volume() -> k8s.core.v1.VolumeArgs:
    """The projected token the Pod Identity agent exchanges for the role's credentials."""
    return k8s.core.v1.VolumeArgs(
        name=POD_IDENTITY_TOKEN_VOLUME,
        projected=k8s.core.v1.ProjectedVolumeSourceArgs(
            sources=[
                k8s.core.v1.VolumeProjectionArgs(
                    service_account_token=k8s.core.v1.ServiceAccountTokenProjectionArgs(
                        audience=POD_IDENTITY_PRINCIPAL,
                        expiration_seconds=POD_IDENTITY_TOKEN_SECONDS,
                        path=POD_IDENTITY_TOKEN_VOLUME,
                    )
                )
            ]
        ),
    )


def pod_identity_mount() -> k8s.core.v1.VolumeMountArgs:
    return k8s.core.v1.VolumeMountArgs(
        name=POD_IDENTITY_TOKEN_VOLUME, mount_path=POD_IDENTITY_TOKEN_DIR, read_only=True
    )


def pod_identity_env() -> list[k8s.core.v1.EnvVarArgs]:
    """What the AWS SDKs' container credential provider reads (the same as the webhook sets)."""
    return [
        k8s.core.v1.EnvVarArgs(
            name="AWS_CONTAINER_CREDENTIALS_FULL_URI",
            value=f"http://{POD_IDENTITY_AGENT_IPS[0].split('/')[0]}/v1/credentials",
        ),
        k8s.core.v1.EnvVarArgs(
            name="AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            value=f"{POD_IDENTITY_TOKEN_DIR}/{POD_IDENTITY_TOKEN_VOLUME}",
        ),
    ]


def pod_identity_trust_policy(account_id: str) -> str:
    return service_trust_policy(
        POD_IDENTITY_PRINCIPAL,
        actions=("sts:AssumeRole", "sts:TagSession"),
        condition={"StringEquals": {"aws:SourceAccount": account_id}},
    )


def pod_identity_role(
    component: PlatformComponent,
    cluster: ClusterIdentity,
    namespace: str,
    purpose: str,
    service_account: str,
    description: str,
    statements: list[Any],
) -> aws.eks.PodIdentityAssociation:
    """An IAM role that only pods of `namespace`/`service_account` can assume, its inline
    policy (`statements`), and the association that binds the two ("Assign an IAM role to a
    Kubernetes service account", Amazon EKS User Guide)."""
    name = f"{component.resource_name}-{purpose}"
    role = aws.iam.Role(
        name,
        name=component.physical_name(purpose, max_length=64),
        description=description,
        assume_role_policy=cluster.account.account_id.apply(pod_identity_trust_policy),
        tags=component.tags(),
        opts=component.child_opts(),
    )
    aws.iam.RolePolicy(
        name,
        role=role.id,
        policy=pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements}),
        opts=component.child_opts(),
    )
    return aws.eks.PodIdentityAssociation(
        name,
        cluster_name=cluster.cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role.arn,
        tags=component.tags(),
        opts=component.child_opts(),
    )


class DatabaseAccess(PlatformComponent):
    """One service's database role, its Pod Identity, and the Job that creates the role."""

    service_account_name: str
    db_user: str
    bootstrap_job: k8s.batch.v1.Job
    connect_association: aws.eks.PodIdentityAssociation

    def __init__(
        self,
        name: str,
        service: str,
        database: DatabaseConnection,
        cluster: ClusterIdentity,
        image: pulumi.Input[str],
        security: PodSecurity,
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("database:DatabaseAccess", name, ctx, opts)
        self.service = service
        self.db_user = database_user(service)
        self.service_account_name = service
        self.cluster = cluster
        account = cluster.account

        connect_arn = pulumi.Output.format(
            "arn:{0}:rds-db:{1}:{2}:dbuser:{3}/{4}",
            account.partition,
            account.region,
            account.account_id,
            database.resource_id,
            self.db_user,
        )
        self.connect_association = self._pod_role(
            "connect",
            self.service_account_name,
            f"Pods of {service}: log in to PostgreSQL as {self.db_user} with IAM tokens",
            [{"Effect": "Allow", "Action": "rds-db:connect", "Resource": connect_arn}],
        )

        bootstrap_account = f"{service}-db-bootstrap"
        bootstrap_association = self._pod_role(
            "bootstrap",
            bootstrap_account,
            f"The role bootstrap Job of {service}: reads the master secret at run time",
            [
                {
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": database.master_secret_arn,
                },
                {
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": database.key_arn,
                    "Condition": {
                        "StringEquals": {
                            "kms:ViaService": f"secretsmanager.{account.region}.amazonaws.com"
                        }
                    },
                },
            ],
        )
        bootstrap_sa = k8s.core.v1.ServiceAccount(
            f"{name}-bootstrap",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=bootstrap_account, namespace=service, labels=self._labels()
            ),
            automount_service_account_token=False,
            opts=self.child_opts(),
        )
        self.bootstrap_job = self._bootstrap_job(
            database, image, security, bootstrap_account, [bootstrap_sa, bootstrap_association]
        )
        self.finish(
            {
                "databaseUser": self.db_user,
                "serviceAccount": self.service_account_name,
                "bootstrapJob": self.bootstrap_job.metadata.name,
            }
        )

    def _labels(self) -> dict[str, str]:
        # `app` puts the Job's pod under the service's NetworkPolicy; no color, so no Service or
        # PodDisruptionBudget selects it.
        return {
            "app.kubernetes.io/name": self.service,
            "app": self.service,
            "app.kubernetes.io/component": "database-bootstrap",
        }

    def _pod_role(
        self, purpose: str, service_account: str, description: str, statements: list[Any]
    ) -> aws.eks.PodIdentityAssociation:
        return pod_identity_role(
            self, self.cluster, self.service, purpose, service_account, description, statements
        )

    def _bootstrap_job(
        self,
        database: DatabaseConnection,
        image: pulumi.Input[str],
        security: PodSecurity,
        service_account: str,
        depends_on: list[pulumi.Resource],
    ) -> k8s.batch.v1.Job:
        """Runs app/db_bootstrap.py from the stack's image, under the pods' hardening.

        A Job's pod template is immutable and a finished Job never runs again: the name carries
        a hash of everything the Job does, so a changed spec is a new Job (Pulumi replaces it,
        and waits for it to complete before the Deployments roll).
        """
        env = pulumi.Output.all(
            database.host, database.port, database.name, database.master_secret_arn
        ).apply(
            lambda db: {
                "DB_HOST": str(db[0]),
                "DB_PORT": str(db[1]),
                "DB_NAME": str(db[2]),
                "DB_SSLMODE": "require",
                "APP_DB_USERS": self.db_user,
                "MASTER_SECRET_ARN": str(db[3]),
                "AWS_REGION": self.cluster.account.region,
            }
        )
        job_name = pulumi.Output.all(env, image).apply(
            lambda args: (
                f"{self.service}-db-bootstrap-"
                + hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:8]
            )
        )
        return k8s.batch.v1.Job(
            f"{self.resource_name}-bootstrap",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=job_name,
                namespace=self.service,
                labels=self._labels(),
                # A Job that failed is run again by the next `pulumi up`, not waited on.
                annotations={"pulumi.com/replaceUnready": "true"},
            ),
            # No ttlSecondsAfterFinished: a finished Job stays, else the TTL controller deletes
            # it and the next `pulumi up` (after a refresh) would create and run it again.
            spec=k8s.batch.v1.JobSpecArgs(
                backoff_limit=3,
                active_deadline_seconds=BOOTSTRAP_TIMEOUT_SECONDS,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=self._labels()),
                    spec=k8s.core.v1.PodSpecArgs(
                        service_account_name=service_account,
                        automount_service_account_token=False,
                        restart_policy="Never",
                        security_context=security.pod,
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="bootstrap",
                                image=image,
                                command=["python", "/app/db_bootstrap.py"],
                                env=env.apply(
                                    lambda values: (
                                        [
                                            k8s.core.v1.EnvVarArgs(name=k, value=v)
                                            for k, v in values.items()
                                        ]
                                        + pod_identity_env()
                                    )
                                ),
                                resources=k8s.core.v1.ResourceRequirementsArgs(
                                    requests={"cpu": "50m", "memory": "64Mi"},
                                    limits={"cpu": "500m", "memory": "256Mi"},
                                ),
                                security_context=security.container,
                                volume_mounts=[pod_identity_mount()],
                            )
                        ],
                        volumes=[pod_identity_volume()],
                    ),
                ),
            ),
            opts=self.child_opts(
                depends_on=depends_on,
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{BOOTSTRAP_TIMEOUT_SECONDS + 60}s",
                    update=f"{BOOTSTRAP_TIMEOUT_SECONDS + 60}s",
                ),
            ),
        )


def aws_client_egress() -> list[k8s.networking.v1.NetworkPolicyEgressRuleArgs]:
    """What a pod that calls AWS with Pod Identity credentials sends out: DNS (UDP and TCP),
    HTTPS to the AWS APIs, and the node's Pod Identity agent for its credentials."""

    def port(number: int, protocol: str = "TCP") -> k8s.networking.v1.NetworkPolicyPortArgs:
        return k8s.networking.v1.NetworkPolicyPortArgs(port=number, protocol=protocol)

    return [
        k8s.networking.v1.NetworkPolicyEgressRuleArgs(ports=[port(53, "UDP"), port(53, "TCP")]),
        k8s.networking.v1.NetworkPolicyEgressRuleArgs(ports=[port(443)]),
        k8s.networking.v1.NetworkPolicyEgressRuleArgs(
            to=[
                k8s.networking.v1.NetworkPolicyPeerArgs(
                    ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr)
                )
                for cidr in POD_IDENTITY_AGENT_IPS
            ],
            ports=[port(POD_IDENTITY_AGENT_PORT)],
        ),
    ]
