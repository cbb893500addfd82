"""GitHub workflows: pinned, least-privilege, injection-free, schema-valid, zizmor-clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, unchanged_run

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
STACKS = ["dev", "staging", "prod"]


def _load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def _on(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True.
    return workflow.get("on", workflow.get(True))


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_the_expected_workflows_exist() -> None:
    assert {w.name for w in WORKFLOWS} == {
        "ci.yml", "preview.yml", "preview-comment.yml", "deploy.yml", "drift.yml", "chaos.yml",
        "mutation.yml",
    }  # fmt: skip


def test_chaos_runs_only_by_hand_against_staging_and_fails_when_an_alarm_fired() -> None:
    """GitHub "Events that trigger workflows": workflow_dispatch only, so no push or schedule
    starts an experiment; the report reads the stop alarm's StateUpdate history (CloudWatch
    DescribeAlarmHistory) and the experiment's final state (FIS GetExperiment)."""
    chaos = _load("chaos.yml")
    assert set(_on(chaos)) == {"workflow_dispatch"}
    job = chaos["jobs"]["experiment"]
    assert job["env"]["STACK"] == "staging"
    assert job["env"]["ALARM"] == "analytics-platform-staging-analytics-api-unhealthy"
    assert job["concurrency"] == {"group": "chaos-staging", "cancel-in-progress": False}
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "aws fis start-experiment" in runs
    assert "describe-alarm-history" in runs
    assert '[ "$state" = completed ] && [ "$alarms" = 0 ]' in runs


