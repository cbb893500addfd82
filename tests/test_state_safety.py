"""State safety: no stateful resource changes URN (is replaced or deleted) without an alias."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.state_safety import (
    SNAPSHOT,
    alias_urns,
    main,
    problems,
    read_snapshot,
    stateful_urns,
    throwaway,
    unrecorded,
)
from tests.conftest import (
    PROJECT,
    STACKS,
    RunStack,
    preview_of_copy,
    renamed_database,
    unchanged_run,
)


def _preview(stack: str) -> dict[str, Any]:
    return json.loads(json.dumps(unchanged_run(stack).to_json()))


@pytest.mark.parametrize("stack", STACKS)
def test_no_stateful_urn_of_any_stack_differs_from_the_snapshot(stack: str) -> None:
    recorded = read_snapshot()[stack]
    preview = _preview(stack)
    assert problems(stack, recorded, preview) == []
    assert unrecorded(stack, recorded, preview) == []
    kinds = {urn.split("::")[2].rsplit("$", 1)[-1] for urn in recorded}
    assert kinds == {"aws:rds/instance:Instance", "aws:kms/key:Key", "aws:sns/topic:Topic",
                     "aws:cloudwatch/logGroup:LogGroup",
                     "aws:ecr/repository:Repository"}  # fmt: skip


def test_renaming_the_database_fails_and_names_the_database(tmp_path: Path) -> None:
    preview = preview_of_copy("prod", renamed_database(tmp_path, "analytics-db", alias=False))
    [line] = problems("prod", read_snapshot()["prod"], preview)
    assert line.startswith(
        "stack prod: database (aws:rds/instance:Instance) would be deleted or replaced"
    )
    assert "no resource has an alias to it" in line


def test_an_alias_keeps_a_renamed_database_safe(tmp_path: Path) -> None:
    preview = preview_of_copy("prod", renamed_database(tmp_path, "analytics-db", alias=True))
    [db] = [r for r in preview["resources"] if r["type"] == "aws:rds/instance:Instance"]
    assert db["name"] == "analytics-db"
    assert any(urn.endswith("::database") for urn in alias_urns(db, "prod", PROJECT))
    assert problems("prod", read_snapshot()["prod"], preview) == []


def test_alias_specs_resolve_parent_and_type_changes() -> None:
    parent = "urn:pulumi:s::p::a:b:Outer$a:b:Inner::inner"
    moved = {"type": "aws:sns/topic:Topic", "name": "t", "parent": parent,
             "aliases": [{"spec": {"noParent": True}},
                         {"spec": {"parentUrn": "urn:pulumi:s::p::a:b:Old::old", "name": "t0"}},
                         {"urn": "urn:pulumi:s::p::x:y:Z::given"}]}  # fmt: skip
    assert alias_urns(moved, "s", "p") == {
        "urn:pulumi:s::p::aws:sns/topic:Topic::t",
        "urn:pulumi:s::p::a:b:Old$aws:sns/topic:Topic::t0",
        "urn:pulumi:s::p::x:y:Z::given",
    }


def test_updating_the_snapshot_is_a_deliberate_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "stateful-urns.json"
    assert main(["--update", "--snapshot", str(snapshot)]) == 0
    assert json.loads(snapshot.read_text()) == read_snapshot(SNAPSHOT)
    assert main(["--snapshot", str(snapshot)]) == 0
    recorded = json.loads(snapshot.read_text())
    recorded["dev"].append(recorded["dev"][0].replace("::alerts-key", "::old-alerts-key"))
    snapshot.write_text(json.dumps(recorded))
    capsys.readouterr()
    assert main(["--snapshot", str(snapshot)]) == 1
    assert "stack dev: old-alerts-key (aws:kms/key:Key) would be deleted" in capsys.readouterr().err
    assert stateful_urns({"resources": []}) == []


def _throwaway(run_stack: RunStack, cluster: str) -> tuple[list[str], list[str]]:
    """A stack `pr-123` copied from dev, as the README suggests, checked against the snapshot's
    stacks."""
    copy = run_stack("dev", name="pr-123", overrides={"kubernetes": {"clusterName": cluster}})
    recorded = {stack: _preview(stack) for stack in STACKS}
    return throwaway("pr-123", json.loads(json.dumps(copy.to_json())), recorded)


def test_a_throwaway_stack_in_devs_cluster_is_refused_with_the_reason(run_stack: RunStack) -> None:
    """Kubernetes docs, "Service" (type NodePort): a NodePort is allocated cluster-wide, and a
    namespace name is unique in a cluster: a copy of dev in dev's cluster takes over dev's."""
    notes, found = _throwaway(run_stack, "analytics-dev")
    assert notes == []
    assert found == [
        "stack pr-123: a throwaway stack (not in stateful-urns.json) shares the Kubernetes "
        "cluster analytics-dev with dev, whose namespaces, object names and NodePorts it would "
        "take over; give it its own cluster (kubernetes.clusterName, README: Throwaway stacks), "
        "or run `make state-snapshot` if it is a lasting stack"
    ]


def test_a_throwaway_stack_in_its_own_cluster_passes_with_a_note(run_stack: RunStack) -> None:
    assert _throwaway(run_stack, "analytics-pr-123") == (
        ["stack pr-123: a throwaway stack (not in stateful-urns.json) in its own cluster "
         "analytics-pr-123: its URNs are not checked"],
        [],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not JSON"),
        ('{"dev": "urn:pulumi:dev::p::t::n"}', "expected an object of stack name -> list of URNs"),
        ("[]", "expected an object of stack name -> list of URNs"),
    ],
)
def test_a_malformed_snapshot_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, says: str
) -> None:
    snapshot = tmp_path / "stateful-urns.json"
    snapshot.write_text(content)
    assert main(["--snapshot", str(snapshot)]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"error: {snapshot}: ")
    assert says in line
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("stack_file", "says"),
    [
        ("config:\n  pulumi:disable-default-providers: ['*']\n"
         "  analytics-platform:environment: qa\n",
         "stack broken: analytics-platform:environment = \"qa\""),
        ("config: [", "stack broken: Pulumi.broken.yaml: malformed YAML"),
    ],
)  # fmt: skip
def test_an_invalid_stack_file_exits_2_with_one_line_per_problem(
    project_copy: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    stack_file: str,
    says: str,
) -> None:
    project = project_copy("broken", stack_file)
    assert main(["--snapshot", str(SNAPSHOT)], project_dir=project) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert any(says in line for line in lines), lines
    assert all(line.startswith("error: stack broken: ") for line in lines)
    assert "Traceback" not in captured.err
