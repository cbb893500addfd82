"""What a change does to a stack: two offline-preview JSON documents compared, as markdown.

    python -m infra.preview --stack NAME --diff BASE.json

Resources are matched by URN, or through an alias to the earlier URN (a rename). The summary is
grouped by component (the resource's parent), lists what is added, removed and changed, with the
changed property paths and their old and new values. Secrets are "[secret]" in both documents
already. A stateful resource whose URN disappears gets a `WARNING:` line: Pulumi would delete it,
or replace it with a new, empty one.
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


@dataclass
class Change:
    resource: Resource
    # property path -> (old, new); "<absent>" where a side has no value
    properties: dict[str, tuple[Any, Any]]
    renamed_from: str | None = None


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
    def warnings(self) -> list[str]:
        return [
            f"WARNING: stateful resource {r['name']} ({r['type']}) would be deleted or "
            f"replaced: its URN {r['urn']} disappears and no resource has an alias to it"
            for r in self.removed
            if r["type"] in STATEFUL_TYPES
        ]


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
            diff.changed.append(Change(resource, properties, renamed))
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
    lines.extend(diff.warnings)
    if diff.warnings:
        lines.append("")
    lines.append(
        f"{len(diff.added)} to add, {len(diff.changed)} to change, {len(diff.removed)} to remove."
    )
    groups: dict[str, list[str]] = {}
    for r in diff.added:
        groups.setdefault(_component(r), []).append(f"- **add** `{r['type']}` `{r['name']}`")
    for r in diff.removed:
        groups.setdefault(_component(r), []).append(f"- **remove** `{r['type']}` `{r['name']}`")
    for change in diff.changed:
        r = change.resource
        entry = [f"- **change** `{r['type']}` `{r['name']}`"]
        if change.renamed_from:
            entry[0] += f" (renamed from `{change.renamed_from.rsplit('::', 1)[1]}`, aliased)"
        shown = list(change.properties.items())
        for path, (old, new) in shown[:_MAX_PATHS]:
            entry.append(f"  - `{path}`: {_show(old)} → {_show(new)}")
        if len(shown) > _MAX_PATHS:
            entry.append(f"  - … and {len(shown) - _MAX_PATHS} more properties")
        groups.setdefault(_component(r), []).extend(entry)
    for component in sorted(groups):
        lines += ["", f"#### {component}", *groups[component]]
    return "\n".join(lines) + "\n"
