"""The offline engine refuses what Pulumi's engine refuses and runs a preview pass as `pulumi up`.

pulumi/pulumi: pkg/resource/deploy (GetDuplicateResourceURNError: "Duplicate resource URN
'<urn>'; try giving it a unique name"), sdk/go/common/tokens (stack names: letters, digits,
`-`, `_`, `.`, at most 100 characters), sdk/go/common/resource/config (symmetricCrypter: a
passphrase secret is `v1:<nonce>:<ciphertext>`, base64, a 12-byte nonce).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra import preview
from infra.mock_engine import (
    UNKNOWN,
    EngineError,
    mask_secrets,
    preview_pass_problems,
    run_like_pulumi_up,
    run_program,
    stack_name_problem,
)
from infra.stackfiles import StackFileError, load_stack_config
from tests.conftest import PROJECT, ROOT, STACKS, stack_config, stack_yaml, unchanged_run

_PROGRAM_HEAD = """\
import pulumi
import pulumi_aws as aws

provider = aws.Provider("aws", region="eu-west-1")
opts = pulumi.ResourceOptions(provider=provider)
"""


def _project(tmp_path: Path, body: str) -> Path:
    """A one-file Pulumi project whose stack `dev` runs `body`."""
    (tmp_path / "Pulumi.yaml").write_text("name: tiny\nruntime: python\nmain: prog/\n")
    (tmp_path / "Pulumi.dev.yaml").write_text(
        yaml.safe_dump({"config": {"pulumi:disable-default-providers": ["*"]}})
    )
    (tmp_path / "prog").mkdir()
    (tmp_path / "prog" / "__main__.py").write_text(_PROGRAM_HEAD + body)
    return tmp_path


def test_a_duplicate_urn_fails_the_preview_naming_both_resources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two registrations with one URN: the Pulumi engine stops with "Duplicate resource URN"."""
    project = _project(
        tmp_path,
        'aws.sns.Topic("alerts", display_name="first", opts=opts)\n'
        'aws.sns.Topic("alerts", display_name="second", opts=opts)\n',
    )
    assert preview.main(["--stack", "dev"], project_dir=project) == 1
    err = capsys.readouterr().err
    [line] = err.splitlines()
    assert line.startswith(
        "error: stack dev: Duplicate resource URN "
        "'urn:pulumi:dev::tiny::aws:sns/topic:Topic::alerts'; try giving it a unique name"
    )
    assert "displayName=first" in line
    assert "displayName=second" in line
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["my stack!", "prod/eu", "x" * 101, "ünïcode"])
def test_a_stack_name_pulumi_refuses_exits_2(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert preview.main(["--stack", name]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: --stack: stack name ")
    assert "100" in line
    with pytest.raises(EngineError):
        run_program(ROOT / "infra", PROJECT, name, {})


@pytest.mark.parametrize("name", ["pr-123", "feature_login.v2", "A" * 100])
def test_a_stack_name_pulumi_accepts_passes(name: str) -> None:
    # A run under such a name: tests/test_settings.py, test_any_stack_name_works_with_an_environment
    assert stack_name_problem(name) is None


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_registers_the_same_urns_in_preview_and_update(stack: str) -> None:
    """`pulumi preview` runs the program with the new resources' outputs unknown; `pulumi up`
    runs it again with them known. Both must register the same resources."""
    config, secret_keys = stack_config(stack)
    previewed = run_program(ROOT / "infra", PROJECT, stack, config, secret_keys, preview=True)
    updated = unchanged_run(stack)
    assert {r.urn for r in previewed.resources} == {r.urn for r in updated.resources}
    assert preview_pass_problems(updated, previewed) == []
    # It was a real preview: what only exists once created is unknown.
    database = previewed.one("aws:rds/instance:Instance")
    assert database.id == ""
    assert mask_secrets(previewed.outputs)["databaseEndpoint"] == UNKNOWN


def test_a_resource_created_inside_apply_fails_the_preview_pass(tmp_path: Path) -> None:
    """Pulumi's docs: never create resources inside `apply`; a preview cannot see them."""
    project = _project(
        tmp_path,
        'topic = aws.sns.Topic("alerts", opts=opts)\n'
        'topic.arn.apply(lambda _: aws.sns.Topic("late", opts=opts))\n',
    )
    loaded = load_stack_config(project, "dev")
    with pytest.raises(EngineError) as caught:
        run_like_pulumi_up(loaded.main_dir, loaded.project, "dev", loaded.config)
    assert "urn:pulumi:dev::tiny::aws:sns/topic:Topic::late" in str(caught.value)
    assert "not in pulumi preview" in str(caught.value)


def _with_secret(tmp_path: Path, secure: object) -> Path:
    doc = stack_yaml("prod")
    doc["config"]["analytics-platform:alertsWebhookUrl"] = {"secure": secure}
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


@pytest.mark.parametrize(
    ("secure", "says"),
    [
        ("v1:abc", "exactly three parts"),
        ("v1:c2hvcnQ=:Y2lwaGVydGV4dA==", "the nonce is 5 bytes, not 12"),
        ("v1:bm9uY2Utbm9uY2Ux:!!", "not base64"),
        ("not base64 at all", "neither a v1 value nor a base64 ciphertext"),
        ("", "empty or not a string"),
        (42, "empty or not a string"),
    ],
)
def test_a_malformed_secure_value_is_refused_naming_its_key(
    tmp_path: Path, secure: object, says: str
) -> None:
    with pytest.raises(StackFileError) as caught:
        load_stack_config(_with_secret(tmp_path, secure), "prod")
    message = str(caught.value)
    assert message.startswith("Pulumi.prod.yaml: analytics-platform:alertsWebhookUrl: malformed")
    assert says in message
    assert "v1:<12-byte nonce, base64>:<ciphertext, base64>" in message


@pytest.mark.parametrize("secure", ["v1:bm9uY2Utbm9uY2Ux:Y2lwaGVydGV4dA==", "AAABAGNpcGhlcnRleHQ="])
def test_passphrase_and_service_secure_values_are_accepted(tmp_path: Path, secure: str) -> None:
    loaded = load_stack_config(_with_secret(tmp_path, secure), "prod")
    assert "analytics-platform:alertsWebhookUrl" in loaded.secret_keys
    assert secure not in str(loaded.config)
