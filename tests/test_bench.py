"""The benchmark's parts measure what they claim (no timings are asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pulumi.runtime import mocks as pulumi_mocks

from bench import floor
from bench.__main__ import _config, main
from bench.critical_path import critical_path, minutes
from infra.mock_engine import ProgramRun, ResourceRecord, run_in_runtime
from infra.preview import PROJECT_DIR
from tests.conftest import unchanged_run


def test_the_floor_replays_the_same_resources_with_the_same_names_types_and_parents() -> None:
    run = unchanged_run("prod")
    monitor = pulumi_mocks.MockMonitor(floor.TrivialMocks())
    run_in_runtime(floor.replay_program(run), monitor, run.project, run.stack, {}, [],
                   PROJECT_DIR)  # fmt: skip
    replayed = {r.urn for r in monitor.resources.values()}
    # Pulumi's MockMonitor shortens nested URNs; compare what identifies each resource.
    assert {(u.rsplit("::", 2)[1].rsplit("$", 1)[-1], u.rsplit("::", 1)[1]) for u in replayed} >= {
        (r.type, r.name) for r in run.resources
    }
    assert len(monitor.resources) == len(run.resources)


def test_generated_configs_have_the_asked_number_of_services() -> None:
    config, _ = _config("prod", services=5)
    services = json.loads(config["analytics-platform:services"])
    assert [s["name"] for s in services][:2] == ["analytics-api", "service-02"]
    assert len({s["name"] for s in services}) == 5


def _record(name: str, type_: str, deps: list[str], parent: str | None = None,
            custom: bool = True) -> ResourceRecord:  # fmt: skip
    return ResourceRecord(f"urn:{name}", type_, name, custom, parent, None, deps, False, {})


def test_the_critical_path_follows_dependencies_through_components() -> None:
    db = _record("db", "aws:rds/instance:Instance", [])
    component = _record("svc", "x:index:Service", [], custom=False)
    secret = _record("secret", "kubernetes:core/v1:Secret", ["urn:db"], parent="urn:svc")
    deployment = _record("app", "kubernetes:apps/v1:Deployment", ["urn:svc"])
    alone = _record("topic", "aws:sns/topic:Topic", [])
    run = ProgramRun("p", "s", [db, component, secret, deployment, alone], [], {}, [])
    path = critical_path(run)
    assert [r.name for r in path.chain] == ["db", "secret", "app"]
    assert path.minutes == pytest.approx(15 + minutes(secret.type) + 1)
    assert path.slowest is db


def test_the_gate_fails_a_ratio_more_than_20_percent_worse(tmp_path: Path) -> None:
    base, head = tmp_path / "base.json", tmp_path / "head.json"
    base.write_text('{"ratio": 2.0}')
    head.write_text('{"ratio": 2.39}')
    assert main(["--gate", str(base), str(head)]) == 0
    head.write_text('{"ratio": 2.41}')
    assert main(["--gate", str(base), str(head)]) == 1
