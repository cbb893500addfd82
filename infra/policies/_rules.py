"""How a rule is declared, and the facts several rules share.

A rule is a pulumi-policy `ResourceValidationPolicy` or `StackValidationPolicy`, so that the
same object runs in `pulumi preview --policy-pack policy` and in the offline runner. A rule's
check only yields messages; the wrapper reports them. Under a real preview an input that is not
known yet raises pulumi-policy's UnknownValueError, and CrossGuard skips the rule for that
resource instead of reporting a false violation.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

# The offline preview shows every secret as MASKED; under CrossGuard secrets arrive decrypted.
from infra.mock_engine import MASKED
from infra.stateful import STATEFUL_TYPES as STATEFUL_TYPES
from infra.tiers import TIERS, Tier

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

REQUIRED_TAGS = ("Environment", "Project", "Stack", "Owner", "CostCenter", "ManagedBy", "Component")

ResourceCheck = Callable[[ResourceValidationArgs], Iterable[str]]
# yields (urn, message)
StackCheck = Callable[[Sequence[PolicyResource]], Iterable[tuple[str, str]]]


def _metadata(
    name: str, category: str, description: str, remediation: str, level: EnforcementLevel
) -> dict[str, Any]:
    """What every rule carries, whichever kind it is; the category is its one tag."""
    return {
        "name": name,
        "description": description,
        "enforcement_level": level,
        "tags": [category],
        "remediation_steps": remediation,
    }


def resource_rule(
    name: str,
    category: str,
    description: str,
    types: Iterable[str],
    check: ResourceCheck,
    remediation: str,
    level: EnforcementLevel = MANDATORY,
) -> ResourceValidationPolicy:
    wanted = frozenset(types)

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type in wanted:
            for message in check(args):
                report(message, None)

    return ResourceValidationPolicy(
        validate=validate, **_metadata(name, category, description, remediation, level)
    )


def stack_rule(
    name: str,
    category: str,
    description: str,
    check: StackCheck,
    remediation: str,
    level: EnforcementLevel = MANDATORY,
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        for urn, message in check(args.resources):
            report(message, urn)

    return StackValidationPolicy(
        validate=validate, **_metadata(name, category, description, remediation, level)
    )


def get(value: Any, *path: str | int) -> Any:
    """A nested value, or None where any step is missing."""
    for step in path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, Sequence) and len(value) > step else None
        else:
            value = value.get(step) if isinstance(value, Mapping) else None
        if value is None:
            return None
    return value


def environment(props: Mapping[str, Any]) -> str:
    """The tier a resource belongs to, from its Environment tag; untagged counts as prod."""
    tag = get(props, "tags", "Environment")
    return tag if tag in TIERS else "prod"


def tier(props: Mapping[str, Any]) -> Tier:
    return TIERS[environment(props)]  # type: ignore[index]


@cache
def is_taggable(resource_type: str) -> bool:
    """Whether the pulumi_aws class for `aws:<module>/<x>:<Class>` takes `tags`."""
    if not resource_type.startswith("aws:") or resource_type.count(":") != 2:
        return False
    module_path, class_name = resource_type.split(":")[1].split("/")[0], resource_type.split(":")[2]
    try:
        module = importlib.import_module(f"pulumi_aws.{module_path}")
        init = getattr(module, class_name)._internal_init
    except (ImportError, AttributeError):
        return False
    return "tags" in inspect.signature(init).parameters


# Values that are credentials whatever key they sit under.
SECRET_VALUE_PATTERNS = {
    "an AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a URL with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
    "a GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "a Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
}
SECRET_KEY = re.compile(
    r"(password|passwd|secret|token|api[_-]?key|private[_-]?key|credential)", re.IGNORECASE
)
# Not secrets, whatever their names say.
_NOT_SECRET_KEY = re.compile(
    r"(secret_?(arn|id|name|ref|key_?ref)|secretName|secretRef|token_?(url|ttl|file)|"
    # EKS Pod Identity's agent URL, not a credential.
    r"credentials_full_uri)$|"
    r"^(manageMasterUserPassword|masterUserSecretKmsKeyId|automountServiceAccountToken)$|"
    r"^skip",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key)) and not _NOT_SECRET_KEY.search(key)


def secret_looking(value: Any, path: str = "") -> Iterable[tuple[str, str]]:
    """(path, what it looks like) for every plaintext credential inside `value`."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            plain = isinstance(item, str) and item not in ("", MASKED, "true", "false")
            if plain and is_secret_key(str(key)):
                yield child, f"a plaintext value under a secret-looking key ({key})"
            else:
                yield from secret_looking(item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from secret_looking(item, f"{path}[{i}]")
    elif isinstance(value, str) and value != MASKED:
        for what, pattern in SECRET_VALUE_PATTERNS.items():
            if pattern.search(value):
                yield path, what
