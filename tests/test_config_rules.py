"""Stack config as strict as the cloud: each class of bad input refused through the preview CLI.

Each case is a copy of a repository stack file with one input broken; the command must exit 2
and print exactly one line naming the full key (no traceback, no second line).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra import preview
from infra.config_rules import (
    IMAGE_SHAPE,
    QUANTITY_SHAPE,
    PathError,
    aws_regions,
    daily_window,
    known_region,
    quantity,
    region_of_arn,
    repeated,
    validate_image_reference,
    weekly_window,
    windows_overlap,
)
from tests.conftest import stack_yaml

ProjectCopy = Callable[[str, "str | dict[str, Any]"], Path]
DIGEST = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/api@sha256:" + "a" * 64
SERVICE = {"name": "analytics-api", "blue": {"version": "1.0.0"}, "green": {"version": "1.0.0"}}


def _stack(base: str, remove: str = "", **changes: Any) -> dict[str, Any]:
    doc = stack_yaml(base)
    doc["config"].pop(remove, None)
    for key, value in changes.items():
        doc["config"][f"analytics-platform:{key}"] = value
    return doc


# (case, stack file, key named, what the line says)
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("color image on latest", _stack("prod", services=[{**SERVICE, "green": {
        "version": "1.0.0", "image": "registry.example.com/team/api:latest"}}]),
     "analytics-platform:services[0].green.image", "`latest` tag moves"),
    ("untagged image", _stack("dev", image={"reference": "registry.example.com/team/api"}),
     "analytics-platform:image.reference", "untagged reference means `latest`"),
    ("prod image without digest", _stack("prod", image={"reference": "r.example.com/a/b:1.2"}),
     "analytics-platform:image.reference", "a prod stack runs only what was built and tested"),
    ("region that does not exist", _stack("dev", aws={"region": "eu-west-9"}),
     "analytics-platform:aws.region", "not an AWS region; did you mean eu-west-"),
    ("DR region that does not exist", _stack("prod", database={
        "disasterRecovery": {"enabled": True, "region": "eu-centrall-1"}}),
     "analytics-platform:database.disasterRecovery.region", "not an AWS region"),
    ("backup window overlaps maintenance", _stack("dev", database={
        "backupWindow": "03:00-04:00", "maintenanceWindow": "sun:03:30-sun:04:30"}),
     "analytics-platform:database.backupWindow", "overlaps maintenanceWindow"),
    ("maintenance window too short", _stack("dev", database={
        "maintenanceWindow": "mon:03:30-mon:03:40"}),
     "analytics-platform:database.maintenanceWindow", "at least 30 minutes"),
    ("backup window malformed", _stack("dev", database={"backupWindow": "25:00-26:00"}),
     "analytics-platform:database.backupWindow", "allowed: hh:mm-hh:mm, UTC"),
    ("cpu request above limit", _stack("dev", services=[{**SERVICE, "resources": {
        "cpuRequest": "1500m", "cpuLimit": "1"}}]),
     "analytics-platform:services[0].resources.cpuRequest", "must not exceed cpuLimit (1)"),
    ("memory request above limit", _stack("dev", services=[{**SERVICE, "resources": {
        "memoryRequest": "1Gi", "memoryLimit": "512Mi"}}]),
     "analytics-platform:services[0].resources.memoryRequest", "must not exceed memoryLimit"),
    ("certificate in another region", _stack("dev", api={"customDomain": {
        "domainName": "api.example.com",
        "certificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/0a1b-2c3d"}}),
     "analytics-platform:api.customDomain.certificateArn", "in the API's region"),
    ("default providers not disabled", _stack("dev", remove="pulumi:disable-default-providers"),
     "pulumi:disable-default-providers", "required: a list holding \"*\""),
    ("malformed secure value", _stack("prod", alertsWebhookUrl={"secure": "v1:abc"}),
     "analytics-platform:alertsWebhookUrl: malformed secure value", "v1:<12-byte nonce"),
    ("alert email listed twice", _stack("dev", alerts={
        "emails": ["oncall@example.com", "OnCall@example.com"]}),
     "analytics-platform:alerts.emails", "OnCall@example.com is listed twice"),
    ("account id listed twice", _stack("prod", aws={"region": "eu-west-1",
        "allowedAccountIds": ["123456789012", "123456789012"]}),
     "analytics-platform:aws.allowedAccountIds", "123456789012 is listed twice"),
    ("service name used twice", _stack("dev", services=[SERVICE, SERVICE]),
     "analytics-platform:services[1].name", "is the name of an earlier service"),
    ("Kubernetes version read as a number", _stack("dev", kubernetes={
        "version": 1.30, "context": "analytics-dev"}),
     "analytics-platform:kubernetes.version = 1.3", "YAML read this as a number; quote it"),
    ("account id read as a number", _stack("prod", aws={"region": "eu-west-1",
        "allowedAccountIds": [123456789012]}),
     "analytics-platform:aws.allowedAccountIds[0]", "quote it"),
    ("shape in words, not a pattern", _stack("dev", network={
        "vpcId": "vpc-nothex", "privateSubnetIds": ["subnet-0aa11bb22cc33dd44",
        "subnet-0ee55ff66aa77bb88"], "clusterNodeSecurityGroupId": "sg-0123456789abcdef0"}),
     "analytics-platform:network.vpcId", "allowed: a VPC id: vpc- and 8 or 17 hex digits"),
    ("cross-field rule names its key", _stack("dev", services=[{**SERVICE, "replicas": 3,
        "maxReplicas": 2}]),
     "analytics-platform:services[0].maxReplicas = 2", "must be at least replicas (3)"),
    ("log retention CloudWatch refuses", _stack("dev", logRetentionDays=13),
     "analytics-platform:logRetentionDays", "allowed: 1, 3, 5, 7, 14, 30"),
    ("cost guard in words", _stack("prod", database={"instanceClass": "db.t4g.micro"}),
     "analytics-platform:database.instanceClass", "allowed for prod: db.m6g.12xlarge"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stack_file", "key", "says"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_bad_input_is_refused_with_exit_2_and_one_line_naming_the_key(
    stack_file: dict[str, Any],
    key: str,
    says: str,
    project_copy: ProjectCopy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = project_copy("broken", stack_file)
    assert preview.main(["--stack", "broken"], project_dir=project) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith("error: stack broken: ")
    assert key in line
    assert says in line
    assert "^" not in line
    assert "Traceback" not in line
    assert captured.out == ""


def test_a_valid_log_retention_is_accepted(
    project_copy: ProjectCopy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CloudWatch Logs PutRetentionPolicy: retentionInDays is one of 1, 3, 5, 7, 14, 30, …"""
    project = project_copy("fortnight", _stack("dev", logRetentionDays=14))
    out = tmp_path / "plan.json"
    assert preview.main(["--stack", "fortnight", "--json", str(out)], project_dir=project) == 0
    plan = json.loads(out.read_text())
    groups = [r for r in plan["resources"] if r["type"] == "aws:cloudwatch/logGroup:LogGroup"]
    assert groups
    assert {g["inputs"]["retentionInDays"] for g in groups} == {14}
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("environment", "reference", "problem"),
    [
        ("dev", "registry.example.com/team/api:1.2.3", None),
        ("dev", DIGEST, None),
        ("prod", DIGEST, None),
        ("staging", "registry.example.com/team/api:1.2.3", "pin the digest"),
        ("dev", "registry.example.com/team/api:latest", "`latest` tag moves"),
        ("prod", "registry.example.com/team/api:latest@sha256:" + "a" * 64, "`latest`"),
        ("dev", "api", "not an image reference"),
        ("dev", "Registry.example.com/Team/API:1", "not an image reference"),
    ],
)
def test_one_image_rule_for_every_image(
    environment: Any, reference: str, problem: str | None
) -> None:
    """The rule the stack image, each color's image and the release tool's --image share."""
    found = validate_image_reference(environment, reference)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_regions_come_from_botocore_partitions() -> None:
    regions = aws_regions()
    assert {"eu-west-1", "eu-central-1", "us-east-1", "cn-north-1", "us-gov-west-1"} <= regions
    assert "aws-global" not in regions
    assert "eu-west-9" not in regions


