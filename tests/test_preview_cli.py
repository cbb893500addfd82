"""The offline preview command: plan, JSON shape, secret masking and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra import preview
from infra.stackfiles import secret_placeholder
from tests.conftest import ROOT, STACKS, stack_account, stack_yaml, unchanged_run

ProjectCopy = Callable[[str, "str | dict[str, Any]"], Path]


@pytest.mark.parametrize("stack", STACKS)
def test_preview_prints_the_plan(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert preview.main(["--stack", stack]) == 0
    out = capsys.readouterr().out
    assert f"Offline preview of analytics-platform/{stack}:" in out
    assert "─ analytics-platform:alerts:Alerts  alerts" in out
    assert "aws:sns/topic:Topic  alerts-topic" in out
    assert "Resources by type:" in out
    assert "  aws:sns/topic:Topic" in out
    assert "Outputs:" in out
    assert (
        f"alertsTopicArn: arn:aws:sns:eu-west-1:{stack_account(stack)}:analytics-platform-{stack}"
        in out
    )


def test_prod_plan_marks_protected_resources(capsys: pytest.CaptureFixture[str]) -> None:
    assert preview.main(["--stack", "prod"]) == 0
    out = capsys.readouterr().out
    assert "aws:kms/key:Key  alerts-key [protected]" in out


def test_json_plan_has_the_documented_shape(tmp_path: Path) -> None:
    out_file = tmp_path / "out.json"
    assert preview.main(["--stack", "prod", "--json", str(out_file)]) == 0
    plan = json.loads(out_file.read_text())
    assert set(plan) == {"project", "stack", "resources", "outputs"}
    assert (plan["project"], plan["stack"]) == ("analytics-platform", "prod")
    urns = {r["urn"] for r in plan["resources"]}
    assert len(urns) == len(plan["resources"]) >= 10
    for resource in plan["resources"]:
        assert set(resource) >= {
            "urn", "type", "name", "custom", "parent", "provider", "dependencies", "protect",
            "inputs",
        }  # fmt: skip
        assert resource["urn"].startswith("urn:pulumi:prod::analytics-platform::")
        assert resource["urn"].endswith(f"{resource['type']}::{resource['name']}")
        assert isinstance(resource["custom"], bool)
        assert isinstance(resource["protect"], bool)
        assert resource["parent"] is None or resource["parent"] in urns
        assert all(dep in urns for dep in resource["dependencies"])
        assert isinstance(resource["inputs"], dict)
        if resource["custom"] and not resource["type"].startswith("pulumi:providers:"):
            assert resource["provider"].rpartition("::")[0] in urns
    topic = next(r for r in plan["resources"] if r["type"] == "aws:sns/topic:Topic")
    assert topic["protect"] is True
    assert topic["inputs"]["name"] == "analytics-platform-prod-alerts-topic"
    key = next(r for r in plan["resources"] if r["type"] == "aws:kms/key:Key")
    assert key["urn"] in topic["dependencies"]
    assert plan["outputs"]["environment"] == "prod"


# The shape the passphrase secrets manager writes: v1:<12-byte nonce>:<AES-GCM ciphertext+tag>.
REAL_SHAPED_CIPHERTEXT = "v1:MDEyMzQ1Njc4OWFi:QUVTLUdDTSBjaXBoZXJ0ZXh0IGFuZCB0YWcgMTIzNDU2"


def test_no_secret_or_ciphertext_reaches_stdout_or_json(
    project_copy: ProjectCopy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack_file = stack_yaml("prod")
    stack_file["encryptionsalt"] = "v1:c2FsdHNhbHQ=:v1:MDEyMzQ1Njc4OWFi:dGVzdA=="
    stack_file["config"]["analytics-platform:alertsPagingEndpoint"] = {
        "secure": REAL_SHAPED_CIPHERTEXT
    }
    stack_file["config"]["analytics-platform:alerts"]["paging"] = {"service": "pagerduty"}
    project = project_copy("prod", stack_file)
    out_file = tmp_path / "out.json"
    assert preview.main(["--stack", "prod", "--json", str(out_file)], project_dir=project) == 0
    captured = capsys.readouterr()
    everything = captured.out + captured.err + out_file.read_text()
    assert REAL_SHAPED_CIPHERTEXT.split(":")[2] not in everything
    for key in ("alertsPagingEndpoint", "kubeconfig"):
        assert secret_placeholder(f"analytics-platform:{key}") not in everything
    assert "offline-placeholder" not in everything
    plan = json.loads(out_file.read_text())
    paging = next(r for r in plan["resources"] if r["name"] == "alerts-paging-pagerduty")
    assert paging["inputs"]["endpoint"] == "[secret]"
    # prod's kubeconfig is built from its EKS cluster and holds no credential (they come
    # from an exec of `aws eks get-token`), so it is shown.
    provider = next(r for r in plan["resources"] if r["type"] == "pulumi:providers:kubernetes")
    assert "token" not in json.loads(provider["inputs"]["kubeconfig"])["users"][0]["user"]


def test_a_fresh_clone_previews_a_stack_with_a_labelled_stand_in_for_its_required_secret(
    capsys: pytest.CaptureFixture[str], project_copy: ProjectCopy
) -> None:
    stack_file = stack_yaml("prod")
    stack_file["config"]["analytics-platform:requiredSecrets"] = ["kubeconfig"]
    assert "analytics-platform:kubeconfig" not in stack_file["config"]
    project = project_copy("prod", stack_file)
    assert preview.main(["--stack", "prod"], project_dir=project) == 0
    err = capsys.readouterr().err
    assert (
        "note: stack prod: analytics-platform:kubeconfig is a required secret that is not set;"
        " this offline preview uses a stand-in value instead."
        " Before a real run: pulumi config set --secret kubeconfig < kubeconfig.yaml"
    ) in err


def test_stacks_without_required_secrets_get_no_stand_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert preview.main(["--stack", "staging"]) == 0
    assert "stand-in" not in capsys.readouterr().err


def test_a_copy_of_the_dev_stack_under_another_name_previews(
    project_copy: ProjectCopy, capsys: pytest.CaptureFixture[str]
) -> None:
    project = project_copy("feature-login", (ROOT / "Pulumi.dev.yaml").read_text())
    assert preview.main(["--stack", "feature-login"], project_dir=project) == 0
    out = capsys.readouterr().out
    assert "Offline preview of analytics-platform/feature-login" in out
    assert "name=analytics-platform-feature-login-alerts-topic" in out


def _dev_with(**changes: Any) -> dict[str, Any]:
    doc = stack_yaml("dev")
    for key, value in changes.items():
        full = f"analytics-platform:{key}"
        if value is None:
            del doc["config"][full]
        else:
            doc["config"][full] = value
    return doc


BROKEN: dict[str, tuple[str | dict[str, Any], str]] = {
    "wrong type": (
        _dev_with(alerts={"emails": "oncall@example.com"}),
        "analytics-platform:alerts.emails",
    ),
    "unknown top-level key": (
        _dev_with(dashboard={"enabled": True}),
        "analytics-platform:dashboard",
    ),
    "unknown nested key": (
        _dev_with(aws={"region": "eu-west-1", "profile": "me"}),
        "analytics-platform:aws.profile",
    ),
    "missing environment": (_dev_with(environment=None), "analytics-platform:environment"),
    "out-of-range number": (_dev_with(kmsDeletionWindowDays=3), "kmsDeletionWindowDays"),
    "malformed YAML": (
        "config:\n  analytics-platform:environment: dev\n   bad: [unclosed\n",
        "Pulumi.broken.yaml",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_config_exits_2_naming_the_key_without_a_traceback(
    case: str, project_copy: ProjectCopy, capsys: pytest.CaptureFixture[str]
) -> None:
    stack_file, named = BROKEN[case]
    project = project_copy("broken", stack_file)
    assert preview.main(["--stack", "broken"], project_dir=project) == 2
    captured = capsys.readouterr()
    assert named in captured.err
    assert "stack broken" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert captured.out == ""


def test_an_unknown_stack_exits_2_and_lists_the_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert preview.main(["--stack", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Pulumi.nope.yaml" in err
    assert "dev, prod, staging" in err


def test_a_program_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: failing\nruntime: python\nmain: prog/\n")
    (tmp_path / "Pulumi.x.yaml").write_text('config:\n  pulumi:disable-default-providers: ["*"]\n')
    (tmp_path / "prog").mkdir()
    (tmp_path / "prog" / "__main__.py").write_text("raise RuntimeError('boom')\n")
    assert preview.main(["--stack", "x"], project_dir=tmp_path) == 1
    err = capsys.readouterr().err
    assert "the program failed: RuntimeError: boom" in err
    assert "Traceback" not in err


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.preview", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_real_command_writes_json_and_exits_0(tmp_path: Path) -> None:
    result = _cli("--stack", "prod", "--json", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stderr
    assert "Offline preview of analytics-platform/prod" in result.stdout
    # No warning, no note (no required secret is missing), no traceback.
    assert result.stderr.strip() == ""
    assert json.loads((tmp_path / "out.json").read_text())["stack"] == "prod"


def test_the_real_command_prints_no_traceback_on_bad_config(project_copy: ProjectCopy) -> None:
    project = project_copy("broken", _dev_with(protectStatefulResources="maybe"))
    result = _cli("--stack", "broken", "--project-dir", str(project))
    assert result.returncode == 2
    assert "analytics-platform:protectStatefulResources" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_prod_plan_shows_what_a_reviewer_checks_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The database line leads with class, storage, Multi-AZ, deletion protection, encryption and
    public access; each Deployment with its image and replicas, whatever their input order."""
    preview.render_plan(unchanged_run("prod"), sys.stdout)
    out = capsys.readouterr().out
    [database] = [
        line for line in out.splitlines() if "aws:rds/instance:Instance  database" in line
    ]
    assert database.split("[protected]  ", 1)[1].startswith(
        "class=db.m7g.large storageGb=100 maxStorageGb=1000 multiAz=true deletionProtection=true "
        "encrypted=true public=false"
    )
    run = unchanged_run("prod")
    deployments = run.of_type("kubernetes:apps/v1:Deployment")
    assert len(deployments) == 3  # blue, green and the trace collector
    for deployment in deployments:
        spec = deployment.inputs["spec"]
        images = ",".join(c["image"] for c in spec["template"]["spec"]["containers"])
        replicas = int(spec["replicas"]) if "replicas" in spec else preview.NOT_SET
        assert f"Deployment  {deployment.name}  image={images} replicas={replicas}" in out


