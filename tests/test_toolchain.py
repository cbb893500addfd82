"""The real toolchain's view of the project: where pip runs, which virtualenv, what installs.

The Python language host resolves `runtime.options.virtualenv` against the project root (the
folder of Pulumi.yaml, or of PulumiPolicy.yaml for a pack) and runs
`pip install -r requirements.txt` in the program folder (`main`, or the pack's folder); a missing
requirements.txt there is skipped silently (pulumi/pulumi sdk/python/toolchain/pip.go:
resolveVirtualEnvironmentPath, InstallDependencies; sdk/python/cmd/pulumi-language-python/main.go
InstallDependencies passes ProgramDirectory as cwd; pkg/resource/plugin/analyzer_plugin.go sets a
pack's RootDirectory and ProgramDirectory to its own folder). pip reads `-r` and `-c` paths
relative to the file naming them (pip/_internal/req/req_file.py, _parse_and_recurse).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.policies import POLICIES
from infra.policy_pack import build
from tests.conftest import ROOT


def _host_view(root: Path, project_file: str) -> tuple[Path, Path]:
    """(the folder pip runs in, the virtualenv) as the language host resolves them."""
    project = yaml.safe_load((root / project_file).read_text())
    options = project["runtime"]["options"]
    assert options["toolchain"] == "pip"
    program_dir = (root / project.get("main", ".")).resolve()
    venv = Path(os.path.normpath(root / options["virtualenv"]))
    return program_dir, venv


def _requirement_chain(path: Path) -> tuple[list[Path], dict[str, str]]:
    """Every file pip reads from `path` (nested -r and -c, relative to their file), and the pins."""
    files, pins = [path], {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith(("-r ", "-c ")):
            nested = path.parent / line[3:].strip()
            assert nested.is_file(), f"{path}: {line!r} names a missing file"
            nested_files, nested_pins = _requirement_chain(nested)
            files += nested_files
            if line.startswith("-r "):
                pins.update(nested_pins)
        elif line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return files, pins


def _constraints() -> dict[str, str]:
    return _requirement_chain(ROOT / "constraints.txt")[1]


def _pip_dry_run(folder: Path) -> list[str]:
    """`pip install -r requirements.txt` from `folder`, offline, against this virtualenv."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet",
         "--disable-pip-version-check", "--report", "-", "-r", "requirements.txt"],
        cwd=folder, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [item["metadata"]["name"] for item in json.loads(result.stdout)["install"]]


def test_the_program_installs_from_the_folder_the_host_runs_pip_in() -> None:
    program_dir, venv = _host_view(ROOT, "Pulumi.yaml")
    assert program_dir == ROOT / "infra"
    assert venv == ROOT / ".venv"
    files, pins = _requirement_chain(program_dir / "requirements.txt")
    assert ROOT / "infra" / ".." / "requirements.txt" in files
    assert ROOT / "infra" / ".." / "constraints.txt" in files
    assert {"pulumi", "pulumi-aws", "pulumi-kubernetes", "pydantic", "pulumi-policy"} <= set(pins)
    constraints = _constraints()
    assert {name: constraints.get(name) for name in pins} == pins
    assert _pip_dry_run(program_dir) == []


def test_the_policy_pack_shares_the_program_virtualenv_and_its_requirements() -> None:
    program_dir, program_venv = _host_view(ROOT, "Pulumi.yaml")
    pack_dir, pack_venv = _host_view(ROOT / "policy", "PulumiPolicy.yaml")
    assert pack_dir == ROOT / "policy"
    assert pack_venv == program_venv
    _, pack_pins = _requirement_chain(pack_dir / "requirements.txt")
    _, program_pins = _requirement_chain(program_dir / "requirements.txt")
    assert pack_pins == program_pins
    assert "pulumi-policy" in pack_pins
    assert _pip_dry_run(pack_dir) == []


def test_a_missing_nested_requirements_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-r ../nowhere/requirements.txt\n")
    with pytest.raises(AssertionError, match="names a missing file"):
        _requirement_chain(tmp_path / "requirements.txt")


@pytest.fixture(scope="module")
def published_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("pack") / "policy-pack")


def test_the_published_pack_installs_from_its_own_folder_alone(published_pack: Path) -> None:
    """`pulumi policy publish` tars only the pack's folder; an install extracts it and runs pip
    there (pulumi/pulumi pkg/backend/httpstate/policypack.go, archive.TGZ / ExtractTGZ)."""
    pack_dir, venv = _host_view(published_pack, "PulumiPolicy.yaml")
    assert venv == published_pack / "venv"
    files, pins = _requirement_chain(pack_dir / "requirements.txt")
    assert files == [pack_dir / "requirements.txt"]
    constraints = _constraints()
    assert {name: constraints.get(name) for name in pins} == pins
    assert {"pulumi-policy", "pulumi", "pulumi-aws", "pydantic", "protobuf", "grpcio"} <= set(pins)
    assert _pip_dry_run(pack_dir) == []


ISOLATED = """
import runpy, sys
import pulumi_policy
built = {}
pulumi_policy.PolicyPack = lambda name, policies, **kw: built.update(name=name, n=len(policies))
runpy.run_path(sys.argv[1], run_name="__main__")
from infra.policies._rules import is_taggable
import infra
print(built["name"], built["n"], is_taggable("aws:sns/topic:Topic"), infra.__file__)
"""


def test_the_published_pack_runs_without_the_repository(published_pack: Path) -> None:
    """The host runs the pack folder with runpy.run_path (pulumi/policy/__main__.py)."""
    result = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED, str(published_pack)],
        cwd=published_pack.parent, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    name, count, taggable, infra_file = result.stdout.split()
    assert (name, int(count), taggable) == ("analytics-platform", len(POLICIES), "True")
    assert Path(infra_file).is_relative_to(published_pack)
