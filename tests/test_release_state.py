"""Release state that lasts: a release run from the deploy workflow lands on the branch, and the
next `pulumi up` of the branch keeps the released color and image.

Pulumi docs, Automation API: `set_config` writes Pulumi.<stack>.yaml in the work dir, which in
CI is a checkout that is thrown away. GitHub docs, "Automatic token authentication": pushes
made with the workflow's GITHUB_TOKEN start no new workflow run. This test runs the workflow's
own commit step (read from deploy.yml) in a runner checkout of a temporary repository, then
runs the program from a fresh checkout of the branch, as the next deploy does.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import release
from infra.mock_engine import ProgramRun, reveal_all, run_program
from infra.settings import parse_settings
from infra.stackfiles import load_stack_config
from tests.conftest import PROJECT, ROOT
from tests.release_fakes import PART_OF_TYPE, FakeClock, FakeCluster, fake_signer

STACK, BRANCH, REPOSITORY = "prod", "main", "example-org/analytics-platform"
RELEASED = (
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/analytics-platform-prod-image:"
    f"0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6@sha256:{'7c' * 32}"
)


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env or _git_env(cwd), check=True,
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def _git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
        "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@example.com",
    }  # fmt: skip


class CheckoutStack:
    """StackBackend over the stack file of a checkout, written as `pulumi config set --path
    --type` writes it; `up` applies the file's services to the fake cluster as Pulumi would."""

    def __init__(self, work_dir: Path, cluster: FakeCluster) -> None:
        self.project, self.name = PROJECT, STACK
        self.work_dir, self.cluster = work_dir, cluster
        self._urns = [r.urn for r in _program_run(self.work_dir).resources]
        settings = self._settings()
        self.cluster.recommendation[settings.active_color] = settings.replicas
        self.cluster.apply(settings, set(PART_OF_TYPE.values()))

    @property
    def _file(self) -> Path:
        return self.work_dir / f"Pulumi.{STACK}.yaml"

    def _settings(self) -> Any:
        config, secret_keys = self.config()
        return parse_settings(PROJECT, STACK, config, secret_keys).services[0]

    def config(self) -> tuple[dict[str, str], list[str]]:
        loaded = load_stack_config(self.work_dir, STACK)
        return dict(loaded.config), list(loaded.secret_keys)

    def _edit(self, path: str, value: Any, remove: bool = False) -> None:
        document = yaml.safe_load(self._file.read_text())
        head, *rest = re.split(r"\.|\[(\d+)\]\.?", path)
        keys: list[Any] = [int(k) if k.isdigit() else k for k in rest if k]
        target = document["config"][f"{PROJECT}:{head}"]
        for key in keys[:-1]:
            target = target[key] if isinstance(key, int) else target.setdefault(key, {})
        if remove:
            target.pop(keys[-1])
        else:
            target[keys[-1]] = value
        self._file.write_text(yaml.safe_dump(document, sort_keys=False))

    def set_path(self, path: str, value: str | int) -> None:
        self._edit(path, value)

    def remove_path(self, path: str) -> None:
        self._edit(path, None, remove=True)

    def up(self, targets: Sequence[str] | None = None) -> None:
        kinds = {urn.split("::")[-2].split("$")[-1] for urn in (targets or self._urns)}
        parts = {part for kind, part in PART_OF_TYPE.items() if kind in kinds}
        self.cluster.apply(self._settings(), parts)

    def resource_urns(self) -> list[str]:
        return self._urns

    def ready_replicas(self, urn: str) -> int:
        return self.cluster.ready(urn.rsplit("-", 1)[1])

    def outputs(self) -> dict[str, Any]:
        return {"apiEndpoint": self.cluster.url("api")}


def _program_run(checkout: Path) -> ProgramRun:
    loaded = load_stack_config(checkout, STACK)
    return run_program(ROOT / "infra", PROJECT, STACK, loaded.config, loaded.secret_keys)


