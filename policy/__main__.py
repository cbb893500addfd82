"""The CrossGuard policy pack: every rule of infra/policies, unchanged.

pulumi preview --policy-pack policy
"""

import sys
from pathlib import Path

# The pack runs from this folder; the rules live in the repository's `infra` package.
if str(Path(__file__).resolve().parent.parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi_policy

from infra.policies import POLICIES

pulumi_policy.PolicyPack(
    name="analytics-platform",
    policies=list(POLICIES),
    description="Security, data-safety and cost rules of the analytics platform",
)