@pytest.mark.parametrize(
    ("backup", "maintenance", "overlap"),
    [
        ("02:00-03:00", "sun:03:30-sun:04:30", False),
        ("03:00-04:00", "sun:03:30-sun:04:30", True),
        ("03:00-04:00", "wed:03:59-wed:04:30", True),
        ("04:30-05:00", "wed:03:59-wed:04:30", False),
        ("23:30-00:30", "mon:00:00-mon:00:30", True),  # the backup wraps past midnight
        ("01:00-01:30", "sun:23:30-mon:01:15", True),  # maintenance wraps into Monday
        ("01:00-01:30", "sat:23:30-sun:00:30", False),
    ],
)
def test_rds_windows_overlap_on_any_day(backup: str, maintenance: str, overlap: bool) -> None:
    """RDS CreateDBInstance: PreferredBackupWindow must not conflict with the maintenance one."""
    assert windows_overlap(daily_window(backup), weekly_window(maintenance)) is overlap


@pytest.mark.parametrize(
    ("text", "value"),
    [("250m", "0.25"), ("1", "1"), ("0.5", "0.5"), ("512Mi", str(512 * 2**20)), ("1G", "1e9")],
)
def test_quantities_compare_as_kubernetes_reads_them(text: str, value: str) -> None:
    from decimal import Decimal

    assert quantity(text) == Decimal(value)


