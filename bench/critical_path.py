"""The deploy's critical path: the longest dependency chain, weighted by typical creation times.

A resource starts when everything it depends on exists; depending on a component means waiting
for all of that component's children. The times are typical first-creation times in minutes
(AWS and Kubernetes documentation and experience); they matter relative to each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from infra.mock_engine import ProgramRun, ResourceRecord

# Typical creation time, minutes, by resource type (prefix match for families).
CREATE_MINUTES: dict[str, float] = {
    "aws:rds/instance:Instance": 15.0,  # Multi-AZ, encrypted, with a parameter group
    "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication": 5.0,
    "aws:lb/loadBalancer:LoadBalancer": 3.0,
    "aws:apigatewayv2/vpcLink:VpcLink": 3.0,
    "aws:apigatewayv2/domainName:DomainName": 1.0,
    "docker:index/image:Image": 4.0,  # build and push
    "kubernetes:apps/v1:Deployment": 1.0,  # rollout until ready
    "kubernetes:batch/v1:Job": 0.5,  # the database role bootstrap: image pull, a few statements
    "kubernetes:core/v1:Namespace": 0.1,
    "aws:ecr/repository:Repository": 0.1,
    "aws:kms/key:Key": 0.2,
    "aws:iam/role:Role": 0.2,  # IAM eventual consistency
    "aws:rds/": 0.5,  # subnet and parameter groups
    "aws:lb/": 0.2,
    "aws:cloudwatch/dashboard:Dashboard": 0.05,
}
DEFAULT_MINUTES = 0.05  # everything else: a single API call


def minutes(resource_type: str) -> float:
    if resource_type in CREATE_MINUTES:
        return CREATE_MINUTES[resource_type]
    prefixes = [p for p in CREATE_MINUTES if p.endswith("/") and resource_type.startswith(p)]
    return CREATE_MINUTES[max(prefixes, key=len)] if prefixes else DEFAULT_MINUTES


@dataclass(frozen=True)
class CriticalPath:
    minutes: float
    chain: tuple[ResourceRecord, ...]
    slowest: ResourceRecord


def critical_path(run: ProgramRun) -> CriticalPath:
    by_urn = {r.urn: r for r in run.resources}
    children: dict[str, list[str]] = {}
    for r in run.resources:
        if r.parent:
            children.setdefault(r.parent, []).append(r.urn)

    def leaves(urn: str) -> list[str]:
        """A component stands for its custom descendants."""
        record = by_urn.get(urn)
        if record is None:
            return []
        if record.custom:
            return [urn]
        return [leaf for child in children.get(urn, []) for leaf in leaves(child)]

    waits: Mapping[str, set[str]] = {
        r.urn: {leaf for dep in r.dependencies for leaf in leaves(dep)} - {r.urn}
        for r in run.resources
        if r.custom
    }

    @cache
    def finish(urn: str) -> tuple[float, tuple[str, ...]]:
        before = max((finish(d) for d in waits[urn]), default=(0.0, ()))
        return before[0] + minutes(by_urn[urn].type), (*before[1], urn)

    total, chain = max((finish(u) for u in waits), default=(0.0, ()))
    customs = [r for r in run.resources if r.custom]
    slowest = max(customs, key=lambda r: minutes(r.type))
    return CriticalPath(total, tuple(by_urn[u] for u in chain), slowest)