def test_an_alarm_line_shows_its_metric_and_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    preview.render_plan(unchanged_run("dev"), sys.stdout)
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if "MetricAlarm  monitoring-api-5xx-rate" in line]
    assert "metric=5xx namespace=AWS/ApiGateway statistic=Average" in line
    assert "comparison=GreaterThanThreshold threshold=0.05" in line


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert "Traceback" not in captured.err
    assert captured.out == ""
    return line


def test_json_into_a_folder_or_a_missing_folder_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert preview.main(["--stack", "dev", "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path}: is a folder" in _one_error_line(capsys)
    missing = tmp_path / "nope" / "plan.json"
    assert preview.main(["--stack", "dev", "--json", str(missing)]) == 2
    assert f"the folder {missing.parent} does not exist" in _one_error_line(capsys)


def _base_file(tmp_path: Path, doc: Any) -> str:
    path = tmp_path / "base.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_a_diff_base_whose_entries_lack_a_urn_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = json.loads(json.dumps(unchanged_run("dev").to_json()))
    del base["resources"][3]["urn"]
    assert preview.main(["--stack", "dev", "--diff", _base_file(tmp_path, base)]) == 2
    assert "not a preview JSON: resources[3] has no `urn`" in _one_error_line(capsys)


def test_a_diff_against_another_stacks_preview_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = json.loads(json.dumps(unchanged_run("staging").to_json()))
    assert preview.main(["--stack", "prod", "--diff", _base_file(tmp_path, base)]) == 2
    line = _one_error_line(capsys)
    assert "is the preview of analytics-platform/staging, not analytics-platform/prod" in line
    assert "WARNING" not in line


@pytest.mark.parametrize("args", [["--stack", "dev", "--diff"], ["--stak", "dev"], []])
def test_argument_mistakes_are_one_usage_error(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        preview.main(args)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("python -m infra.preview: error: ")
    assert "Traceback" not in err
