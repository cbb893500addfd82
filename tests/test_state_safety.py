"""State safety: no stateful resource changes URN (is replaced or deleted) without an alias."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.mock_engine import FakeCloud, run_program
from infra.state_safety import (
    SNAPSHOT,
    alias_urns,
    main,
    problems,
    read_snapshot,
    stateful_urns,
    unrecorded,
)
from tests.conftest import PROJECT, ROOT, STACKS, stack_config, unchanged_run

DB_CALL = "instance = aws.rds.Instance(\n            name,"


def _preview(stack: str) -> dict[str, Any]:
    return json.loads(json.dumps(unchanged_run(stack).to_json()))


def _preview_of_copy(stack: str, main_dir: Path) -> dict[str, Any]:
    """The preview of a changed copy of the program, imported afresh as the `infra` package."""
    saved_modules = {k: v for k, v in sys.modules.items() if k == "infra" or k.startswith("infra.")}
    saved_path = list(sys.path)
    for key in saved_modules:
        del sys.modules[key]
    sys.path.insert(0, str(main_dir.parent))
    try:
        config, secret_keys = stack_config(stack)
        run = run_program(main_dir, PROJECT, stack, config, secret_keys, FakeCloud())
        return json.loads(json.dumps(run.to_json()))
    finally:
        for key in [k for k in sys.modules if k == "infra" or k.startswith("infra.")]:
            del sys.modules[key]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path


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


def _renamed_program(tmp_path: Path, new_name: str, alias: bool) -> Path:
    """A copy of the program whose database instance has another logical name."""
    main_dir = tmp_path / "infra"
    shutil.copytree(ROOT / "infra", main_dir, ignore=shutil.ignore_patterns("__pycache__"))
    source = (main_dir / "database.py").read_text()
    assert DB_CALL in source
    options = "opts=self.stateful_opts(depends_on=log_groups),"
    assert options in source
    renamed = source.replace(DB_CALL, f'instance = aws.rds.Instance(\n            "{new_name}",')
    if alias:
        renamed = renamed.replace(
            options,
            "opts=self.stateful_opts(depends_on=log_groups, aliases=[pulumi.Alias(name=name)]),",
        )
    (main_dir / "database.py").write_text(renamed)
    return main_dir


def test_renaming_the_database_fails_and_names_the_database(tmp_path: Path) -> None:
    preview = _preview_of_copy("prod", _renamed_program(tmp_path, "analytics-db", alias=False))
    [line] = problems("prod", read_snapshot()["prod"], preview)
    assert line.startswith(
        "stack prod: database (aws:rds/instance:Instance) would be deleted or replaced"
    )
    assert "no resource has an alias to it" in line


def test_an_alias_keeps_a_renamed_database_safe(tmp_path: Path) -> None:
    preview = _preview_of_copy("prod", _renamed_program(tmp_path, "analytics-db", alias=True))
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
