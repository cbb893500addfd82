"""State safety: no stateful resource changes URN (is replaced or deleted) without an alias."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.state_safety import (
    SNAPSHOT,
    BadSnapshot,
    alias_urns,
    cluster_of,
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
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "stateful-urns.json"
    assert main(["--update", "--snapshot", str(snapshot)]) == 0  # the program, run for real
    assert json.loads(snapshot.read_text()) == read_snapshot(SNAPSHOT)
    use_shared_previews(monkeypatch)
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


# Each part on its own, on small hand-written previews: the lines word for word.
DB_URN = "urn:pulumi:s::p::a:b:Outer$aws:rds/instance:Instance::db"
KEY_URN = "urn:pulumi:s::p::aws:kms/key:Key::key"


def _resource(type_: str, name: str, **more: Any) -> dict[str, Any]:
    return {"urn": f"urn:pulumi:s::p::{type_}::{name}", "type": type_, "name": name, **more}


def test_a_vanished_urn_is_one_line_naming_the_resource_its_type_and_the_fix() -> None:
    preview = {"project": "p", "resources": [_resource("aws:kms/key:Key", "key")]}
    assert problems("s", [DB_URN, KEY_URN, "urn:pulumi:s::p::aws:sns/topic:Topic::a"], preview) == [
        f"stack s: db (aws:rds/instance:Instance) would be deleted or replaced: its URN {DB_URN} "
        "is gone and no resource has an alias to it. Add `aliases=[pulumi.Alias(...)]` to the "
        "renamed resource, or, if the change is meant, run `make state-snapshot`.",
        "stack s: a (aws:sns/topic:Topic) would be deleted or replaced: its URN "
        "urn:pulumi:s::p::aws:sns/topic:Topic::a is gone and no resource has an alias to it. Add "
        "`aliases=[pulumi.Alias(...)]` to the renamed resource, or, if the change is meant, run "
        "`make state-snapshot`.",
    ]


def test_an_alias_in_the_checked_stack_and_project_covers_a_vanished_urn() -> None:
    renamed = _resource("aws:kms/key:Key", "new-key", aliases=[{"spec": {"name": "key"}}])
    preview = {"project": "p", "resources": [renamed]}
    assert problems("s", [KEY_URN], preview) == []
    assert problems("other", [KEY_URN], preview) != []
    assert problems("s", [KEY_URN], {"project": "q", "resources": [renamed]}) != []


def test_an_alias_spec_may_change_stack_project_type_and_name() -> None:
    parent = "urn:pulumi:s::p::a:b:Outer::outer"
    resource = {"type": "aws:sns/topic:Topic", "name": "t", "parent": parent, "aliases": [
        {"spec": {"stack": "old", "project": "oldp", "type": "aws:sns/oldTopic:Topic",
                  "name": "t0"}},
        {"spec": {"parentUrn": ""}},
        {"urn": "", "spec": {"name": "t1"}},
        {},
    ]}  # fmt: skip
    assert alias_urns(resource, "s", "p") == {
        "urn:pulumi:old::oldp::a:b:Outer$aws:sns/oldTopic:Topic::t0",
        "urn:pulumi:s::p::a:b:Outer$aws:sns/topic:Topic::t",
        "urn:pulumi:s::p::a:b:Outer$aws:sns/topic:Topic::t1",
    }
    assert alias_urns({"type": "t", "name": "n"}, "s", "p") == set()
    assert alias_urns({"type": "t", "name": "n", "aliases": None}, "s", "p") == set()


def test_a_new_stateful_resource_is_named_until_it_is_recorded() -> None:
    preview = {"resources": [
        _resource("aws:sns/topic:Topic", "b"), _resource("aws:kms/key:Key", "key"),
        _resource("aws:sns/topic:Topic", "a"), _resource("aws:iam/role:Role", "stateless"),
    ]}  # fmt: skip
    assert unrecorded("s", [KEY_URN], preview) == [
        f"stack s: new stateful resource urn:pulumi:s::p::aws:sns/topic:Topic::{n} is not in "
        "stateful-urns.json; run `make state-snapshot` to record it"
        for n in ("a", "b")
    ]
    assert stateful_urns(preview) == sorted(
        f"urn:pulumi:s::p::{t}::{n}"
        for t, n in (("aws:sns/topic:Topic", "a"), ("aws:sns/topic:Topic", "b"),
                     ("aws:kms/key:Key", "key"))
    )  # fmt: skip


def _on_cluster(cluster: str | None) -> dict[str, Any]:
    provider = [_resource("pulumi:providers:kubernetes", "k8s",
                          inputs={"clusterIdentifier": cluster})]  # fmt: skip
    return {"resources": [_resource("aws:kms/key:Key", "key", inputs={}), *(
        provider if cluster else [])]}  # fmt: skip


def test_a_throwaway_stack_names_every_stack_whose_cluster_it_shares() -> None:
    recorded = {"staging": _on_cluster("shared"), "dev": _on_cluster("shared"),
                "prod": _on_cluster("prod")}  # fmt: skip
    notes, found = throwaway("pr-1", _on_cluster("shared"), recorded)
    assert notes == []
    assert len(found) == 1
    assert "shares the Kubernetes cluster shared with dev, staging, whose" in found[0]
    assert throwaway("pr-1", _on_cluster("own"), recorded)[1] == []


def test_a_missing_snapshot_is_empty_and_an_unreadable_one_says_why(tmp_path: Path) -> None:
    assert read_snapshot(tmp_path / "none.json") == {}
    with pytest.raises(BadSnapshot, match=f"^{re.escape(str(tmp_path))}: Is a directory$"):
        read_snapshot(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"dev": [1]}')
    expected = (
        "expected an object of stack name -> list of URNs; rewrite it with `make state-snapshot`"
    )
    with pytest.raises(BadSnapshot, match=f"{re.escape(expected)}$"):
        read_snapshot(bad)
    bad.write_text("{")
    with pytest.raises(BadSnapshot, match=r": not JSON \(Expecting"):
        read_snapshot(bad)


def use_shared_previews(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() over the repository stacks' previews, shared within the test session."""
    monkeypatch.setattr(
        "infra.state_safety._previews",
        lambda _dir, stacks: {s: _preview(s) for s in stacks},  # pyright: ignore[reportUnknownLambdaType]
    )


