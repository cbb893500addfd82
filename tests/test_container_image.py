"""Container image: a hardened ECR repository, and the image built into it or given."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.mock_engine import FAKE_ECR_PASSWORD, FakeCloud, ProgramRun, is_secret, reveal_all
from infra.settings import InvalidConfig
from tests.conftest import CI_COMMIT, ROOT, STACKS, RunStack, stack_yaml

REPO = "aws:ecr/repository:Repository"
IMAGE = "docker:index/image:Image"


@pytest.mark.parametrize("stack", STACKS)
def test_repository_scans_on_push_keeps_tags_immutable_and_encrypts(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    repo = run.one(REPO)
    assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
    assert repo.inputs["encryptionConfigurations"] == [
        {
            "encryptionType": "KMS",
            "kmsKey": run.one("aws:kms/key:Key", "platform-key").outputs["arn"],
        }
    ]
    assert repo.protect is (stack == "prod")


@pytest.mark.parametrize(("stack", "forced"), [("dev", True), ("staging", False), ("prod", False)])
def test_only_a_repository_that_rotates_its_images_can_be_destroyed_with_them(
    run_stack: RunStack, stack: str, forced: bool
) -> None:
    """ECR DeleteRepository fails with RepositoryNotEmptyException unless forced (Amazon ECR API
    Reference, DeleteRepository `force`): dev and its throwaway copies must be destroyable,
    while staging and prod keep the promoted releases their stacks run."""
    assert run_stack(stack).one(REPO).inputs["forceDelete"] is forced


def _rules(run: ProgramRun) -> dict[str, dict[str, Any]]:
    policy = run.one("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert policy.inputs["repository"] == run.one(REPO).inputs["name"]
    return {r["selection"]["tagStatus"]: r for r in json.loads(policy.inputs["policy"])["rules"]}


def test_dev_lifecycle_keeps_the_last_tagged_builds_and_expires_untagged(
    run_stack: RunStack,
) -> None:
    """Amazon ECR User Guide, "Lifecycle policy parameters": tagStatus, countType."""
    rules = _rules(run_stack("dev", overrides={"image": {"build": True, "keepTaggedImages": 12}}))
    assert rules["untagged"]["selection"] == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countUnit": "days",  # the only unit ECR takes, in lower case
        "countNumber": 7,  # image.untaggedExpiryDays, by default
    }
    assert rules["untagged"]["action"] == {"type": "expire"}
    tagged = rules["tagged"]["selection"]
    assert (tagged["countType"], tagged["countNumber"]) == ("imageCountMoreThan", 12)


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_release_stacks_never_expire_a_tagged_image(run_stack: RunStack, stack: str) -> None:
    """Amazon ECR User Guide, "Lifecycle policies": a rule expires what it selects, whatever
    still runs it. The promoted releases a stack pins are tagged; only untagged ones expire."""
    rules = _rules(run_stack(stack))
    assert set(rules) == {"untagged"}
    assert rules["untagged"]["selection"]["countNumber"] == 7


def test_dev_builds_from_the_project_root_tagged_with_the_commit(run_stack: RunStack) -> None:
    """pulumi/pulumi pkg/engine/project.go (getPwdMain): the program runs in infra/, so the
    build context and Dockerfile are the project root's, relative to infra/."""
    cloud = FakeCloud()
    run = run_stack("dev", cloud=cloud)
    repo = run.one(REPO)
    image = run.one(IMAGE)
    assert image.inputs["imageName"] == f"{repo.outputs['repositoryUrl']}:{CI_COMMIT}"
    assert image.inputs["build"]["context"] == "../app"
    assert image.inputs["build"]["dockerfile"] == "../app/Dockerfile"
    assert (ROOT / "infra" / "../app/Dockerfile").is_file()
    assert image.inputs["build"]["platform"] == "linux/amd64"
    registry = image.inputs["registry"]
    assert is_secret(registry)  # the password makes the whole registry block secret
    # Pushed to its own repository with the registry's token (Amazon ECR, "Private registry
    # authentication": user AWS and the token's password for the registry's endpoint).
    assert reveal_all(registry) == {
        "server": repo.outputs["repositoryUrl"],
        "username": "AWS",
        "password": FAKE_ECR_PASSWORD,
    }
    token = [i for i in cloud.invokes if i.token.startswith("aws:ecr/getAuthorizationToken")]
    assert [t.args["registryId"] for t in token] == ["123456789012"]
    assert run.outputs["imageReference"] == image.outputs["repoDigest"]
    assert run.outputs["imageReference"].startswith(f"{repo.outputs['repositoryUrl']}@sha256:")
    assert image.provider is not None
    assert "pulumi:providers:docker::docker" in image.provider


