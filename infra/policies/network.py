"""Network: nothing open to the internet, and the database reachable only from known groups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pulumi_policy import PolicyResource, ResourceValidationArgs

from infra.policies._rules import get, resource_rule, stack_rule

CATEGORY = "network"
GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
OPEN = {"0.0.0.0/0", "::/0"}


def _open_sources(rule: Mapping[str, Any]) -> set[str]:
    """The any-address sources of one ingress rule, whichever resource shape it has."""
    sources = {rule.get("cidrIpv4"), rule.get("cidrIpv6")}
    sources |= set(rule.get("cidrBlocks") or []) | set(rule.get("ipv6CidrBlocks") or [])
    return {s for s in sources if s in OPEN}


def _no_open_ingress(args: ResourceValidationArgs) -> Iterable[str]:
    props = args.props
    if args.resource_type == GROUP:
        rules = [r for r in props.get("ingress") or [] if isinstance(r, Mapping)]
    elif args.resource_type == RULE and props.get("type") != "ingress":
        rules = []
    else:
        rules = [props]
    for rule in rules:
        for source in sorted(_open_sources(rule)):
            yield f"ingress from {source} opens this group to the whole internet"


def _described(args: ResourceValidationArgs) -> Iterable[str]:
    props = args.props
    if args.resource_type == GROUP:
        inline = [*(props.get("ingress") or []), *(props.get("egress") or [])]
        rules = [r for r in inline if isinstance(r, Mapping)]
    else:
        rules = [props]
    for rule in rules:
        if not str(rule.get("description") or "").strip():
            yield "a security group rule without a description: say what it lets through and why"


def _database_port(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    """Every way into a database's security group is its port, from a security group."""
    by_urn = {r.urn: r for r in resources}
    for db in resources:
        if db.resource_type != "aws:rds/instance:Instance":
            continue
        port = db.props.get("port")
        groups = {d.urn for d in db.property_dependencies.get("vpcSecurityGroupIds", [])}
        for urn in sorted(groups):
            group = by_urn.get(urn)
            if group is not None and get(group.props, "ingress"):
                yield (
                    urn,
                    "the database's security group has inline ingress rules; use "
                    "SecurityGroupIngressRule resources from named security groups",
                )
        for rule in resources:
            if rule.resource_type != INGRESS:
                continue
            targets = {d.urn for d in rule.property_dependencies.get("securityGroupId", [])}
            if not targets & groups:
                continue
            if not rule.props.get("referencedSecurityGroupId"):
                yield (
                    rule.urn,
                    (
                        "the database port is open to an address range; allow only "
                        "known security groups (referencedSecurityGroupId)"
                    ),
                )
            if (rule.props.get("fromPort"), rule.props.get("toPort")) != (port, port):
                yield (
                    rule.urn,
                    (
                        f"ports {rule.props.get('fromPort')}-{rule.props.get('toPort')}"
                        f" are open on the database's group; only {port} may be"
                    ),
                )


POLICIES = [
    resource_rule("no-internet-ingress", CATEGORY,
                  "No security group accepts traffic from 0.0.0.0/0 or ::/0.",
                  [GROUP, INGRESS, RULE], _no_open_ingress,
                  "Reference the calling security group (referenced_security_group_id) instead "
                  "of an address range; the API gateway is the only public entry."),
    resource_rule("security-group-rule-descriptions", CATEGORY,
                  "Every security group rule has a description.", [GROUP, INGRESS, EGRESS, RULE],
                  _described, "Pass description= to the rule: what it lets through and why "
                  "(infra/api_gateway.py, infra/database.py)."),
    stack_rule("database-port-from-known-groups", CATEGORY,
               "The database's security group admits only its port, only from security groups.",
               _database_port, "Allow the database port with a SecurityGroupIngressRule whose "
               "referenced_security_group_id is the cluster nodes' group."),
]  # fmt: skip
