"""The resource types that hold data or keys: never to be replaced or deleted by accident.

Shared by the policy rules (protect in prod), the state-safety snapshot and the plan diff.
"""

from __future__ import annotations

STATEFUL_TYPES = frozenset(
    {
        "aws:rds/instance:Instance",
        "aws:kms/key:Key",
        "aws:cloudwatch/logGroup:LogGroup",
        "aws:ecr/repository:Repository",
        "aws:sns/topic:Topic",
    }
)
