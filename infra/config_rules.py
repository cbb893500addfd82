"""Rules of the world that stack config must follow, each stated once and used by every caller.

Images (one rule for the stack image, every color's image and the release tool's `--image`),
AWS regions (botocore's partition data, not a hand-kept list), RDS windows, Kubernetes
quantities and list entries that must not repeat. Each rule returns what is wrong, in words, or
None; the settings models turn that into an error on the key that holds the value.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from infra.tiers import TIERS, Environment

# registry/repository[:tag][@sha256:digest]
IMAGE_REFERENCE = (
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
IMAGE_SHAPE = "registry/repository:tag or registry/repository@sha256:<64 hex digits>"


class PathError(ValueError):
    """A rule broken by one key below the model that checks it, e.g. `cpuRequest`.

    Cross-field checks run on a whole model; this names the key the reader must change, so the
    error line carries the full key path instead of the model's.
    """

    def __init__(self, key: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


def validate_image_reference(environment: Environment, reference: str) -> str | None:
    """None when a stack of `environment` may run `reference`; otherwise what is wrong.

    The same rule for `image.reference`, each color's `image` and the release tool's `--image`:
    a tag that moves (`latest`, or none, which means latest) is refused everywhere; tiers that
    promote what was tested (infra/tiers.py: require_image_digest) need a digest.
    """
    problem = validate_third_party_image(reference)
    if problem:
        return problem
    if TIERS[environment].policy.require_image_digest and "@" not in reference:
        return (
            f"a {environment} stack runs only what was built and tested: pin the digest "
            "(…@sha256:<64 hex digits>)"
        )
    return None


def validate_third_party_image(reference: str) -> str | None:
    """None when `reference` is a pinned release of an image this project does not build.

    Never `latest` or untagged, in any tier. A digest is welcome but not required: the tiers'
    digest rule is about promoting what was built and tested here (README: Image promotion),
    and a digest for somebody else's release is only worth pinning once it has been read from
    the registry, not typed from memory (README: Tracing, the collector's image).
    """
    if not re.fullmatch(IMAGE_REFERENCE, reference):
        return f"not an image reference; expected {IMAGE_SHAPE}"
    name, _, digest = reference.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    if tag == "latest":
        return "the `latest` tag moves under a running stack; use a version tag or a digest"
    if not tag and not digest:
        return "an untagged reference means `latest`; add a version tag or a digest"
    return None


@functools.cache
def aws_regions() -> frozenset[str]:
    """Every region of every AWS partition, from the endpoint data botocore ships."""
    from botocore.loaders import create_loader

    partitions = create_loader().load_data("partitions")["partitions"]
    return frozenset(
        region
        for partition in partitions
        for region in partition["regions"]
        if not region.endswith("-global")  # the partitions' global endpoints, not regions
    )


def known_region(region: str) -> str:
    """`region` itself when AWS has it; raises ValueError (suggesting a near name) otherwise."""
    if region in aws_regions():
        return region
    close = difflib.get_close_matches(region, sorted(aws_regions()), n=1)
    hint = f"; did you mean {close[0]}?" if close else " such as eu-west-1"
    raise ValueError(f"not an AWS region{hint} (regions known to botocore)")


def region_of_arn(arn: str) -> str:
    return arn.split(":")[3] if arn.count(":") >= 5 else ""


# RDS windows (CreateDBInstance, PreferredBackupWindow / PreferredMaintenanceWindow): UTC,
# at least 30 minutes, and the two must not overlap.
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK = 7 * 24 * 60
MIN_WINDOW_MINUTES = 30


def _minute_of_day(text: str) -> int:
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(hours) == len(minutes) == 2):
        raise ValueError(text)
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(text)
    return int(hours) * 60 + int(minutes)


def daily_window(text: str) -> tuple[int, int]:
    """hh:mm-hh:mm as (start, length) in minutes; raises ValueError when malformed."""
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise ValueError(text)
    start, end = _minute_of_day(start_text), _minute_of_day(end_text)
    return start, (end - start) % (24 * 60)


def weekly_window(text: str) -> tuple[int, int]:
    """ddd:hh:mm-ddd:hh:mm as (start minute of the week, length); ValueError when malformed."""
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise ValueError(text)
    start, end = (_minute_of_week(part) for part in (start_text, end_text))
    return start, (end - start) % _WEEK


def _minute_of_week(text: str) -> int:
    day, _, time = text.partition(":")
    if day not in _DAYS:
        raise ValueError(text)
    return _DAYS.index(day) * 24 * 60 + _minute_of_day(time)


def windows_overlap(backup: tuple[int, int], maintenance: tuple[int, int]) -> bool:
    """Whether a daily backup window meets a weekly maintenance window on any day."""
    m_start, m_length = maintenance
    for day in range(7):
        b_start = day * 24 * 60 + backup[0]
        for shift in (-_WEEK, 0, _WEEK):  # windows that wrap round Sunday night
            if b_start < m_start + m_length + shift and m_start + shift < b_start + backup[1]:
                return True
    return False


# Kubernetes resource quantities (k8s.io/apimachinery resource.Quantity), as numbers.
_SUFFIXES = {
    "m": Decimal("0.001"), "": Decimal(1),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
}  # fmt: skip
QUANTITY_SHAPE = "a Kubernetes quantity such as 250m, 0.5, 1, 256Mi or 1Gi"


def quantity(text: str) -> Decimal:
    """A quantity's value; raises ValueError when `text` is not a quantity."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", text)
    if match is None:
        raise ValueError(f"not {QUANTITY_SHAPE}")
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2) or ""]
    except InvalidOperation:
        raise ValueError(f"not {QUANTITY_SHAPE}") from None


def _same(entry: Any) -> Any:
    return entry


def repeated(entries: Sequence[Any], key: Callable[[Any], Any] = _same) -> list[Any]:
    """The entries that appear more than once, in order of their second appearance."""
    seen: set[Any] = set()
    again: list[Any] = []
    for entry in entries:
        marker = key(entry)
        if marker in seen and entry not in again:
            again.append(entry)
        seen.add(marker)
    return again
