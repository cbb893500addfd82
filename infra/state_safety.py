"""State safety: the stateful resources' URNs per stack, kept in a committed snapshot.

A URN that disappears is a resource Pulumi would delete (and, if something new takes its place,
replace): for the database, a new, empty database. The check fails when a URN of the snapshot is
gone from a stack's offline preview and no resource there carries an alias to it.

    python -m infra.state_safety           # check every stack against the snapshot
    python -m infra.state_safety --update  # record the stacks' stateful URNs (a deliberate act)

Exit codes: 0 safe, 1 a stateful URN would change, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.mock_engine import engine_urn
from infra.stateful import STATEFUL_TYPES

PROJECT_DIR = Path(__file__).resolve().parent.parent
SNAPSHOT = PROJECT_DIR / "state" / "stateful-urns.json"


def stateful_urns(preview: Mapping[str, Any]) -> list[str]:
    return sorted(r["urn"] for r in preview["resources"] if r["type"] in STATEFUL_TYPES)


def alias_urns(resource: Mapping[str, Any], stack: str, project: str) -> set[str]:
    """The earlier URNs a resource answers to, from its aliases (URNs or specs)."""
    found: set[str] = set()
    for alias in resource.get("aliases") or []:
        if alias.get("urn"):
            found.add(alias["urn"])
            continue
        spec = alias.get("spec") or {}
        # An empty parentUrn means "the same parent"; noParent means the stack itself.
        parent = None if spec.get("noParent") else spec.get("parentUrn") or resource.get("parent")
        found.add(
            engine_urn(
                spec.get("stack") or stack,
                spec.get("project") or project,
                parent,
                spec.get("type") or resource["type"],
                spec.get("name") or resource["name"],
            )
        )
    return found


def problems(stack: str, recorded: Iterable[str], preview: Mapping[str, Any]) -> list[str]:
    """What would be replaced or deleted, one line each, naming the resource."""
    project = preview["project"]
    present = {r["urn"] for r in preview["resources"]}
    aliased = set().union(*(alias_urns(r, stack, project) for r in preview["resources"]))
    lines = []
    for urn in sorted(recorded):
        if urn in present or urn in aliased:
            continue
        type_, name = urn.split("::")[2].rsplit("$", 1)[-1], urn.rsplit("::", 1)[1]
        lines.append(
            f"stack {stack}: {name} ({type_}) would be deleted or replaced: its URN {urn} is "
            "gone and no resource has an alias to it. Add `aliases=[pulumi.Alias(...)]` to the "
            "renamed resource, or, if the change is meant, run `make state-snapshot`."
        )
    return lines


def unrecorded(stack: str, recorded: Iterable[str], preview: Mapping[str, Any]) -> list[str]:
    new = sorted(set(stateful_urns(preview)) - set(recorded))
    return [
        f"stack {stack}: new stateful resource {urn} is not in {SNAPSHOT.name}; "
        "run `make state-snapshot` to record it"
        for urn in new
    ]


def cluster_of(preview: Mapping[str, Any]) -> str | None:
    found = [r["inputs"].get("clusterIdentifier") for r in preview["resources"]
             if r["type"] == "pulumi:providers:kubernetes"]  # fmt: skip
    return found[0] if found else None


def throwaway(
    stack: str, preview: Mapping[str, Any], recorded: Mapping[str, Mapping[str, Any]]
) -> tuple[list[str], list[str]]:
    """A stack outside the snapshot is a throwaway one (e.g. `pr-123` copied from dev): its URNs
    are not checked, but it must not share a cluster with a recorded stack, where its
    namespaces, object names and NodePorts would be the same ones. (notes, problems)"""
    cluster = cluster_of(preview)
    shared = sorted(name for name, other in recorded.items() if cluster_of(other) == cluster)
    if shared:
        return [], [
            f"stack {stack}: a throwaway stack (not in {SNAPSHOT.name}) shares the Kubernetes "
            f"cluster {cluster} with {', '.join(shared)}, whose namespaces, object names and "
            "NodePorts it would take over; give it its own cluster (kubernetes.clusterName, "
            "README: Throwaway stacks), or run `make state-snapshot` if it is a lasting stack"
        ]
    return [
        f"stack {stack}: a throwaway stack (not in {SNAPSHOT.name}) in its own cluster "
        f"{cluster}: its URNs are not checked"
    ], []


class BadSnapshot(ValueError):
    """The snapshot file is not {stack: [stateful URN, ...]}."""


def read_snapshot(path: Path = SNAPSHOT) -> dict[str, list[str]]:
    if not path.exists():
        return {}
    try:
        snapshot = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not JSON ({exc})"
        raise BadSnapshot(f"{path}: {reason}") from None
    if not isinstance(snapshot, dict) or not all(
        isinstance(urns, list) and all(isinstance(u, str) for u in urns)
        for urns in snapshot.values()
    ):
        raise BadSnapshot(
            f"{path}: expected an object of stack name -> list of URNs; "
            "rewrite it with `make state-snapshot`"
        )
    return snapshot


def _previews(project_dir: Path, stacks: Sequence[str]) -> dict[str, dict[str, Any]]:
    from infra.mock_engine import run_program
    from infra.stackfiles import StackFileError, load_stack_config

    previews = {}
    for stack in stacks:
        try:
            config = load_stack_config(project_dir, stack)
        except StackFileError as exc:
            raise StackFileError(f"stack {stack}: {exc}") from None
        run = run_program(
            config.main_dir, config.project, config.stack, config.config, config.secret_keys
        )
        previews[stack] = run.to_json()
    return previews


def _load(project_dir: Path, update: bool, path: Path) -> tuple[Any, dict[str, list[str]]]:
    """The stacks' previews and the recorded snapshot; raises what main reports as bad input."""
    from infra.stackfiles import available_stacks

    recorded = {} if update else read_snapshot(path)  # a bad snapshot fails before any run
    return _previews(project_dir, available_stacks(project_dir)), recorded


def main(argv: Sequence[str] | None = None, project_dir: Path = PROJECT_DIR) -> int:
    from pulumi import RunError

    from infra.mock_engine import EngineError
    from infra.stackfiles import StackFileError

    parser = argparse.ArgumentParser(prog="python -m infra.state_safety")
    parser.add_argument("--update", action="store_true", help="rewrite the snapshot")
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT)
    args = parser.parse_args(argv)
    try:
        previews, recorded = _load(project_dir, args.update, args.snapshot)
    except (StackFileError, BadSnapshot, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunError as exc:  # invalid config: one line per problem, as the preview prints them
        for line in getattr(exc, "lines", None) or str(exc).splitlines()[:1]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except Exception as exc:  # a program failure is reported in one line, as the preview does
        print(f"error: the program failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.update:
        snapshot = {stack: stateful_urns(p) for stack, p in sorted(previews.items())}
        args.snapshot.parent.mkdir(parents=True, exist_ok=True)
        args.snapshot.write_text(json.dumps(snapshot, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.snapshot}: {sum(map(len, snapshot.values()))} stateful URNs")
        return 0
    lines: list[str] = []
    known = {stack: preview for stack, preview in previews.items() if stack in recorded}
    for stack, preview in sorted(previews.items()):
        if stack not in recorded:
            notes, found = throwaway(stack, preview, known)
            for note in notes:
                print(f"note: {note}")
            lines += found
            continue
        lines += problems(stack, recorded[stack], preview)
        lines += unrecorded(stack, recorded[stack], preview)
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    print("state safety: " + ("FAILED" if lines else "every stateful URN is unchanged"))
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
