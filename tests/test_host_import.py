"""The program runs as the Pulumi language host runs it.

The host calls `runpy.run_path("infra/")` inside `run_in_stack`, with infra/ first on sys.path
and the repository root not on it, with infra/ (the `main` folder) as the working directory
(pulumi/pulumi pkg/engine/project.go, `getPwdMain`) and `pulumi.get_root_directory()` the folder
of Pulumi.yaml (pulumi/runtime/settings.py). This test reproduces exactly that in a clean
interpreter: the offline engine and the stack-file reader are loaded by file path, so that
nothing of the `infra` package is imported before the program itself runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from infra.mock_engine import project_root, run_program
from tests.conftest import CI_COMMIT, ROOT

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, os, sys
    from pathlib import Path

    root = Path(sys.argv[1])
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != root]

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    engine = load("offline_engine", root / "infra" / "mock_engine.py")
    stackfiles = load("offline_stackfiles", root / "infra" / "stackfiles.py")
    assert "infra" not in sys.modules
    stack = stackfiles.load_stack_config(root, "dev")
    run = engine.run_program(stack.main_dir, stack.project, "dev", stack.config, stack.secret_keys)
    builds = [r.inputs["build"] for r in run.resources if r.type == "docker:index/image:Image"]
    # A provider resolves a relative path against the working directory the program ran in.
    here = Path(run.working_directory)
    print(json.dumps({
        "types": sorted({r.type for r in run.resources}),
        "outputs": engine.mask_secrets(run.outputs),
        "cwd": run.working_directory,
        "root": run.root_directory,
        "cwd_after": os.getcwd(),
        "builds": [{
            "context_is_dir": (here / b["context"]).is_dir(),
            "dockerfile_is_file": (here / b["dockerfile"]).is_file(),
            "dockerfile_in_context": Path(b["dockerfile"]).parent == Path(b["context"]),
        } for b in builds],
        "relative_app_from_main": (here / "app").exists(),
    }))
    """
)


def test_program_runs_with_only_its_folder_on_sys_path(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONSAFEPATH": "1", "IMAGE_TAG": CI_COMMIT},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert "aws:sns/topic:Topic" in report["types"]
    assert "analytics-platform:index:AnalyticsPlatform" in report["types"]
    assert report["outputs"]["environment"] == "dev"
    assert report["outputs"]["alertsTopicArn"].startswith("arn:aws:sns:eu-west-1:")
    assert report["cwd"] == str(ROOT / "infra")
    assert report["root"] == str(ROOT)
    assert report["cwd_after"] == str(tmp_path)
    # Every build path the dev preview hands pulumi-docker exists from the main folder, while
    # the project-relative `app` the program used to give would have been infra/app.
    assert report["builds"] == [
        {"context_is_dir": True, "dockerfile_is_file": True, "dockerfile_in_context": True}
    ]
    assert report["relative_app_from_main"] is False


def test_a_main_folder_outside_any_project_is_refused(tmp_path: Path) -> None:
    """The CLI finds the project by its Pulumi.yaml; the root directory is that folder."""
    (tmp_path / "infra").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no Pulumi\.yaml in"):
        run_program(tmp_path / "infra", "analytics-platform", "dev", {})
    (tmp_path / "Pulumi.yaml").write_text("name: analytics-platform\n")
    assert project_root(tmp_path / "infra") == tmp_path
