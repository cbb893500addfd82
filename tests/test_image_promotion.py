"""Images every stack can pull, and that no lifecycle rule takes away while a stack pins them.

Amazon ECR User Guide, "Private repository policies": another account pulls only if the
repository policy grants it (the repository's own account pulls with IAM alone).
Amazon ECR User Guide, "Lifecycle policy properties": a rule with tagStatus `any` selects every
image, `tagged` the images with a tag matching its tagPatternList / tagPrefixList, `untagged`
the images without a tag; an expired image is gone, whatever still runs it.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from infra.mock_engine import ProgramRun, reveal_all
from tests.conftest import ROOT, RunStack, stack_account

PULL_ACTIONS = {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"}


def repository_of(image: str) -> str:
    name = image.split("@", 1)[0]
    registry, _, path = name.partition("/")
    return f"{registry}/{path.rsplit(':', 1)[0]}" if ":" in path else name


def tag_of(image: str) -> str | None:
    path = image.split("@", 1)[0].partition("/")[2]
    return path.rsplit(":", 1)[1] if ":" in path else None


# Images this project does not build or promote: AWS's public releases, which every account
# pulls anonymously and no lifecycle rule of ours can expire (README: Tracing, the collector).
THIRD_PARTY_REPOSITORIES = {"public.ecr.aws/aws-observability/aws-otel-collector"}


def deployment_images(run: ProgramRun) -> dict[str, str]:
    return {
        f"{d.name}/{c['name']}": c["image"]
        for d in run.of_type("kubernetes:apps/v1:Deployment")
        for c in reveal_all(d.inputs)["spec"]["template"]["spec"]["containers"]
        if repository_of(c["image"]) not in THIRD_PARTY_REPOSITORIES
    }


def pinned_images(run: ProgramRun) -> list[str]:
    """What the stack's config names: every Deployment image but the one it builds itself."""
    built = {r.outputs["repoDigest"] for r in run.of_type("docker:index/image:Image")}
    return sorted(set(deployment_images(run).values()) - built)


def repositories(previews: Mapping[str, ProgramRun]) -> dict[str, dict[str, Any]]:
    """Each previewed repository's URL -> its account, pull grants and lifecycle rules."""
    found: dict[str, dict[str, Any]] = {}
    for run in previews.values():
        for repo in run.of_type("aws:ecr/repository:Repository"):
            name = repo.inputs["name"]
            policies = [p for p in run.of_type("aws:ecr/repositoryPolicy:RepositoryPolicy")
                        if p.inputs["repository"] == name]  # fmt: skip
            lifecycle = [p for p in run.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
                         if p.inputs["repository"] == name]  # fmt: skip
            found[repo.outputs["repositoryUrl"]] = {
                "account": repo.outputs["registryId"],
                "pullers": {a for p in policies for a in _pull_principals(p.inputs["policy"])},
                "rules": [r for p in lifecycle for r in json.loads(p.inputs["policy"])["rules"]],
            }
    return found


def _pull_principals(policy: str) -> set[str]:
    accounts = set()
    for statement in json.loads(policy)["Statement"]:
        actions = statement["Action"]
        actions = {actions} if isinstance(actions, str) else set(actions)
        if statement["Effect"] == "Allow" and actions >= PULL_ACTIONS:
            principals = statement["Principal"]["AWS"]
            for arn in [principals] if isinstance(principals, str) else principals:
                accounts.add(arn.split(":")[4])
    return accounts


def rule_can_expire(rule: Mapping[str, Any], tag: str | None) -> bool:
    selection = rule["selection"]
    if rule["action"]["type"] != "expire":
        return False
    if selection["tagStatus"] == "any":
        return True
    if selection["tagStatus"] == "untagged":
        return tag is None
    patterns = selection.get("tagPatternList") or [f"{p}*" for p in selection["tagPrefixList"]]
    return tag is not None and any(fnmatch.fnmatchcase(tag, p) for p in patterns)


