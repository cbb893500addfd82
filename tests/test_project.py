"""The project files: Pulumi.yaml, pinned requirements, the CI entry point."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

SHARED_SCHEMA = ROOT.parent / "shared" / "schemas" / "pulumi-project.schema.json"
VENDORED_SCHEMA = ROOT / "tests" / "schemas" / "pulumi-project.schema.json"


def test_pulumi_yaml_validates_against_the_project_schema() -> None:
    schema = json.loads(VENDORED_SCHEMA.read_text())
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    jsonschema.validate(project, schema)


@pytest.mark.skipif(not SHARED_SCHEMA.exists(), reason="no ../shared beside this clone")
def test_vendored_schema_is_the_shared_one() -> None:
    assert json.loads(VENDORED_SCHEMA.read_text()) == json.loads(SHARED_SCHEMA.read_text())


def test_schema_rejects_a_broken_project_file() -> None:
    schema = json.loads(VENDORED_SCHEMA.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "analytics-platform"}, schema)  # no runtime


def test_pulumi_yaml_runs_infra_with_python_in_a_virtualenv() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "analytics-platform"
    assert project["main"] == "infra/"
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    assert (ROOT / "infra" / "__main__.py").is_file()


def _requirements(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(("-r ", "-c ")):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9.]*)", line)
        assert match, f"{path.name}: not pinned exactly: {line!r}"
        pins[match.group(1).lower()] = match.group(2)
    return pins


def test_runtime_requirements_are_pinned_exactly() -> None:
    pins = _requirements(ROOT / "requirements.txt")
    assert {"pulumi", "pulumi-aws", "pulumi-kubernetes", "pulumi-docker", "pydantic"} <= set(pins)
    assert pins["pydantic"].startswith("2.")


def test_dev_requirements_are_pinned_and_include_the_runtime_ones() -> None:
    text = (ROOT / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in text.splitlines()
    assert {"pytest", "ruff", "basedpyright"} <= set(_requirements(ROOT / "requirements-dev.txt"))


def test_ci_runs_the_same_command_as_developers() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", script, re.MULTILINE)


def test_every_installed_package_is_pinned_in_the_constraints() -> None:
    from importlib.metadata import distributions

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    assert (ROOT / "requirements.txt").read_text().count("-c constraints.txt") == 1
    installed = {
        d.metadata["Name"].lower().replace("_", "-"): d.version
        for d in distributions()
        if d.metadata["Name"].lower() != "pip"
    }
    unpinned = {n: v for n, v in installed.items() if pins.get(n) != v}
    assert not unpinned, (
        f"installed but not pinned in constraints.txt (make constraints): {unpinned}"
    )
