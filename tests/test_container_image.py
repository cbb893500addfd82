"""Container image: a hardened ECR repository, and the image built into it or given."""

from __future__ import annotations

import json

import pytest

from infra.mock_engine import FakeCloud, is_secret
from infra.settings import InvalidConfig
from tests.conftest import STACKS, RunStack, stack_yaml

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
    assert repo.inputs["forceDelete"] is False
    assert repo.protect is (stack == "prod")


def test_lifecycle_keeps_the_last_tagged_images_and_expires_untagged(run_stack: RunStack) -> None:
    run = run_stack("dev", overrides={"image": {"build": True, "tag": "abc123",
                                                 "keepTaggedImages": 12}})  # fmt: skip
    policy = run.one("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert policy.inputs["repository"] == run.one(REPO).inputs["name"]
    rules = {r["selection"]["tagStatus"]: r for r in json.loads(policy.inputs["policy"])["rules"]}
    assert rules["untagged"]["selection"]["countType"] == "sinceImagePushed"
    assert rules["untagged"]["action"] == {"type": "expire"}
    tagged = rules["tagged"]["selection"]
    assert (tagged["countType"], tagged["countNumber"]) == ("imageCountMoreThan", 12)


def test_dev_builds_and_pushes_with_ecr_token_credentials(run_stack: RunStack) -> None:
    cloud = FakeCloud()
    run = run_stack("dev", cloud=cloud)
    repo = run.one(REPO)
    image = run.one(IMAGE)
    assert image.inputs["imageName"] == f"{repo.outputs['repositoryUrl']}:dev-local"
    assert image.inputs["build"]["context"] == "app"
    assert image.inputs["build"]["dockerfile"] == "app/Dockerfile"
    assert image.inputs["build"]["platform"] == "linux/amd64"
    registry = image.inputs["registry"]
    assert is_secret(registry)  # the password makes the whole registry block secret
    token = [i for i in cloud.invokes if i.token.startswith("aws:ecr/getAuthorizationToken")]
    assert [t.args["registryId"] for t in token] == ["123456789012"]
    assert run.outputs["imageReference"] == image.outputs["repoDigest"]
    assert run.outputs["imageReference"].startswith(f"{repo.outputs['repositoryUrl']}@sha256:")
    assert image.provider is not None
    assert "pulumi:providers:docker::docker" in image.provider


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
        ({"build": True}, "needs a tag"),
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
