"""The offline engine: runs the program as the Pulumi language host does, against mocks.

One implementation, shared by the offline preview and the tests. It records every resource
registration (inputs as the engine receives them, camelCase), every invoke, and the stack
outputs. It imports nothing from the program, so that it can load the program exactly as
`pulumi up` would: `runpy.run_path(main_dir)` inside `run_in_stack`, with `main_dir` first on
`sys.path`, `main_dir` as the working directory (pulumi/pulumi `pkg/engine/project.go`,
`getPwdMain`) and `pulumi.get_root_directory()` the folder that holds Pulumi.yaml.

Applies run: the runtime is configured with `dry_run=False`, so every `Output` resolves.
`preview=True` runs the program as `pulumi preview` does before a first `pulumi up`: ids and
computed outputs of the resources are unknown, so applies on them do not run.
`run_like_pulumi_up` does both, in that order, and fails when they register different URNs.

The engine refuses what the Pulumi engine refuses: a stack name outside Pulumi's rules, and two
resources with the same URN.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import runpy
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from pulumi.output import Unknown
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_in_stack

MASKED = "[secret]"
UNKNOWN = "[unknown]"  # how the JSON and the plan show a value a preview does not know
STACK_TYPE = "pulumi:pulumi:Stack"
FAKE_ACCOUNT_ID = "123456789012"
FAKE_DB_PASSWORD = "offline-fake-db-password"  # noqa: S105 - a fake  # nosec B105
FAKE_ECR_PASSWORD = "offline-ecr-password"  # noqa: S105 - a fake  # nosec B105
# pulumi/pulumi sdk/go/common/tokens (ValidateStackName, stackNameAndProjectRegexp): letters,
# digits, `-`, `_` and `.`, at most 100 characters.
_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class EngineError(Exception):
    """What the Pulumi engine itself would refuse: the run stops with this one line."""


def stack_name_problem(stack: str) -> str | None:
    """Why Pulumi would refuse `stack` as a stack name, or None."""
    if len(stack) > 100:
        return f"stack name {stack[:20]!r}... is {len(stack)} characters; Pulumi allows at most 100"
    if not _STACK_NAME.fullmatch(stack):
        return (
            f"stack name {stack!r} is not one Pulumi accepts: stack names may only contain "
            "letters, digits, hyphens, underscores and periods (1 to 100 characters)"
        )
    return None


def is_secret(value: Any) -> bool:
    return bool(rpc.is_rpc_secret(value))


def is_unknown(value: Any) -> bool:
    """A value a preview does not know yet (an output of a resource not created)."""
    return isinstance(value, Unknown) or (isinstance(value, str) and value == rpc.UNKNOWN)


def reveal(value: Any) -> Any:
    """The value inside a secret wrapper, for tests that check where a secret is wired."""
    return rpc.unwrap_rpc_secret(value)


def reveal_all(value: Any) -> Any:
    """`value` with every secret wrapper, however deep, replaced by what it holds."""
    if is_secret(value):
        return reveal_all(reveal(value))
    if isinstance(value, dict):
        return {k: reveal_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal_all(v) for v in value]
    return value


def mask_secrets(value: Any) -> Any:
    """A JSON-ready copy of `value` with every secret replaced by "[secret]".

    Protobuf carries every number as a double; whole numbers come back as ints.
    """
    if is_secret(value):
        return MASKED
    if is_unknown(value):
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: mask_secrets(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass
class ResourceRecord:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str | None
    provider: str | None
    dependencies: list[str]
    protect: bool
    inputs: dict[str, Any]
    aliases: list[dict[str, Any]] = field(default_factory=list)
    # input name -> the URNs it was computed from (what CrossGuard calls propertyDependencies).
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    # What the fake provider answered: inputs plus ids, ARNs, endpoints. Not in the JSON plan,
    # which shows what the program asks for.
    outputs: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    # Options that decide how the engine replaces the resource.
    replace_on_changes: list[str] = field(default_factory=list)
    delete_before_replace: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "custom": self.custom,
            "parent": self.parent,
            "provider": self.provider,
            "dependencies": list(self.dependencies),
            "protect": self.protect,
            "aliases": self.aliases,
            "propertyDependencies": self.property_dependencies,
            "inputs": mask_secrets(self.inputs),
        }


@dataclass
class InvokeRecord:
    token: str
    args: dict[str, Any]
    provider: str | None


@dataclass
class ProgramRun:
    project: str
    stack: str
    resources: list[ResourceRecord]
    invokes: list[InvokeRecord]
    outputs: dict[str, Any]
    log: list[tuple[str, str]]
    # Where the program ran, as it saw it: os.getcwd() and pulumi.get_root_directory().
    working_directory: str = ""
    root_directory: str = ""

    def of_type(self, type_: str) -> list[ResourceRecord]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> ResourceRecord:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_} named {name!r}, found {len(found)}")
        return found[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "resources": [r.to_json() for r in self.resources],
            "outputs": mask_secrets(self.outputs),
        }


def engine_urn(stack: str, project: str, parent: str | None, type_: str, name: str) -> str:
    """A URN as the Pulumi engine builds it: the parent's type chain (the stack's excluded),
    `$`, the type, then the name."""
    if parent:
        chain = parent.split("::")[2]
        if chain != STACK_TYPE:
            type_ = f"{chain}${type_}"
    return f"urn:pulumi:{stack}::{project}::{type_}::{name}"


def _stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


@dataclass(frozen=True)
class _New:
    """What the fake provider knows when a resource is created."""

    name: str  # logical name
    inputs: dict[str, Any]
    region: str
    account: str
    uid: str  # stable per stack, type and name

    @property
    def physical(self) -> str:
        return str(self.inputs.get("name") or f"{self.name}-{self.uid[:7]}")

    def hex(self, length: int) -> str:
        return self.uid.replace("-", "")[:length]

    def arn(self, service: str, resource: str, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account}:{resource}"

    def input(self, key: str) -> str:
        return str(reveal(self.inputs.get(key, "")))


def _load_balancer(n: _New) -> tuple[str, dict[str, Any]]:
    suffix = f"app/{n.physical}/{n.hex(16)}"
    arn = n.arn("elasticloadbalancing", f"loadbalancer/{suffix}")
    dns = f"internal-{n.physical}-{int(n.hex(8), 16)}.{n.region}.elb.amazonaws.com"
    return arn, {"arn": arn, "arnSuffix": suffix, "dnsName": dns, "zoneId": "Z32O12XQLNTSW2"}


def _target_group(n: _New) -> tuple[str, dict[str, Any]]:
    suffix = f"targetgroup/{n.physical}/{n.hex(16)}"
    arn = n.arn("elasticloadbalancing", suffix)
    return arn, {"arn": arn, "arnSuffix": suffix}


def _rds_instance(n: _New) -> tuple[str, dict[str, Any]]:
    identifier = n.input("identifier") or n.physical
    address = f"{identifier}.c{n.hex(12)}.{n.region}.rds.amazonaws.com"
    port = int(float(n.inputs.get("port", 5432)))
    secret = n.arn("secretsmanager", f"secret:rds!db-{n.uid}-{n.hex(6)}")
    return identifier, {
        "arn": n.arn("rds", f"db:{identifier}"),
        "address": address,
        "endpoint": f"{address}:{port}",
        "port": port,
        "resourceId": f"db-{n.hex(26).upper()}",
        "engineVersionActual": f"{n.input('engineVersion')}.1",
        "masterUserSecrets": [
            {"secretArn": secret, "secretStatus": "active", "kmsKeyId": n.input("kmsKeyId")}
        ],
    }


def _api(n: _New) -> tuple[str, dict[str, Any]]:
    api_id = n.hex(10)
    return api_id, {
        "apiEndpoint": f"https://{api_id}.execute-api.{n.region}.amazonaws.com",
        "arn": n.arn("apigateway", f"/apis/{api_id}", region=True).replace(f":{n.account}:", "::"),
        "executionArn": n.arn("execute-api", api_id),
    }


def _repository(n: _New) -> tuple[str, dict[str, Any]]:
    return n.physical, {
        "arn": n.arn("ecr", f"repository/{n.physical}"),
        "registryId": n.account,
        "repositoryUrl": f"{n.account}.dkr.ecr.{n.region}.amazonaws.com/{n.physical}",
    }


def _docker_image(n: _New) -> tuple[str, dict[str, Any]]:
    name = n.input("imageName")
    repository = name.rpartition(":")[0] if ":" in name.rpartition("/")[2] else name
    digest = f"{repository}@sha256:{hashlib.sha256(name.encode()).hexdigest()}"
    return digest, {"repoDigest": digest, "imageName": name}


# Fake outputs by resource type: (id, outputs besides the inputs).
_FAKES: dict[str, Callable[[_New], tuple[str, dict[str, Any]]]] = {
    "aws:kms/key:Key": lambda n: (n.uid, {"keyId": n.uid, "arn": n.arn("kms", f"key/{n.uid}")}),
    "aws:kms/alias:Alias": lambda n: (n.physical, {"arn": n.arn("kms", n.physical)}),
    "aws:sns/topic:Topic": lambda n: (
        n.arn("sns", n.physical),
        {"arn": n.arn("sns", n.physical), "owner": n.account},
    ),
    "aws:sns/topicSubscription:TopicSubscription": lambda n: (
        f"{n.input('topic')}:{n.uid}",
        {"arn": f"{n.input('topic')}:{n.uid}", "ownerId": n.account},
    ),
    "aws:sns/topicPolicy:TopicPolicy": lambda n: (n.input("arn"), {}),
    "aws:ec2/securityGroup:SecurityGroup": lambda n: (
        f"sg-{n.hex(17)}",
        {"arn": n.arn("ec2", f"security-group/sg-{n.hex(17)}"), "ownerId": n.account},
    ),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": lambda n: (
        f"sgr-{n.hex(17)}",
        {"securityGroupRuleId": f"sgr-{n.hex(17)}"},
    ),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": lambda n: (
        f"sgr-{n.hex(17)}",
        {"securityGroupRuleId": f"sgr-{n.hex(17)}"},
    ),
    "aws:rds/subnetGroup:SubnetGroup": lambda n: (
        n.physical,
        {"arn": n.arn("rds", f"subgrp:{n.physical}")},
    ),
    "aws:rds/parameterGroup:ParameterGroup": lambda n: (
        n.physical,
        {"arn": n.arn("rds", f"pg:{n.physical}")},
    ),
    "aws:rds/instance:Instance": _rds_instance,
    "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication": lambda n: (
        n.arn("rds", f"auto-backup:ab-{n.hex(26)}"),
        {},
    ),
    "aws:iam/role:Role": lambda n: (
        n.physical,
        {"arn": n.arn("iam", f"role/{n.physical}", region=False), "uniqueId": n.hex(21)},
    ),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": lambda n: (f"{n.name}-{n.hex(8)}", {}),
    "aws:cloudwatch/logGroup:LogGroup": lambda n: (
        n.physical,
        {"arn": n.arn("logs", f"log-group:{n.physical}")},
    ),
    "aws:cloudwatch/metricAlarm:MetricAlarm": lambda n: (
        n.physical,
        {"arn": n.arn("cloudwatch", f"alarm:{n.physical}")},
    ),
    "aws:cloudwatch/compositeAlarm:CompositeAlarm": lambda n: (
        n.input("alarmName"),
        {"arn": n.arn("cloudwatch", f"alarm:{n.input('alarmName')}")},
    ),
    "aws:cloudwatch/dashboard:Dashboard": lambda n: (
        n.input("dashboardName"),
        {"dashboardArn": n.arn("cloudwatch", f"dashboard/{n.input('dashboardName')}", False)},
    ),
    "aws:cloudwatch/logMetricFilter:LogMetricFilter": lambda n: (n.physical, {}),
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:lb/listener:Listener": lambda n: (
        n.arn("elasticloadbalancing", f"listener/app/lb/{n.hex(16)}/{n.hex(12)}"),
        {"arn": n.arn("elasticloadbalancing", f"listener/app/lb/{n.hex(16)}/{n.hex(12)}")},
    ),
    "aws:apigatewayv2/api:Api": _api,
    "aws:apigatewayv2/vpcLink:VpcLink": lambda n: (n.hex(6), {"arn": n.arn("apigateway", "")}),
    "aws:apigatewayv2/integration:Integration": lambda n: (n.hex(7), {}),
    "aws:apigatewayv2/route:Route": lambda n: (n.hex(7), {}),
    "aws:apigatewayv2/stage:Stage": lambda n: (
        n.input("name"),
        {"invokeUrl": f"https://{n.input('apiId')}.execute-api.{n.region}.amazonaws.com/"},
    ),
    "aws:apigatewayv2/domainName:DomainName": lambda n: (
        n.input("domainName"),
        {"apiMappingSelectionExpression": "$request.basepath"},
    ),
    "aws:apigatewayv2/apiMapping:ApiMapping": lambda n: (n.hex(6), {}),
    "aws:ecr/repository:Repository": _repository,
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": lambda n: (
        n.input("repository"),
        {"registryId": n.account},
    ),
    "docker:index/image:Image": _docker_image,
    "random:index/randomId:RandomId": lambda n: (
        n.hex(2 * int(float(n.inputs.get("byteLength", 4)))),
        {"hex": n.hex(2 * int(float(n.inputs.get("byteLength", 4)))), "b64Url": n.hex(6)},
    ),
}


class FakeCloud(pulumi_mocks.Mocks):
    """Realistic fake provider answers: ids, ARNs and endpoints shaped like AWS's own.

    Resources of a type without a fake get their inputs back and a generic id and ARN.
    Invokes without a handler raise, so that a new invoke in the program cannot silently
    return nothing under test.
    """

    def __init__(
        self,
        account_id: str = FAKE_ACCOUNT_ID,
        subnet_zones: Mapping[str, str] | None = None,
        preview: bool = False,
    ) -> None:
        self.account_id = account_id
        # In a preview, nothing is created yet: a resource's id and computed outputs are unknown.
        self.preview = preview
        # subnet id -> AZ letter; subnets not listed get the next unused letter.
        self._subnet_zones = dict(subnet_zones or {})
        self._provider_regions: dict[str, str] = {}
        # An AWS provider pinned to accounts only ever works in the first of them.
        self._provider_accounts: dict[str, str] = {}
        self.invokes: list[InvokeRecord] = []
        # Every resource the engine was asked to create, by type and name, in order.
        self.created: list[tuple[str, str]] = []
        self._invoke_handlers: dict[str, Callable[[pulumi_mocks.MockCallArgs], dict[str, Any]]] = {
            "aws:index/getCallerIdentity:getCallerIdentity": self._caller_identity,
            "aws:eks/getCluster:getCluster": self._eks_cluster,
            "aws:index/getPartition:getPartition": lambda _: {
                "id": "aws",
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
            },
            "aws:index/getRegion:getRegion": lambda call: {
                "id": self._region(call.provider),
                "region": self._region(call.provider),
                "name": self._region(call.provider),
                "endpoint": f"ec2.{self._region(call.provider)}.amazonaws.com",
                "description": "offline region",
            },
            "aws:ec2/getSubnet:getSubnet": self._subnet,
            "aws:ecr/getAuthorizationToken:getAuthorizationToken": self._ecr_token,
            "aws:secretsmanager/getSecretVersion:getSecretVersion": self._secret_version,
        }

    def _region(self, provider_ref: str | None) -> str:
        provider_id = (provider_ref or "").rpartition("::")[2]
        return self._provider_regions.get(provider_id, "us-east-1")

    def _account(self, provider_ref: str | None) -> str:
        provider_id = (provider_ref or "").rpartition("::")[2]
        return self._provider_accounts.get(provider_id, self.account_id)

    def _caller_identity(self, call: pulumi_mocks.MockCallArgs) -> dict[str, Any]:
        account = self._account(call.provider)
        return {
            "id": account,
            "accountId": account,
            "arn": f"arn:aws:sts::{account}:assumed-role/offline-preview/session",
            "userId": "AROAOFFLINEPREVIEW:session",
        }

    def _eks_cluster(self, call: pulumi_mocks.MockCallArgs) -> dict[str, Any]:
        # Shaped like `aws eks describe-cluster`: the endpoint and CA a kubeconfig needs.
        name = str(call.args.get("name"))
        region, account = self._region(call.provider), self._account(call.provider)
        uid = _stable_uuid(account, region, name).replace("-", "").upper()
        ca = base64.b64encode(f"offline CA of {name}".encode()).decode()
        return {
            "id": name,
            "name": name,
            "arn": f"arn:aws:eks:{region}:{account}:cluster/{name}",
            "endpoint": f"https://{uid}.gr7.{region}.eks.amazonaws.com",
            "certificateAuthorities": [{"data": ca}],
            "status": "ACTIVE",
            "version": "1.34",
            "accessConfigs": [{"authenticationMode": "API"}],
        }

    def _subnet(self, call: pulumi_mocks.MockCallArgs) -> dict[str, Any]:
        subnet_id = str(call.args.get("id"))
        if subnet_id not in self._subnet_zones:
            used = set(self._subnet_zones.values())
            self._subnet_zones[subnet_id] = next(z for z in "abcdef" if z not in used)
        region = self._region(call.provider)
        zone = f"{region}{self._subnet_zones[subnet_id]}"
        return {
            "id": subnet_id,
            "vpcId": call.args.get("vpcId", "vpc-0offline0000000000"),
            "availabilityZone": zone,
            "availabilityZoneId": f"euw1-az{'abcdef'.index(zone[-1]) + 1}",
            "cidrBlock": f"10.0.{'abcdef'.index(zone[-1]) * 32}.0/19",
            "arn": f"arn:aws:ec2:{region}:{self.account_id}:subnet/{subnet_id}",
            "ownerId": self.account_id,
            "state": "available",
            "mapPublicIpOnLaunch": False,
        }

    def _ecr_token(self, call: pulumi_mocks.MockCallArgs) -> dict[str, Any]:
        registry = call.args.get("registryId", self.account_id)
        return {
            "id": self._region(call.provider),
            "authorizationToken": "QVdTOm9mZmxpbmUtZWNyLXBhc3N3b3Jk",
            "userName": "AWS",
            "password": FAKE_ECR_PASSWORD,
            "proxyEndpoint": f"https://{registry}.dkr.ecr.{self._region(call.provider)}.amazonaws.com",
            "expiresAt": "2099-01-01T00:00:00Z",
        }

    def _secret_version(self, call: pulumi_mocks.MockCallArgs) -> dict[str, Any]:
        # Shaped like an RDS-managed master secret; the password is a fake of the offline engine.
        secret_id = str(call.args.get("secretId"))
        return {
            "id": f"{secret_id}|AWSCURRENT",
            "arn": secret_id,
            "secretId": secret_id,
            "versionId": _stable_uuid(secret_id),
            "versionStage": "AWSCURRENT",
            "versionStages": ["AWSCURRENT"],
            "secretString": json.dumps(
                {"username": "analytics_admin", "password": FAKE_DB_PASSWORD}
            ),
        }

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.invokes.append(InvokeRecord(args.token, dict(args.args), args.provider or None))
        handler = self._invoke_handlers.get(args.token)
        if handler is None:
            raise NotImplementedError(
                f"the offline engine has no answer for invoke {args.token}; "
                "add one to FakeCloud in infra/mock_engine.py"
            )
        return handler(args), []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        self.created.append((args.typ, args.name))
        uid = _stable_uuid(runtime_settings.get_stack(), args.typ, args.name)
        if args.typ.startswith("pulumi:providers:"):
            if args.typ == "pulumi:providers:aws":
                self._provider_regions[uid] = str(inputs.get("region", "us-east-1"))
                allowed = json.loads(str(inputs.get("allowedAccountIds") or "[]"))
                self._provider_accounts[uid] = allowed[0] if allowed else self.account_id
            return uid, inputs
        if self.preview:
            # What a provider's preview of a create answers: no id, only the inputs.
            return "", inputs
        new = _New(
            args.name, inputs, self._region(args.provider), self._account(args.provider), uid
        )
        fake = _FAKES.get(args.typ)
        if fake is not None:
            resource_id, outputs = fake(new)
            return resource_id, {**inputs, **outputs}
        service = args.typ.split(":")[1].split("/")[0]
        return new.physical, {"arn": new.arn(service, new.physical), **inputs}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """pulumi's MockMonitor, plus a record of each registration's options and outputs: the
    provider's answer for a custom resource, the registered outputs for a component and the
    stack."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.records: list[ResourceRecord] = []
        self.stack_urn: str | None = None
        self.stack_outputs: dict[str, Any] = {}
        # The engine's error for each URN registered a second time.
        self.duplicates: list[str] = []
        self._registered: dict[str, Any] = {}
        self._lock = threading.Lock()

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # pulumi's MockMonitor keeps only the parent's own type, so a renamed grandparent would
        # not show as a changed URN; the engine keeps the whole chain.
        stack, project = runtime_settings.get_stack(), runtime_settings.get_project()
        return engine_urn(stack, project, parent or None, type_, name)

    def RegisterResource(self, request: Any) -> Any:
        urn = self.make_urn(request.parent, request.type, request.name)
        with self._lock:  # registrations arrive on several executor threads at once
            first = self._registered.setdefault(urn, request)
        if first is not request:
            # Raising here would fail every Output of the resource at once; the run reports it
            # when it ends instead (run_program).
            self.duplicates.append(self._duplicate(urn, first, request))
        response = super().RegisterResource(request)
        if request.type == STACK_TYPE:
            self.stack_urn = response.urn
            return response
        parent = request.parent or None
        self.records.append(
            ResourceRecord(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=bool(request.custom),
                parent=None if parent == self.stack_urn else parent,
                provider=request.provider or None,
                dependencies=sorted(set(request.dependencies)),
                protect=bool(request.protect),
                inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                aliases=[MessageToDict(alias) for alias in request.aliases],
                replace_on_changes=list(request.replaceOnChanges),
                delete_before_replace=bool(request.deleteBeforeReplace),
                property_dependencies={
                    key: sorted(set(deps.urns))
                    for key, deps in sorted(request.propertyDependencies.items())
                    if deps.urns
                },
                outputs=self.resources[response.urn].state if request.custom else {},
                id=self.resources[response.urn].id if request.custom else "",
            )
        )
        return response

    def _duplicate(self, urn: str, first_request: Any, request: Any) -> str:
        """The Pulumi engine's own message (pkg/resource/deploy, GetDuplicateResourceURNError),
        with both registrations told apart by the inputs in which they differ."""
        first = mask_secrets(rpc.deserialize_properties(first_request.object))
        second = mask_secrets(rpc.deserialize_properties(request.object))
        differ = [k for k in sorted(set(first) | set(second)) if first.get(k) != second.get(k)]
        differ = [k for k in differ if k in second][:2]

        def show(inputs: dict[str, Any]) -> str:
            return ", ".join(f"{k}={_brief(inputs.get(k))}" for k in differ) or "same inputs"

        return (
            f"Duplicate resource URN '{urn}'; try giving it a unique name: {request.type} "
            f"{request.name!r} under {_parent_name(request.parent, self.stack_urn)} is "
            f"registered twice (first: {show(first)}; second: {show(second)})"
        )

    def RegisterResourceOutputs(self, request: Any) -> Any:
        outputs = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
        if request.urn == self.stack_urn:
            self.stack_outputs = outputs
        # A component's registered outputs are its state (`pulumi stack export`), as a custom
        # resource's are the provider's answer.
        for record in self.records:
            if record.urn == request.urn and not record.custom:
                record.outputs = outputs
        return super().RegisterResourceOutputs(request)