# Each rule on its own, word for word: what a stack file's author reads.
@pytest.mark.parametrize(
    ("environment", "reference", "problem"),
    [
        ("dev", "api", f"not an image reference; expected {IMAGE_SHAPE}"),
        ("dev", "registry.example.com/team/api:latest",
         "the `latest` tag moves under a running stack; use a version tag or a digest"),
        ("dev", "registry.example.com:5000/team/api",
         "an untagged reference means `latest`; add a version tag or a digest"),
        ("staging", "registry.example.com:5000/team/api:1.2",
         "a staging stack runs only what was built and tested: pin the digest "
         "(…@sha256:<64 hex digits>)"),
        ("dev", "registry.example.com:5000/team/api:1.2", None),
        ("dev", "registry.example.com:5000/team/api@sha256:" + "b" * 64, None),
        ("prod", "registry.example.com/team/api:1.2@sha256:" + "b" * 64, None),
    ],
)  # fmt: skip
def test_the_image_rule_says_what_is_wrong_in_words(
    environment: Any, reference: str, problem: str | None
) -> None:
    assert validate_image_reference(environment, reference) == problem


def test_a_region_is_one_aws_has_or_a_near_name_is_suggested() -> None:
    assert known_region("eu-west-1") == "eu-west-1"
    with pytest.raises(ValueError, match=r"^not an AWS region; did you mean eu-west-1\? "):
        known_region("eu-wesst-1")
    with pytest.raises(ValueError, match=r"^not an AWS region such as eu-west-1 \(regions known"):
        known_region("zzzzzzzz")
    assert not any(region.endswith("-global") for region in aws_regions())


@pytest.mark.parametrize(
    ("arn", "region"),
    [
        ("arn:aws:acm:us-east-1:123456789012:certificate/0a1b", "us-east-1"),
        ("arn:aws:sns:eu-west-1:123456789012:alerts", "eu-west-1"),
        ("arn:aws:sns:eu-west-1:123456789012", ""),
        ("arn:aws:s3:::bucket", ""),
        ("not-an-arn", ""),
    ],
)
def test_the_region_of_an_arn_is_its_fourth_field(arn: str, region: str) -> None:
    assert region_of_arn(arn) == region


