"""What a change does to a stack: two offline-preview JSON documents compared, as markdown.

    python -m infra.preview --stack NAME --diff BASE.json

Resources are matched by URN, or through an alias to the earlier URN (a rename). The summary is
grouped by component (the resource's parent), lists what is added, removed, updated in place and
replaced, with the changed property paths and their old and new values. Secrets are "[secret]"
in both documents already. A stateful resource that disappears or is replaced gets a `WARNING:`
line (a new, empty one takes its place); a protected one a `BLOCKED:` line, since `pulumi up`
refuses to delete a protected resource. A resource that loses `protect` gets a `WARNING:` line
too: the next plan that deletes it is no longer refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.state_safety import alias_urns
from infra.stateful import STATEFUL_TYPES

Resource = Mapping[str, Any]
_MAX_VALUE = 80
_MAX_PATHS = 25

# Inputs whose change makes the provider create a new resource and delete the old one (ForceNew
# in the schema the Pulumi AWS provider is bridged from: hashicorp/terraform-provider-aws,
# internal/service/<service>/<resource>.go). Stateful types first; a path below a listed input
# (`encryptionConfigurations[0].kmsKey`) replaces too.
REPLACE_ON: dict[str, frozenset[str]] = {
    "aws:rds/instance:Instance": frozenset({
        "identifier", "identifierPrefix", "dbName", "engine", "username", "kmsKeyId",
        "storageEncrypted", "availabilityZone", "characterSetName", "ncharCharacterSetName",
        "timezone", "snapshotIdentifier", "restoreToPointInTime", "s3Import",
        "customIamInstanceProfile",
    }),
    "aws:kms/key:Key": frozenset({
        "keyUsage", "customerMasterKeySpec", "multiRegion", "customKeyStoreId", "xksKeyId",
    }),
    "aws:sns/topic:Topic": frozenset({"name", "namePrefix", "fifoTopic"}),
    "aws:cloudwatch/logGroup:LogGroup": frozenset({"name", "namePrefix", "logGroupClass"}),
    "aws:ecr/repository:Repository": frozenset({"name", "encryptionConfigurations"}),
    "aws:rds/subnetGroup:SubnetGroup": frozenset({"name", "namePrefix"}),
    "aws:rds/parameterGroup:ParameterGroup": frozenset({"name", "namePrefix", "family"}),
    "aws:ec2/securityGroup:SecurityGroup": frozenset({
        "name", "namePrefix", "vpcId", "description",
    }),
    "aws:lb/loadBalancer:LoadBalancer": frozenset({
        "name", "namePrefix", "internal", "loadBalancerType",
    }),
    "aws:lb/targetGroup:TargetGroup": frozenset({
        "name", "namePrefix", "port", "protocol", "targetType", "vpcId",
    }),
    "aws:iam/role:Role": frozenset({"name", "namePrefix"}),
}  # fmt: skip
# Kubernetes objects are replaced when their identity changes (pulumi-kubernetes), and a
# Deployment also when its immutable selector does.
_KUBERNETES_REPLACE_ON = frozenset({"metadata.name", "metadata.namespace"})
_IMMUTABLE = {"kubernetes:apps/v1:Deployment": frozenset({"spec.selector"})}


def replace_keys(type_: str) -> frozenset[str]:
    """The input paths whose change replaces a resource of `type_`."""
    keys = REPLACE_ON.get(type_, frozenset())
    if type_.startswith("kubernetes:"):
        keys = keys | _KUBERNETES_REPLACE_ON | _IMMUTABLE.get(type_, frozenset())
    return keys


def _replaces(type_: str, path: str) -> bool:
    return any(
        path == key or path.startswith((f"{key}.", f"{key}[")) for key in replace_keys(type_)
    )


@dataclass
class Change:
    resource: Resource
    # property path -> (old, new); "<absent>" where a side has no value
    properties: dict[str, tuple[Any, Any]]
    renamed_from: str | None = None
    protected_before: bool = False

    @property
    def replaced_by(self) -> list[str]:
        """The changed paths that make the provider replace the resource (none: an update)."""
        return [p for p in self.properties if _replaces(str(self.resource["type"]), p)]

    @property
    def action(self) -> str:
        return "replace" if self.replaced_by else "update"

    @property
    def protect_change(self) -> str | None:
        """ "protect added" or "protect removed", when the resource option changes."""
        if "(protect)" not in self.properties:
            return None
        return "protect added" if self.properties["(protect)"][1] else "protect removed"


@dataclass
class PlanDiff:
    stack: str
    added: list[Resource] = field(default_factory=list)
    removed: list[Resource] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    @property
    def updated(self) -> list[Change]:
        return [c for c in self.changed if c.action == "update"]

    @property
    def replaced(self) -> list[Change]:
        return [c for c in self.changed if c.action == "replace"]

    @property
    def blocked(self) -> list[str]:
        """What `pulumi up` would refuse: deleting or replacing a protected resource."""
        removed = [
            f"BLOCKED: protected resource {r['name']} ({r['type']}) would be deleted; "
            "`pulumi up` refuses to delete a protected resource"
            for r in self.removed
            if r.get("protect")
        ]
        replaced = [
            f"BLOCKED: protected resource {c.resource['name']} ({c.resource['type']}) would be "
            f"replaced (by {', '.join(c.replaced_by)}); `pulumi up` refuses to delete the old one"
            for c in self.replaced
            if c.protected_before
        ]
        return removed + replaced

    @property
    def warnings(self) -> list[str]:
        return (
            [
                f"WARNING: stateful resource {r['name']} ({r['type']}) would be deleted or "
                f"replaced: its URN {r['urn']} disappears and no resource has an alias to it"
                for r in self.removed
                if r["type"] in STATEFUL_TYPES
            ]
            + [
                f"WARNING: stateful resource {c.resource['name']} ({c.resource['type']}) would be "
                f"replaced by a new, empty one: {', '.join(c.replaced_by)} cannot change in place"
                for c in self.replaced
                if c.resource["type"] in STATEFUL_TYPES
            ]
            + [
                f"WARNING: {c.resource['name']} ({c.resource['type']}) is no longer protected: "
                "`pulumi up` will not refuse to delete it"
                for c in self.changed
                if c.protect_change == "protect removed"
            ]
        )


ABSENT = "<absent>"


def _flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key in sorted(value):
            yield from _flatten(value[key], f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from _flatten(item, f"{path}[{i}]")
    else:
        yield path, value


def _property_changes(old: Resource, new: Resource) -> dict[str, tuple[Any, Any]]:
    before = dict(_flatten(old.get("inputs") or {}))
    after = dict(_flatten(new.get("inputs") or {}))
    if bool(old.get("protect")) != bool(new.get("protect")):
        before["(protect)"], after["(protect)"] = bool(old.get("protect")), bool(new.get("protect"))
    return {
        path: (before.get(path, ABSENT), after.get(path, ABSENT))
        for path in sorted(set(before) | set(after))
        if before.get(path, ABSENT) != after.get(path, ABSENT)
    }


def compare(base: Mapping[str, Any], head: Mapping[str, Any]) -> PlanDiff:
    stack = str(head.get("stack", ""))
    project = str(head.get("project", ""))
    old = {r["urn"]: r for r in base.get("resources", [])}
    new = {r["urn"]: r for r in head.get("resources", [])}
    # A head resource with an alias to a base URN is that resource, renamed.
    previous = {
        urn: next((a for a in sorted(alias_urns(r, stack, project)) if a in old), None)
        for urn, r in new.items()
        if urn not in old
    }
    diff = PlanDiff(stack)
    matched: set[str] = set()
    for urn, resource in sorted(new.items()):
        before_urn = urn if urn in old else previous.get(urn)
        if before_urn is None:
            diff.added.append(resource)
            continue
        matched.add(before_urn)
        properties = _property_changes(old[before_urn], resource)
        renamed = before_urn if before_urn != urn else None
        if properties or renamed:
            protected = bool(old[before_urn].get("protect"))
            diff.changed.append(Change(resource, properties, renamed, protected))
    diff.removed = [r for urn, r in sorted(old.items()) if urn not in matched]
    return diff


def _component(resource: Resource) -> str:
    parent = resource.get("parent")
    return str(parent).rsplit("::", 1)[1] if parent else "(stack)"


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def render(diff: PlanDiff) -> str:
    lines = [f"### Plan diff: `{diff.stack}`", ""]
    if diff.empty:
        lines.append(f"No changes: the `{diff.stack}` stack is the same as on the base branch.")
        return "\n".join(lines) + "\n"
    alerts = diff.blocked + diff.warnings
    lines.extend(alerts)
    if alerts:
        lines.append("")
    lines.append(
        f"{len(diff.added)} to add, {len(diff.updated)} to update in place, "
        f"{len(diff.replaced)} to replace, {len(diff.removed)} to remove."
    )
    groups: dict[str, list[str]] = {}
    for r in diff.added:
        groups.setdefault(_component(r), []).append(f"- **add** `{r['type']}` `{r['name']}`")
    for r in diff.removed:
        flag = " [protected]" if r.get("protect") else ""
        groups.setdefault(_component(r), []).append(
            f"- **remove** `{r['type']}` `{r['name']}`{flag}"
        )
    for change in diff.changed:
        r = change.resource
        entry = [f"- **{change.action}** `{r['type']}` `{r['name']}`"]
        if change.replaced_by:
            entry[0] += f" (replaced because {', '.join(change.replaced_by)} changes)"
        if change.protect_change:
            entry[0] += f" (**{change.protect_change}**)"
        if change.renamed_from:
            entry[0] += f" (renamed from `{change.renamed_from.rsplit('::', 1)[1]}`, aliased)"
        shown = list(change.properties.items())
        for path, (old, new) in shown[:_MAX_PATHS]:
            forces = " (forces replacement)" if path in change.replaced_by else ""
            entry.append(f"  - `{path}`: {_show(old)} → {_show(new)}{forces}")
        if len(shown) > _MAX_PATHS:
            entry.append(f"  - … and {len(shown) - _MAX_PATHS} more properties")
        groups.setdefault(_component(r), []).extend(entry)
    for component in sorted(groups):
        lines += ["", f"#### {component}", *groups[component]]
    return "\n".join(lines) + "\n"