def _brief(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _parent_name(parent: str | None, stack_urn: str | None) -> str:
    if not parent or parent == stack_urn:
        return "the stack"
    return f"{parent.split('::')[2].rsplit('$', 1)[-1]} {parent.rsplit('::', 1)[1]!r}"


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelname.lower(), record.getMessage()))


def project_root(main_dir: Path) -> Path:
    """The folder holding Pulumi.yaml: what the host hands the program as its root directory.

    `main` must lie inside the project, as the CLI requires; anything else is an error here too.
    """
    for folder in (main_dir, *main_dir.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no Pulumi.yaml in {main_dir} or any folder above it")


def run_program(
    main_dir: Path,
    project: str,
    stack: str,
    config: Mapping[str, str],
    secret_keys: Iterable[str] = (),
    mocks: FakeCloud | None = None,
    preview: bool = False,
) -> ProgramRun:
    """Run the Pulumi program in `main_dir` once, on a fresh event loop with fresh mocks.

    Raises whatever the program raises (after the runtime has settled), as `pulumi up` would;
    EngineError for what the engine refuses. `preview` runs it as `pulumi preview` does.
    """
    problem = stack_name_problem(stack)
    if problem:
        raise EngineError(problem)
    cloud = mocks or FakeCloud()
    cloud.preview = preview
    monitor = RecordingMonitor(cloud)
    handler = _ListHandler()
    main = str(main_dir)
    root = project_root(main_dir)

    seen: dict[str, str] = {}

    def program() -> None:
        seen.update(cwd=os.getcwd(), root=runtime_settings.get_root_directory())
        runpy.run_path(main, run_name="__main__")

    sys.path.insert(0, main)
    cwd = os.getcwd()
    os.chdir(main)
    try:
        run_in_runtime(program, monitor, project, stack, config, secret_keys, root, handler,
                       dry_run=preview)  # fmt: skip
    finally:
        os.chdir(cwd)
        sys.path.remove(main)
    if monitor.duplicates:
        raise EngineError(monitor.duplicates[0])
    return ProgramRun(
        project=project,
        stack=stack,
        # Registration order depends on thread timing; URN order is stable run to run.
        resources=sorted(monitor.records, key=lambda r: r.urn),
        invokes=cloud.invokes,
        outputs=monitor.stack_outputs,
        log=handler.messages,
        working_directory=seen.get("cwd", ""),
        root_directory=seen.get("root", ""),
    )


def run_in_runtime(
    program: Callable[[], None],
    monitor: pulumi_mocks.MockMonitor,
    project: str,
    stack: str,
    config: Mapping[str, str],
    secret_keys: Iterable[str],
    root_directory: Path,
    log_handler: logging.Handler | None = None,
    dry_run: bool = False,
) -> None:
    """Run `program` as the language host would, against `monitor`."""
    logger = logging.getLogger(f"offline-engine.{stack}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers = [log_handler] if log_handler else []

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # The runtime makes its monitor calls on executor threads and gives each thread an event
    # loop of its own. Making those loops here lets us close them when the run ends, instead of
    # leaving them to the garbage collector at interpreter exit.
    thread_loops: list[asyncio.AbstractEventLoop] = []

    def give_thread_a_loop() -> None:
        thread_loop = asyncio.new_event_loop()
        asyncio.set_event_loop(thread_loop)
        thread_loops.append(thread_loop)

    loop.set_default_executor(ThreadPoolExecutor(initializer=give_thread_a_loop))
    runtime_settings.ROOT.set(None)
    runtime_settings.configure(
        pulumi_mocks.MockSettings(
            monitor=monitor,
            monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
            engine=pulumi_mocks.MockEngine(logger),
            project=project,
            stack=stack,
            dry_run=dry_run,
            organization="organization",
            root_directory=str(root_directory),
            callbacks=None,
            outputs=set(),
        )
    )
    set_all_config(dict(config), list(secret_keys))
    try:
        loop.run_until_complete(run_in_stack(program))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        for thread_loop in thread_loops:
            thread_loop.close()
        asyncio.set_event_loop(None)
        runtime_settings.ROOT.set(None)


def preview_pass_problems(update: ProgramRun, preview: ProgramRun) -> list[str]:
    """How the preview pass differs from the update pass, one line per URN.

    `pulumi preview` shows what `pulumi up` will do only if the program registers the same
    resources whether or not outputs are known (a resource created inside an `apply` is not).
    """
    updated, previewed = {r.urn for r in update.resources}, {r.urn for r in preview.resources}
    return [
        f"stack {update.stack}: {urn} is registered only when outputs are known (pulumi up), "
        "not in pulumi preview: create resources outside `apply`"
        for urn in sorted(updated - previewed)
    ] + [
        f"stack {update.stack}: {urn} is registered only in pulumi preview, not by pulumi up"
        for urn in sorted(previewed - updated)
    ]


def run_like_pulumi_up(
    main_dir: Path,
    project: str,
    stack: str,
    config: Mapping[str, str],
    secret_keys: Iterable[str] = (),
) -> ProgramRun:
    """The program run twice, as `pulumi up` does: a preview with unknown outputs, then the update.

    Returns the update's run; raises EngineError when the two register different URNs.
    """
    keys = list(secret_keys)
    previewed = run_program(main_dir, project, stack, config, keys, preview=True)
    updated = run_program(main_dir, project, stack, config, keys)
    problems = preview_pass_problems(updated, previewed)
    if problems:
        raise EngineError(f"{problems[0]} (and {len(problems) - 1} more)" if problems[1:]
                          else problems[0])  # fmt: skip
    return updated
