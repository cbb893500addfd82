"""ECR: images are scanned on push and their tags never move."""

from __future__ import annotations

from collections.abc import Iterable

from pulumi_policy import ResourceValidationArgs

from infra.policies._rules import get, resource_rule

CATEGORY = "ecr"
REPOSITORY = "aws:ecr/repository:Repository"


def _scan(args: ResourceValidationArgs) -> Iterable[str]:
    if get(args.props, "imageScanningConfiguration", "scanOnPush") is not True:
        yield "imageScanningConfiguration.scanOnPush is not true"


def _immutable(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("imageTagMutability") != "IMMUTABLE":
        yield f"imageTagMutability is {args.props.get('imageTagMutability')!r}, not IMMUTABLE"


POLICIES = [
    resource_rule("ecr-scan-on-push", CATEGORY, "Images are scanned for CVEs when pushed.",
                  [REPOSITORY], _scan, "Set image_scanning_configuration.scan_on_push=True."),
    resource_rule("ecr-immutable-tags", CATEGORY, "Image tags are immutable.", [REPOSITORY],
                  _immutable, "Set image_tag_mutability='IMMUTABLE'; push each build under a "
                  "new tag."),
]  # fmt: skip
