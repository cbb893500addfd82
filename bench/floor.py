"""The floor: what Pulumi's own runtime costs for a stack's resources, with no project code.

The resources a preview recorded are replayed, with the same types, names, inputs and parents,
through bare `pulumi.CustomResource` / `ComponentResource` registration against pulumi's plain
MockMonitor and trivial mocks, on the same event-loop setup as the offline engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks

from infra.mock_engine import ProgramRun, ResourceRecord, reveal_all, run_in_runtime
from infra.preview import PROJECT_DIR


class TrivialMocks(pulumi_mocks.Mocks):
    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        return {}, []


def _depth(record: ResourceRecord, by_urn: dict[str, ResourceRecord]) -> int:
    depth, parent = 0, record.parent
    while parent in by_urn:
        depth, parent = depth + 1, by_urn[parent].parent
    return depth


def replay_program(run: ProgramRun) -> Callable[[], None]:
    by_urn = {r.urn: r for r in run.resources}
    ordered = sorted(run.resources, key=lambda r: (_depth(r, by_urn), r.urn))

    def program() -> None:
        made: dict[str, pulumi.Resource] = {}
        for r in ordered:
            opts = pulumi.ResourceOptions(parent=made.get(r.parent or ""))
            props = reveal_all(r.inputs)
            if not r.custom:
                resource: pulumi.Resource = pulumi.ComponentResource(r.type, r.name, None, opts)
            elif r.type.startswith("pulumi:providers:"):
                resource = pulumi.ProviderResource(r.type.split(":")[2], r.name, props, opts)
            else:
                resource = pulumi.CustomResource(r.type, r.name, props, opts)
            made[r.urn] = resource

    return program


def run_floor(run: ProgramRun, program: Callable[[], None]) -> None:
    monitor = pulumi_mocks.MockMonitor(TrivialMocks())
    run_in_runtime(program, monitor, run.project, run.stack, {}, [], PROJECT_DIR)
