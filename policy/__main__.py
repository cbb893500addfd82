"""The CrossGuard policy pack: every rule of infra/policies, unchanged.

pulumi preview --policy-pack policy
"""

import sys
from pathlib import Path

# The host runs this folder with it first on sys.path. Here in the repository the rules live in
# the root's `infra` package; a published build (make policy-pack) carries its own copy beside
# this file.
if not (Path(__file__).resolve().parent / "infra").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi_policy

from infra.policies import POLICIES

pulumi_policy.PolicyPack(
    name="analytics-platform",
    policies=list(POLICIES),
    description="Security, data-safety and cost rules of the analytics platform",
)
