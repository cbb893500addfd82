"""Runs every rule over an offline-preview JSON, as CrossGuard runs them over a real preview.

The JSON's resources become pulumi-policy's own argument objects (ResourceValidationArgs for
resource rules; PolicyResource, with parents and property dependencies, for stack rules), so a
rule cannot tell which runner called it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)

from infra.policies import POLICIES, Rule


class BadPreview(ValueError):
    """The input is not an offline-preview JSON document."""


@dataclass(frozen=True, order=True)
class Violation:
    policy: str
    urn: str
    message: str
    level: str  # "mandatory" or "advisory"

    @property
    def mandatory(self) -> bool:
        return self.level == EnforcementLevel.MANDATORY.value


def _options(resource: Mapping[str, Any]) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=bool(resource.get("protect")),
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[str(a.get("urn", a)) for a in resource.get("aliases") or []],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=resource.get("parent"),
    )


def _resources(preview: object) -> list[Mapping[str, Any]]:
    resources = preview.get("resources") if isinstance(preview, dict) else None
    if not isinstance(resources, list) or not all(
        isinstance(r, Mapping) and {"urn", "type", "name", "inputs"} <= r.keys() for r in resources
    ):
        raise BadPreview("expected an object with `resources`: [{urn, type, name, inputs, ...}]")
    return resources


def stack_resources(resources: Sequence[Mapping[str, Any]]) -> list[PolicyResource]:
    """The resources as CrossGuard's stack rules see them, linked to each other by URN."""
    built = {
        r["urn"]: PolicyResource(
            r["type"], r["inputs"], r["urn"], r["name"], _options(r), None, None, [], {}
        )
        for r in resources
    }
    for r in resources:
        policy_resource = built[r["urn"]]
        policy_resource.parent = built.get(r.get("parent") or "")
        policy_resource.dependencies = [built[u] for u in r.get("dependencies") or [] if u in built]
        policy_resource.property_dependencies = {
            key: [built[u] for u in urns if u in built]
            for key, urns in (r.get("propertyDependencies") or {}).items()
        }
    return list(built.values())


def _level(rule: Rule) -> str:
    return (rule.enforcement_level or EnforcementLevel.ADVISORY).value


def check(preview: object, rules: Iterable[Rule] = POLICIES) -> list[Violation]:
    """Every violation of `rules` in an offline-preview document, sorted."""
    resources = _resources(preview)
    found: list[Violation] = []
    linked = stack_resources(resources)
    for rule in rules:

        def report(message: str, urn: str | None, rule: Rule = rule, default: str = "") -> None:
            found.append(Violation(rule.name, urn or default, message, _level(rule)))

        if isinstance(rule, ResourceValidationPolicy):
            for r in resources:
                args = ResourceValidationArgs(
                    r["type"], r["inputs"], r["urn"], r["name"], _options(r), None
                )
                rule.validate(args, lambda m, u, urn=r["urn"]: report(m, u, default=urn))
        else:
            rule.validate(StackValidationArgs(linked), report)
    return sorted(found)