@pytest.mark.parametrize(
    ("tag", "shown"),
    [(None, "(not set)"), ("dev-local", '"dev-local"'), ("latest", '"latest"'),
     ("ABCDEF1", '"ABCDEF1"'), ("abc12", '"abc12"')],
)  # fmt: skip
def test_a_build_refuses_any_tag_but_a_commit_id(
    run_stack: RunStack, monkeypatch: pytest.MonkeyPatch, tag: str | None, shown: str
) -> None:
    """Amazon ECR User Guide, "Image tag mutability": an immutable repository refuses a second
    push of a tag, so a fixed tag fails the second build after any change."""
    if tag is None:
        monkeypatch.delenv("IMAGE_TAG")
    else:
        monkeypatch.setenv("IMAGE_TAG", tag)
    with pytest.raises(InvalidConfig) as refused:
        run_stack("dev", name="dev")
    assert refused.value.lines == [
        f"stack dev: env:IMAGE_TAG = {shown}: image.build tags each image with the commit it is "
        "built from; allowed: a git commit id (7 to 40 lowercase hex digits), "
        "e.g. IMAGE_TAG=$(git rev-parse HEAD)"
    ]


def test_a_stack_that_does_not_build_needs_no_tag(
    run_stack: RunStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMAGE_TAG")
    assert run_stack("prod", name="prod").of_type(IMAGE) == []


def test_dev_lets_only_the_promoting_accounts_pull(run_stack: RunStack) -> None:
    """Amazon ECR User Guide, "Private repository policies": another account pulls only if the
    repository policy grants it; pulling needs BatchGetImage and GetDownloadUrlForLayer."""
    run = run_stack("dev")
    policy = run.one("aws:ecr/repositoryPolicy:RepositoryPolicy")
    assert policy.inputs["repository"] == run.one(REPO).inputs["name"]
    [statement] = json.loads(policy.inputs["policy"])["Statement"]
    assert statement["Principal"] == {
        "AWS": ["arn:aws:iam::123456789012:root", "arn:aws:iam::210987654321:root"]
    }
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == [
        "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
    ]  # fmt: skip
    assert run_stack("staging").of_type("aws:ecr/repositoryPolicy:RepositoryPolicy") == []


def test_promoted_stacks_use_the_given_digest(run_stack: RunStack) -> None:
    run = run_stack("prod")
    assert run.of_type(IMAGE) == []
    given = stack_yaml("prod")["config"]["analytics-platform:image"]["reference"]
    assert run.outputs["imageReference"] == given
    assert "@sha256:" in given


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ({"reference": "registry.example.com/team/api:latest"}, "`latest` tag moves"),
        ({"reference": "registry.example.com/team/api"}, "untagged reference means `latest`"),
        ({"reference": "Not An Image"}, "analytics-platform:image.reference"),
        ({}, "set build: true, or a reference"),
    ],
)
def test_bad_image_settings_are_refused(run_stack: RunStack, image: dict[str, object],
                                        says: str) -> None:  # fmt: skip
    with pytest.raises(InvalidConfig, match=says):
        run_stack("staging", overrides={"image": image})


@pytest.mark.parametrize("stack", STACKS)
def test_every_invoke_the_program_makes_is_answered_by_the_shared_harness(
    run_stack: RunStack, stack: str
) -> None:
    cloud = FakeCloud()
    run_stack(stack, cloud=cloud)
    tokens = {i.token for i in cloud.invokes}
    assert {
        "aws:index/getCallerIdentity:getCallerIdentity",
        "aws:index/getPartition:getPartition",
        "aws:ec2/getSubnet:getSubnet",
    } <= tokens
    for invoke in cloud.invokes:
        assert invoke.provider is not None, invoke.token