def commit_step_script() -> str:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    [step] = [s for s in workflow["jobs"]["release"]["steps"]
              if s.get("name") == "Commit the release state to the branch"]  # fmt: skip
    return step["run"]


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A repository whose main holds the project files, as GitHub holds them."""
    seed = tmp_path / "seed"
    seed.mkdir()
    for name in ("Pulumi.yaml", f"Pulumi.{STACK}.yaml"):
        (seed / name).write_text((ROOT / name).read_text())
    (seed / "infra").symlink_to(ROOT / "infra", target_is_directory=True)
    (seed / "notes.md").write_text("first\n")
    git(seed, "init", "--quiet", "--initial-branch", BRANCH)
    git(seed, "add", ".")
    git(seed, "commit", "--quiet", "-m", "seed")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(seed), str(bare))
    return bare


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    cluster = FakeCluster()
    yield cluster
    cluster.close()


def run_commit_step(
    checkout: Path, origin: Path, action: str, path_prefix: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **_git_env(checkout.parent),
        "PATH": path_prefix + os.environ.get("PATH", "/usr/bin:/bin"),
        "STACK": STACK, "ACTION": action, "SERVICE": "analytics-api",
        "GITHUB_TOKEN": "fake-token", "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_REF_NAME": BRANCH, "GITHUB_RUN_ID": "4242",
        # The runner's https remote is this test's bare repository.
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"url.{origin}.insteadOf",
        "GIT_CONFIG_VALUE_0": f"https://github.com/{REPOSITORY}.git",
    }  # fmt: skip
    return subprocess.run(
        ["/bin/bash", "-c", commit_step_script()], cwd=checkout, env=env,
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_a_released_color_and_image_survive_the_next_deploy_of_the_branch(
    tmp_path: Path, origin: Path, cluster: FakeCluster
) -> None:
    runner = tmp_path / "runner"
    git(tmp_path, "clone", "--quiet", str(origin), str(runner))
    dispatched_at = git(runner, "rev-parse", "HEAD")
    git(runner, "checkout", "--quiet", "--detach", dispatched_at)  # actions/checkout: github.sha

    # While the release runs, a change unrelated to it is merged to the branch.
    other = tmp_path / "other"
    git(tmp_path, "clone", "--quiet", str(origin), str(other))
    (other / "notes.md").write_text("second\n")
    git(other, "commit", "--quiet", "-am", "an unrelated change")
    git(other, "push", "--quiet", "origin", BRANCH)

    stack = CheckoutStack(runner, cluster)
    options = {"backend": stack, "clock": FakeClock(), "log": lambda _line: None,
               "sign": fake_signer}  # fmt: skip
    assert release.main(["deploy", "--stack", STACK, "--image", RELEASED], **options) == 0
    assert release.main(["promote", "--stack", STACK], **options) == 0
    assert cluster.active_color == "green"

    step = run_commit_step(runner, origin, "promote")
    assert step.returncode == 0, step.stdout + step.stderr

    # The next deploy checks out the branch's tip and runs the program from its stack file.
    deploy = tmp_path / "next-deploy"
    git(tmp_path, "clone", "--quiet", "--branch", BRANCH, str(origin), str(deploy))
    assert (deploy / "notes.md").read_text() == "second\n"
    assert git(deploy, "log", "-1", "--format=%s") == (
        f"release: promote of analytics-api on {STACK} (run 4242)"
    )
    run = _program_run(deploy)
    active = reveal_all(run.one("kubernetes:core/v1:Service", "analytics-api-active").inputs)
    assert active["spec"]["selector"]["color"] == "green"
    green = reveal_all(run.one("kubernetes:apps/v1:Deployment", "analytics-api-green").inputs)
    assert [c["image"] for c in green["spec"]["template"]["spec"]["containers"]] == [RELEASED]
    # What a later rollback from the workflow needs is on the branch too; the switch's
    # temporary HPA floors are not.
    [service] = yaml.safe_load((deploy / f"Pulumi.{STACK}.yaml").read_text())["config"][
        f"{PROJECT}:services"
    ]
    assert service["previousColor"] == "blue"
    assert "minReplicas" not in service["blue"]
    assert "minReplicas" not in service["green"]


def test_a_release_that_changed_nothing_commits_nothing(tmp_path: Path, origin: Path) -> None:
    runner = tmp_path / "runner"
    git(tmp_path, "clone", "--quiet", str(origin), str(runner))
    before = git(runner, "rev-parse", "HEAD")
    step = run_commit_step(runner, origin, "rollback")
    assert step.returncode == 0, step.stderr
    assert "release state unchanged" in step.stdout
    assert git(origin, "rev-parse", BRANCH) == before


def test_the_commit_step_fails_loudly_when_the_branch_cannot_take_it(
    tmp_path: Path, origin: Path
) -> None:
    runner = tmp_path / "runner"
    git(tmp_path, "clone", "--quiet", str(origin), str(runner))
    stack_file = runner / f"Pulumi.{STACK}.yaml"
    stack_file.write_text(stack_file.read_text().replace("activeColor: blue", "activeColor: green"))
    # Someone changed the same line on the branch meanwhile: the rebase cannot be automatic.
    other = tmp_path / "other"
    git(tmp_path, "clone", "--quiet", str(origin), str(other))
    other_file = other / f"Pulumi.{STACK}.yaml"
    other_file.write_text(other_file.read_text().replace("activeColor: blue", "activeColor: red"))
    git(other, "commit", "--quiet", "-am", "conflicting change")
    git(other, "push", "--quiet", "origin", BRANCH)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "sleep").write_text("#!/bin/sh\nexit 0\n")  # the retries need not wait here
    (fake_bin / "sleep").chmod(0o755)
    step = run_commit_step(runner, origin, "promote", path_prefix=f"{fake_bin}:")
    assert step.returncode == 1
    assert f"::error::the release is live but its state is not on {BRANCH}" in step.stdout
    assert git(origin, "log", "-1", "--format=%s", BRANCH) == "conflicting change"


def _branch_guard() -> str:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    [step] = [s for s in workflow["jobs"]["release"]["steps"]
              if s.get("name") == "Refuse a stack released from another branch"]  # fmt: skip
    assert workflow["jobs"]["release"]["steps"][0] is step  # before anything else runs
    return str(step["run"])


@pytest.mark.parametrize(
    ("stack", "branch", "code"),
    [("prod", "main", 0), ("staging", "develop", 0), ("dev", "develop", 0),
     ("prod", "develop", 2), ("staging", "main", 2), ("dev", "feature/x", 2)],
)  # fmt: skip
def test_a_release_runs_only_from_the_branch_that_deploys_its_stack(
    stack: str, branch: str, code: int
) -> None:
    """A dispatch from another branch would commit the release state where no deploy reads it
    (GitHub docs, workflow_dispatch runs on the chosen ref): the next push would undo it."""
    result = subprocess.run(
        ["/bin/bash", "-c", _branch_guard()],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "STACK": stack,
             "GITHUB_REF_NAME": branch},
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == code
    if code:
        assert f"::error::{stack} is released from" in result.stdout
