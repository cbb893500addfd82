"""The platform's policy rules: one set, run by CrossGuard (policy/) and offline (pytest, CLI).

    python -m infra.policies PREVIEW.json     # an offline-preview JSON (python -m infra.preview)

Each module holds one category; `POLICIES` is every rule, in the order the README lists them.
"""

from __future__ import annotations

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

from infra.policies import api, data, ecr, kubernetes, network, rds, stack, tracing

Rule = ResourceValidationPolicy | StackValidationPolicy

POLICIES: list[Rule] = [
    *rds.POLICIES,
    *network.POLICIES,
    *api.POLICIES,
    *data.POLICIES,
    *ecr.POLICIES,
    *kubernetes.POLICIES,
    *tracing.POLICIES,
    *stack.POLICIES,
]
BY_NAME: dict[str, Rule] = {p.name: p for p in POLICIES}