def test_the_chaos_workflow_offers_every_experiment_staging_has() -> None:
    """The workflow finds a template by its `Stack` and `Experiment` tags (FIS
    ListExperimentTemplates); its choices are exactly the experiments staging creates
    (infra/chaos.py), and the input reaches the script through env, never `${{ }}` in `run`."""
    chaos = _load("chaos.yml")
    options = _on(chaos)["workflow_dispatch"]["inputs"]["experiment"]["options"]
    staging = unchanged_run("staging")
    assert sorted(options) == sorted(staging.outputs["chaosTemplateIds"])
    templates = staging.of_type("aws:fis/experimentTemplate:ExperimentTemplate")
    assert sorted(t.inputs["tags"]["Experiment"] for t in templates) == sorted(options)
    assert all(t.inputs["tags"]["Stack"] == "staging" for t in templates)
    job = chaos["jobs"]["experiment"]
    assert job["env"]["EXPERIMENT"] == "${{ inputs.experiment }}"
    assert all("inputs." not in step.get("run", "") for step in job["steps"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha_with_its_version(path: Path) -> None:
    uses = [line.strip() for line in path.read_text().splitlines() if "uses:" in line]
    assert uses
    for line in uses:
        assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$", line), line


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_sets_least_privilege_permissions(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text())
    assert "permissions" in workflow, "no top-level permissions"
    top = workflow["permissions"] or {}
    assert all(level == "read" for level in top.values()), top
    for name, job in workflow["jobs"].items():
        granted = job.get("permissions", {})
        assert granted != "write-all", name
        for scope, level in granted.items():
            assert level in ("read", "write", "none"), (name, scope)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_is_interpolated_into_a_run_script(path: Path) -> None:
    for step in _steps(yaml.safe_load(path.read_text())):
        assert "${{" not in step.get("run", ""), f"{step.get('name')}: pass it through env"


def test_workflows_validate_against_the_github_workflow_schema() -> None:
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *WORKFLOWS],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pass_zizmor_offline() -> None:
    result = subprocess.run(
        [BIN / "zizmor", "--offline", "--persona", "pedantic", "--no-progress",
         ROOT / ".github" / "workflows"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


def test_ci_runs_make_test_and_audits_the_pins() -> None:
    ci = _load("ci.yml")
    assert set(_on(ci)) == {"pull_request", "push"}
    runs = [s.get("run", "") for s in _steps(ci)]
    assert "make test" in runs
    assert any("pip_audit" in r and "constraints.txt" in r for r in runs)
    setups = [s for s in _steps(ci) if "setup-python" in s.get("uses", "")]
    assert all(s["with"]["cache"] == "pip" for s in setups)


def test_every_pull_request_gets_an_offline_diff_per_stack_without_secrets() -> None:
    preview = _load("preview.yml")
    assert list(_on(preview)) == ["pull_request"]
    offline = preview["jobs"]["offline-diff"]
    assert offline["strategy"]["matrix"]["stack"] == STACKS
    assert offline["permissions"] == {"contents": "read"}
    assert "secrets." not in yaml.safe_dump(offline)
    assert any("--diff" in s.get("run", "") for s in offline["steps"])
    comment = _load("preview-comment.yml")
    assert _on(comment)["workflow_run"]["workflows"] == ["preview"]
    [job] = comment["jobs"].values()
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    assert not any("checkout" in s.get("uses", "") for s in job["steps"])


def test_the_real_preview_runs_the_policy_pack_with_oidc_credentials_on_same_repo_prs() -> None:
    job = _load("preview.yml")["jobs"]["real-preview"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in job["if"]
    assert job["permissions"]["id-token"] == "write"
    steps = {s.get("uses", "").split("@")[0]: s for s in job["steps"]}
    assert "role-to-assume" in steps["aws-actions/configure-aws-credentials"]["with"]
    pulumi = steps["pulumi/actions"]["with"]
    assert pulumi["command"] == "preview"
    assert pulumi["policyPacks"] == "policy"
    assert pulumi["comment-on-pr"] is True
    assert pulumi["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"


def test_deploys_are_guarded_serialised_per_stack_and_smoke_tested() -> None:
    deploy = _load("deploy.yml")
    assert _on(deploy)["push"]["branches"] == ["main", "develop"]
    up = deploy["jobs"]["up"]
    assert "'production'" in up["environment"]["name"]
    assert up["concurrency"] == {
        "group": "stack-${{ matrix.stack }}", "cancel-in-progress": False, "queue": "max",
    }  # fmt: skip
    assert up["permissions"]["id-token"] == "write"
    runs = "\n".join(s.get("run", "") for s in up["steps"])
    assert "infra.release check" in runs
    assert any(s.get("if") == "always()" and "CHAT_WEBHOOK_URL" in s.get("env", {})
               for s in up["steps"])  # fmt: skip
    dispatch = _on(deploy)["workflow_dispatch"]["inputs"]
    assert dispatch["action"]["options"] == ["promote", "rollback"]
    assert dispatch["stack"]["options"] == STACKS
    assert deploy["jobs"]["release"]["concurrency"]["group"] == "stack-${{ inputs.stack }}"


def test_drift_is_checked_on_a_schedule_and_on_dispatch() -> None:
    drift = _load("drift.yml")
    assert {"schedule", "workflow_dispatch"} == set(_on(drift))
    job = drift["jobs"]["refresh"]
    assert job["strategy"]["matrix"]["stack"] == STACKS
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "pulumi refresh" in runs
    assert "--preview-only --expect-no-changes" in runs
    assert any(s.get("if") == "failure()" for s in job["steps"])


def test_mutation_testing_runs_on_a_schedule_with_read_only_access_and_keeps_its_report() -> None:
    """Hours of mutmut belong on a schedule, not in CI; it reads the code and touches no cloud."""
    mutation = _load("mutation.yml")
    assert {"schedule", "workflow_dispatch"} == set(_on(mutation))
    assert mutation["permissions"] == {}
    [job] = mutation["jobs"].values()
    assert job["permissions"] == {"contents": "read"}
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "make mutation" in runs
    assert "pulumi" not in runs
    [upload] = [s for s in job["steps"] if "upload-artifact" in s.get("uses", "")]
    assert upload["if"] == "always()"
    assert "mutants/report.md" in upload["with"]["path"]


def test_pull_requests_gate_the_preview_floor_ratio_of_base_and_head_in_one_job() -> None:
    job = _load("ci.yml")["jobs"]["bench-gate"]
    assert job["if"] == "github.event_name == 'pull_request'"
    script = "\n".join(s.get("run", "") for s in job["steps"])
    assert "--ratio-json ../base-ratio.json" in script
    assert "--ratio-json ../head-ratio.json" in script
    assert "--gate ../base-ratio.json ../head-ratio.json" in script


# --- The real toolchain in CI: one CLI version, queues that drop nothing, a role per operation.

PULUMI_PIN = next(
    line.split("==")[1]
    for line in (ROOT / "requirements.txt").read_text().splitlines()
    if line.startswith("pulumi==")
)


def _jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path.name, name, job) for path in WORKFLOWS
            for name, job in yaml.safe_load(path.read_text())["jobs"].items()]  # fmt: skip


def _uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if s.get("uses", "").startswith(f"{action}@")]


def _runs_pulumi(job: dict[str, Any]) -> bool:
    scripts = "\n".join(s.get("run", "") for s in job.get("steps", []))
    return bool(_uses(job, "pulumi/actions")) or bool(
        re.search(r"(^|\s)pulumi\s|infra\.release", scripts)
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_pins_the_pulumi_cli_it_runs(path: Path) -> None:
    """pulumi/actions installs `pulumi-version` exactly, else the latest release
    (pulumi/actions v7.0.0 action.yml); the CLI matches the SDK pinned in requirements.txt."""
    for name, job in yaml.safe_load(path.read_text())["jobs"].items():
        installs = _uses(job, "pulumi/actions")
        if not _runs_pulumi(job):
            assert not installs, f"{path.name}:{name}"
            continue
        assert installs, f"{path.name}:{name} runs pulumi without installing a pinned CLI"
        for step in installs:
            assert step["with"]["pulumi-version"] == PULUMI_PIN, f"{path.name}:{name}"
        first_install = job["steps"].index(installs[0])
        for step in job["steps"][:first_install]:
            assert not re.search(r"(^|\s)pulumi\s", step.get("run", "")), f"{path.name}:{name}"


def _changes_a_stack(job: dict[str, Any]) -> bool:
    commands = [s.get("with", {}).get("command") for s in _uses(job, "pulumi/actions")]
    scripts = "\n".join(s.get("run", "") for s in job.get("steps", []))
    return "up" in commands or bool(re.search(r"infra\.release \"?\$ACTION", scripts))


def _group_prefix(group: str) -> str:
    return group.split("${{")[0]


def test_no_concurrency_group_can_cancel_a_pending_deploy_or_release() -> None:
    """GitHub keeps one pending run per concurrency group and cancels the older pending one,
    unless the group sets `queue: max` (up to 100 pending, FIFO; not with cancel-in-progress)
    (docs.github.com: Control the concurrency of workflows and jobs; check-jsonschema's vendored
    github-workflows schema, concurrency.queue)."""
    changing = [(wf, name, job) for wf, name, job in _jobs() if _changes_a_stack(job)]
    assert {(wf, name) for wf, name, _ in changing} == {("deploy.yml", "up"),
                                                          ("deploy.yml", "release")}  # fmt: skip
    queues = set()
    for wf, name, job in changing:
        assert "concurrency" not in _load(wf), f"{wf}: a workflow-level group would also apply"
        concurrency = job["concurrency"]
        assert concurrency["cancel-in-progress"] is False, name
        assert concurrency["queue"] == "max", name
        assert concurrency["group"] in ("stack-${{ matrix.stack }}", "stack-${{ inputs.stack }}")
        queues.add(_group_prefix(concurrency["group"]))
    assert queues == {"stack-"}  # deploys and releases of one stack share one queue
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        others = [workflow.get("concurrency")] + [
            job.get("concurrency") for job in workflow["jobs"].values() if not _changes_a_stack(job)
        ]
        for other in filter(None, others):
            group = other if isinstance(other, str) else other["group"]
            assert not _group_prefix(group).startswith("stack-"), f"{path.name}: {group}"
            assert _group_prefix(group), f"{path.name}: {group} could take any name"


def test_drift_has_its_own_queue_per_stack() -> None:
    job = _load("drift.yml")["jobs"]["refresh"]
    assert job["concurrency"]["group"] == "drift-${{ matrix.stack }}"


def _role(job: dict[str, Any]) -> str:
    [step] = _uses(job, "aws-actions/configure-aws-credentials")
    return step["with"]["role-to-assume"]


def test_preview_and_drift_run_with_read_only_roles_and_no_environment() -> None:
    """The read-only jobs get their OIDC role from repository variables and never enter an
    environment, so they cannot even read an environment's AWS_DEPLOY_ROLE_ARN; the stack
    files name no role the provider would assume (tests/test_stack_files.py)."""
    preview = _load("preview.yml")["jobs"]["real-preview"]
    drift = _load("drift.yml")["jobs"]["refresh"]
    assert _role(preview) == "${{ vars.AWS_PREVIEW_ROLE_ARN }}"
    assert _role(drift) == "${{ vars.AWS_DRIFT_ROLE_ARN }}"
    for job in (preview, drift):
        assert "environment" not in job
        assert "AWS_DEPLOY_ROLE_ARN" not in yaml.safe_dump(job)
    commands = [s["with"]["command"] for s in _uses(preview, "pulumi/actions")]
    assert commands == ["preview"]
    assert "pulumi refresh" in "\n".join(s.get("run", "") for s in drift["steps"])


def test_deploy_and_release_assume_the_deploy_role_of_their_environment() -> None:
    jobs = _load("deploy.yml")["jobs"]
    for name in ("up", "release"):
        assert _role(jobs[name]) == "${{ vars.AWS_DEPLOY_ROLE_ARN }}", name
        assert jobs[name]["environment"]["name"], name
    for wf, name, job in _jobs():
        if "AWS_DEPLOY_ROLE_ARN" in yaml.safe_dump(job):
            assert (wf, name) in {("deploy.yml", "up"), ("deploy.yml", "release")}
