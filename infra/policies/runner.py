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
from infra.state_safety import alias_urns


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


def _options(resource: Mapping[str, Any], stack: str, project: str) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=bool(resource.get("protect")),
        ignore_changes=[],
        delete_before_replace=None,
        # CrossGuard hands rules the earlier URNs; the JSON has the alias specs the SDK sent.
        aliases=sorted(alias_urns(resource, stack, project)),
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=resource.get("parent"),
    )


_SHAPES = {"urn": str, "type": str, "name": str, "inputs": dict}


def _document(preview: object) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]]:
    """The preview and its resources, once their shape is checked (naming the first bad entry)."""
    resources = preview.get("resources") if isinstance(preview, dict) else None
    if not isinstance(preview, dict) or not isinstance(resources, list):
        raise BadPreview("expected an object with `resources`: [{urn, type, name, inputs, ...}]")
    for i, resource in enumerate(resources):
        for key, kind in _SHAPES.items():
            value = resource.get(key) if isinstance(resource, dict) else None
            if not isinstance(value, kind):
                raise BadPreview(
                    f"resources[{i}].{key} is missing or not a {kind.__name__}; "
                    "write the preview with python -m infra.preview --json"
                )
    return preview, resources


def stack_resources(
    resources: Sequence[Mapping[str, Any]], options: Mapping[str, PolicyResourceOptions]
) -> list[PolicyResource]:
    """The resources as CrossGuard's stack rules see them, linked to each other by URN."""
    built = {
        r["urn"]: PolicyResource(
            r["type"], r["inputs"], r["urn"], r["name"], options[r["urn"]], None, None, [], {}
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
    document, resources = _document(preview)
    stack, project = str(document.get("stack", "")), str(document.get("project", ""))
    options = {r["urn"]: _options(r, stack, project) for r in resources}
    each = [
        ResourceValidationArgs(r["type"], r["inputs"], r["urn"], r["name"], options[r["urn"]], None)
        for r in resources
    ]
    linked = stack_resources(resources, options)
    found: list[Violation] = []
    for rule in rules:

        def report(message: str, urn: str | None, rule: Rule = rule, default: str = "") -> None:
            found.append(Violation(rule.name, urn or default, message, _level(rule)))

        if isinstance(rule, ResourceValidationPolicy):
            for args in each:
                rule.validate(args, lambda m, u, urn=args.urn: report(m, u, default=urn))
        else:
            rule.validate(StackValidationArgs(linked), report)
    return sorted(found)
