"""The existing VPC the platform runs in: its private subnets, checked against AWS."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.component import StackContext
from infra.settings import InvalidConfig, NetworkSettings, Problem


def private_subnet_ids(
    parent: pulumi.Resource, network: NetworkSettings, ctx: StackContext
) -> pulumi.Output[list[str]]:
    """The configured subnet ids, once AWS confirms they are in the VPC and in distinct AZs.

    Everything placed in these subnets takes this Output, so a bad subnet stops the deployment
    before any of it is created. The lookup filters on the VPC: a subnet of another VPC is
    not found.
    """
    opts = pulumi.InvokeOutputOptions(parent=parent)
    lookups = [
        aws.ec2.get_subnet_output(id=subnet_id, vpc_id=network.vpc_id, opts=opts)
        for subnet_id in network.private_subnet_ids
    ]

    def check(subnets: list[aws.ec2.GetSubnetResult]) -> list[str]:
        seen: dict[str, str] = {}
        for subnet in subnets:
            if subnet.availability_zone in seen:
                raise InvalidConfig(
                    ctx.project,
                    ctx.stack,
                    [
                        Problem(
                            "network.privateSubnetIds",
                            f'["{seen[subnet.availability_zone]}", "{subnet.id}", ...]',
                            f"both subnets are in {subnet.availability_zone}; "
                            "allowed: subnets in distinct availability zones",
                        )
                    ],
                )
            seen[subnet.availability_zone] = subnet.id
        return [subnet.id for subnet in subnets]

    return pulumi.Output.all(*lookups).apply(check)