def image_problems(
    stack: str, account: str, run: ProgramRun, known: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Why an image of `stack` could not be pulled, or could expire while pinned."""
    problems = []
    for where, image in sorted(deployment_images(run).items()):
        repo = known.get(repository_of(image))
        if repo is None:
            problems.append(f"{stack} {where}: {image} is in no previewed repository")
        elif repo["account"] != account and account not in repo["pullers"]:
            problems.append(f"{stack} {where}: account {account} may not pull {image}")
    for image in pinned_images(run):
        repo = known.get(repository_of(image)) or {"rules": []}
        for rule in repo["rules"]:
            if rule_can_expire(rule, tag_of(image)):
                problems.append(f"{stack}: {image} can expire: {rule['description']}")
    return problems


@pytest.fixture
def previews(run_stack: RunStack) -> dict[str, ProgramRun]:
    return {stack: run_stack(stack) for stack in ("dev", "staging", "prod")}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_image_a_release_stack_runs_is_pullable_and_cannot_expire(
    previews: dict[str, ProgramRun], stack: str
) -> None:
    run = previews[stack]
    assert pinned_images(run), "the stack runs pinned images"
    assert image_problems(stack, stack_account(stack), run, repositories(previews)) == []
    # They are the stack's own repository's: no other account's stack can take them away.
    own = run.one("aws:ecr/repository:Repository").outputs["repositoryUrl"]
    assert {repository_of(i) for i in deployment_images(run).values()} == {own}


def test_dev_runs_its_own_build(previews: dict[str, ProgramRun]) -> None:
    run = previews["dev"]
    assert pinned_images(run) == []
    assert image_problems("dev", stack_account("dev"), run, repositories(previews)) == []


def test_a_release_stack_pinning_a_dev_build_is_caught(
    run_stack: RunStack, previews: dict[str, ProgramRun]
) -> None:
    """The dev repository lets staging copy (pull) from it, but keeps only its last builds."""
    dev_repo = previews["dev"].one("aws:ecr/repository:Repository").outputs["repositoryUrl"]
    image = f"{dev_repo}:5e0c3b7@sha256:{'ab' * 32}"
    run = run_stack("staging", overrides={"image": {"reference": image}})
    assert image_problems("staging", stack_account("staging"), run, repositories(previews)) == [
        f"staging: {image} can expire: Keep the last 30 tagged images"
    ]


def test_an_image_of_an_account_that_grants_no_pull_is_caught(
    run_stack: RunStack, previews: dict[str, ProgramRun]
) -> None:
    dev_repo = previews["dev"].one("aws:ecr/repository:Repository").outputs["repositoryUrl"]
    image = f"{dev_repo}:5e0c3b7@sha256:{'ab' * 32}"
    run = run_stack("staging", overrides={"image": {"reference": image}})
    known = repositories(previews)
    known[dev_repo]["pullers"] = set()
    problems = image_problems("staging", stack_account("staging"), run, known)
    assert f"staging analytics-api-blue/app: account 210987654321 may not pull {image}" in problems


def test_an_untagged_pin_is_caught_even_in_the_stacks_own_repository(
    run_stack: RunStack, previews: dict[str, ProgramRun]
) -> None:
    own = previews["prod"].one("aws:ecr/repository:Repository").outputs["repositoryUrl"]
    image = f"{own}@sha256:{'cd' * 32}"
    run = run_stack("prod", overrides={"image": {"reference": image}})
    assert image_problems("prod", stack_account("prod"), run, repositories(previews)) == [
        f"prod: {image} can expire: Expire untagged images after 7 days"
    ]


def test_image_references_split_into_repository_and_tag() -> None:
    ref = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/api:1.2@sha256:{'e' * 64}"
    assert repository_of(ref) == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/api"
    assert tag_of(ref) == "1.2"
    assert tag_of("localhost:5000/api@sha256:" + "e" * 64) is None
    assert repository_of("localhost:5000/api:2") == "localhost:5000/api"


@pytest.mark.parametrize("job_name", ["up", "release"])
def test_every_deploy_job_tags_builds_with_the_commit_it_checked_out(job_name: str) -> None:
    """The program refuses a build without a commit tag (infra/settings.py, build_tag)."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    steps = workflow["jobs"][job_name]["steps"]
    checkout = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/"))
    tag = next(i for i, s in enumerate(steps) if "IMAGE_TAG=" in s.get("run", ""))
    pulumi = min(
        i
        for i, s in enumerate(steps)
        if "pulumi/actions" in s.get("uses", "") or "infra.release" in s.get("run", "")
    )
    assert checkout < tag < pulumi
    assert steps[tag]["run"] == 'echo "IMAGE_TAG=$(git rev-parse HEAD)" >> "$GITHUB_ENV"'