@pytest.fixture
def cached_previews(monkeypatch: pytest.MonkeyPatch) -> None:
    use_shared_previews(monkeypatch)


@pytest.mark.usefixtures("cached_previews")
def test_the_command_writes_the_snapshot_as_committed_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "new" / "dir" / "stateful-urns.json"
    assert main(["--update", "--snapshot", str(snapshot)]) == 0
    assert snapshot.read_text(encoding="utf-8") == SNAPSHOT.read_text(encoding="utf-8")
    total = sum(map(len, read_snapshot().values()))
    assert capsys.readouterr().out == f"wrote {snapshot}: {total} stateful URNs\n"
    assert main(["--snapshot", str(snapshot)]) == 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("state safety: every stateful URN is unchanged\n", "")


@pytest.mark.usefixtures("cached_previews")
def test_the_command_fails_on_a_vanished_urn_and_a_new_one_and_notes_a_throwaway_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = read_snapshot()
    gone = recorded["dev"].pop(0)
    recorded["prod"].append(KEY_URN)
    del recorded["staging"]
    snapshot = tmp_path / "stateful-urns.json"
    snapshot.write_text(json.dumps(recorded))
    assert main(["--snapshot", str(snapshot)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "note: stack staging: a throwaway stack (not in stateful-urns.json) in its own cluster "
        "analytics-staging: its URNs are not checked",
        "state safety: FAILED",
    ]
    assert captured.err.splitlines() == [
        f"error: stack dev: new stateful resource {gone} is not in stateful-urns.json; run "
        "`make state-snapshot` to record it",
        *(f"error: {line}" for line in problems("prod", [KEY_URN], {"project": "p",
                                                                   "resources": []})),
    ]  # fmt: skip


def test_a_program_failure_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(*_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr("infra.state_safety._previews", fail)
    assert main(["--snapshot", str(SNAPSHOT)]) == 1
    assert capsys.readouterr().err == "error: the program failed: KeyError: 'boom'\n"


def test_a_stack_without_a_kubernetes_provider_has_no_cluster() -> None:
    assert cluster_of({"resources": [_resource("aws:kms/key:Key", "key", inputs={})]}) is None
    assert cluster_of(_on_cluster("analytics-dev")) == "analytics-dev"


@pytest.mark.usefixtures("cached_previews")
def test_updating_rewrites_even_a_malformed_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "stateful-urns.json"
    snapshot.write_text("{not json")
    assert main(["--update", "--snapshot", str(snapshot)]) == 0
    assert read_snapshot(snapshot) == read_snapshot()


def test_the_command_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m infra.state_safety [-h] [--update]")
    assert "--update             rewrite the snapshot" in out


def test_every_alias_counts_not_only_those_before_a_urn() -> None:
    resource = {"type": "aws:kms/key:Key", "name": "k", "aliases": [
        {"urn": KEY_URN}, {"spec": {"name": "older"}}]}  # fmt: skip
    assert alias_urns(resource, "s", "p") == {KEY_URN, "urn:pulumi:s::p::aws:kms/key:Key::older"}


@pytest.mark.usefixtures("cached_previews")
def test_the_command_checks_the_committed_snapshot_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == "state safety: every stateful URN is unchanged\n"