@pytest.mark.parametrize(
    ("text", "window"),
    [("00:00-00:30", (0, 30)), ("02:00-03:00", (120, 60)), ("23:59-00:29", (1439, 30)),
     ("23:30-00:30", (1410, 60))],
)  # fmt: skip
def test_a_daily_window_is_its_start_and_length_in_minutes(
    text: str, window: tuple[int, int]
) -> None:
    assert daily_window(text) == window


@pytest.mark.parametrize(
    ("text", "window"),
    [("mon:00:00-mon:00:30", (0, 30)), ("tue:01:00-tue:02:30", (1440 + 60, 90)),
     ("sun:23:30-mon:00:30", (6 * 1440 + 1410, 60))],
)  # fmt: skip
def test_a_weekly_window_is_its_start_in_the_week_and_length(
    text: str, window: tuple[int, int]
) -> None:
    assert weekly_window(text) == window


@pytest.mark.parametrize(
    ("text", "part"),
    [("03:00", "03:00"), ("3:00-04:00", "3:00"), ("03:0-04:00", "03:0"),
     ("24:00-01:00", "24:00"), ("03:60-04:00", "03:60"), ("0a:00-01:00", "0a:00"),
     ("03:00-04:0b", "04:0b"), ("03-04:00", "03"), ("03:00-04", "04")],
)  # fmt: skip
def test_a_malformed_daily_window_is_refused_naming_the_part(text: str, part: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(part)}$"):
        daily_window(text)


@pytest.mark.parametrize(
    ("text", "part"),
    [("mon:03:00", "mon:03:00"), ("xyz:03:00-mon:04:00", "xyz:03:00"),
     ("mon:03:00-fri:4:00", "4:00"), ("Mon:03:00-mon:04:00", "Mon:03:00")],
)  # fmt: skip
def test_a_malformed_weekly_window_is_refused_naming_the_part(text: str, part: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(part)}$"):
        weekly_window(text)


@pytest.mark.parametrize(
    ("backup", "maintenance"),
    [("03:00-03:30", "wed:03:30-wed:04:00"), ("04:00-04:30", "wed:03:30-wed:04:00")],
)
def test_windows_that_only_touch_do_not_overlap(backup: str, maintenance: str) -> None:
    assert windows_overlap(daily_window(backup), weekly_window(maintenance)) is False


@pytest.mark.parametrize(
    ("text", "value"),
    [("1k", 10**3), ("1M", 10**6), ("2G", 2 * 10**9), ("1T", 10**12), ("1Ki", 2**10),
     ("3Gi", 3 * 2**30), ("1Ti", 2**40), ("1.5Mi", 3 * 2**19), ("0", 0)],
)  # fmt: skip
def test_every_quantity_suffix_is_read(text: str, value: int) -> None:
    assert quantity(text) == value


@pytest.mark.parametrize("text", ["", "1.5.2", "1m5", "1mi", "-1", ".5", "1 Gi", "1Gb"])
def test_what_is_not_a_quantity_is_refused_in_words(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(f'not {QUANTITY_SHAPE}')}$"):
        quantity(text)


def test_repeated_entries_are_listed_once_in_order_of_their_second_appearance() -> None:
    assert repeated(["a", "b", "c", "b", "a", "a", "b"]) == ["b", "a"]
    assert repeated(["x", "y"]) == []
    assert repeated(["Ops@example.com", "ops@example.com", "OPS@example.com"],
                    key=str.lower) == ["ops@example.com", "OPS@example.com"]  # fmt: skip


def test_a_path_error_names_its_key_and_value() -> None:
    error = PathError("cpuRequest", "2", "must not exceed cpuLimit (1)")
    assert (error.key, error.value, str(error)) == (
        "cpuRequest",
        "2",
        "must not exceed cpuLimit (1)",
    )
