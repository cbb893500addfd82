"""Every policy document the program writes, against the IAM JSON policy language.

IAM refuses a malformed document at create time (`MalformedPolicyDocument`), so a document
that only the mocks accept fails on the first real `pulumi up`. The rules are AWS's:
- IAM User Guide, "Grammar of the IAM JSON policy language" and "IAM JSON policy elements
  reference": the top-level and statement elements, Effect, Action/NotAction, the principal
  types, condition operators with their IfExists and ForAllValues/ForAnyValue forms.
- "Policies and permissions in IAM" / "Identity-based policies and resource-based policies": an
  identity-based policy names no principal ("Policy document should not specify a principal")
  and needs a Resource; a resource-based policy and a role's trust policy need a Principal; a
  trust policy has no Resource ("Has prohibited field Resource").
- "IAM and AWS STS quotas": a role's inline policies add up to at most 10,240 non-whitespace
  characters, a trust policy to at most 2,048 (the default quota).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from infra.mock_engine import ProgramRun, reveal_all
from tests.conftest import STACKS, RunStack

TOP_LEVEL = {"Version", "Id", "Statement"}
STATEMENT = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource",
             "NotResource", "Condition"}  # fmt: skip
PRINCIPAL_TYPES = {"AWS", "Service", "Federated", "CanonicalUser"}
OPERATORS = {
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
    "StringLike", "StringNotLike", "NumericEquals", "NumericNotEquals", "NumericLessThan",
    "NumericLessThanEquals", "NumericGreaterThan", "NumericGreaterThanEquals", "DateEquals",
    "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan",
    "DateGreaterThanEquals", "Bool", "BinaryEquals", "IpAddress", "NotIpAddress", "ArnEquals",
    "ArnLike", "ArnNotEquals", "ArnNotLike", "Null",
}  # fmt: skip
ACTION = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9*?]+$|^\*$")
# Where each kind of document sits: (resource type, input path) -> its kind.
IDENTITY, RESOURCE_BASED, TRUST = "identity", "resource-based", "trust"
KINDS = {
    ("aws:iam/rolePolicy:RolePolicy", "policy"): IDENTITY,
    ("aws:iam/policy:Policy", "policy"): IDENTITY,
    ("aws:iam/role:Role", "assumeRolePolicy"): TRUST,
    ("aws:kms/key:Key", "policy"): RESOURCE_BASED,
    ("aws:sns/topicPolicy:TopicPolicy", "policy"): RESOURCE_BASED,
    ("aws:ecr/repositoryPolicy:RepositoryPolicy", "policy"): RESOURCE_BASED,
}
ROLE_INLINE_LIMIT, TRUST_LIMIT = 10_240, 2_048


def documents(run: ProgramRun) -> Iterator[tuple[str, str, str, str]]:
    """(kind, resource name, input path, text) of every policy document in the run."""
    for resource in run.resources:
        inputs = reveal_all(resource.inputs)
        for key, value in inputs.items():
            if isinstance(value, str) and '"Statement"' in value:
                kind = KINDS.get((resource.type, key))
                assert kind is not None, f"unclassified policy: {resource.type} {key}"
                yield kind, resource.name, key, value
        for inline in inputs.get("inlinePolicies") or []:
            yield IDENTITY, resource.name, "inlinePolicies", inline["policy"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def problems(kind: str, text: str) -> list[str]:
    """What IAM would refuse in this document; empty when it is well formed."""
    doc = json.loads(text)
    found = [f"unknown top-level element {k}" for k in sorted(set(doc) - TOP_LEVEL)]
    if doc.get("Version") != "2012-10-17":
        found.append(f"Version {doc.get('Version')!r}")
    statements = _list(doc.get("Statement"))
    if not statements or statements == [None]:
        found.append("no Statement")
    sids = [s["Sid"] for s in statements if isinstance(s, dict) and "Sid" in s]
    if len(sids) != len(set(sids)):
        found.append(f"repeated Sid in {sids}")
    for i, statement in enumerate(statements):
        found += [f"[{i}] {p}" for p in _statement_problems(kind, statement)]
    return found


def _statement_problems(kind: str, s: dict[str, Any]) -> list[str]:
    found = [f"unknown element {k}" for k in sorted(set(s) - STATEMENT)]
    if s.get("Effect") not in ("Allow", "Deny"):
        found.append(f"Effect {s.get('Effect')!r}")
    actions = [k for k in ("Action", "NotAction") if k in s]
    if len(actions) != 1:
        found.append(f"needs exactly one of Action, NotAction: {actions}")
    for action in (a for k in actions for a in _list(s[k])):
        if not isinstance(action, str) or not ACTION.match(action):
            found.append(f"action {action!r} is not service:Action")
    principals = [k for k in ("Principal", "NotPrincipal") if k in s]
    resources = [k for k in ("Resource", "NotResource") if k in s]
    if kind == IDENTITY and principals:
        found.append("an identity-based policy names no principal")
    if kind != IDENTITY and len(principals) != 1:
        found.append(f"needs exactly one of Principal, NotPrincipal: {principals}")
    if kind == IDENTITY and len(resources) != 1:
        found.append(f"needs exactly one of Resource, NotResource: {resources}")
    if kind == TRUST and resources:
        found.append("a trust policy has no Resource")
    for key in principals:
        principal = s[key]
        if principal != "*" and not (isinstance(principal, dict) and principal
                                     and set(principal) <= PRINCIPAL_TYPES):  # fmt: skip
            found.append(f"{key} {principal!r}")
    found += _condition_problems(s.get("Condition", {}))
    return found


def _condition_problems(condition: Any) -> list[str]:
    if not isinstance(condition, dict):
        return [f"Condition {condition!r}"]
    found = []
    for operator, keys in condition.items():
        base = re.sub(r"^For(AllValues|AnyValue):", "", operator).removesuffix("IfExists")
        if base not in OPERATORS:
            found.append(f"condition operator {operator}")
        if not isinstance(keys, dict) or not keys:
            found.append(f"{operator} has no condition keys")
    return found


def _size(text: str) -> int:
    return len(re.sub(r"\s", "", text))


@pytest.mark.parametrize("stack", STACKS)
def test_every_policy_document_is_one_iam_accepts(run_stack: RunStack, stack: str) -> None:
    found = {
        f"{name}.{key}": p
        for kind, name, key, text in documents(run_stack(stack))
        if (p := problems(kind, text))
    }
    assert found == {}


@pytest.mark.parametrize("stack", STACKS)
def test_every_kind_of_document_is_checked(run_stack: RunStack, stack: str) -> None:
    """The check above is only as wide as what it finds: each kind is there in every stack."""
    kinds = {kind for kind, *_ in documents(run_stack(stack))}
    assert kinds == {IDENTITY, RESOURCE_BASED, TRUST}


@pytest.mark.parametrize("stack", STACKS)
def test_role_policies_fit_iams_size_quotas(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    inline: dict[str, int] = defaultdict(int)
    for policy in run.of_type("aws:iam/rolePolicy:RolePolicy"):
        inline[str(policy.inputs["role"])] += _size(reveal_all(policy.inputs)["policy"])
    assert inline
    assert {role: size for role, size in inline.items() if size > ROLE_INLINE_LIMIT} == {}
    trust = {r.name: _size(r.inputs["assumeRolePolicy"]) for r in run.of_type("aws:iam/role:Role")}
    assert {name: size for name, size in trust.items() if size > TRUST_LIMIT} == {}


ALLOW = {"Effect": "Allow", "Action": "sns:Publish", "Resource": "*"}


@pytest.mark.parametrize(
    ("kind", "statement", "says"),
    [
        (IDENTITY, {**ALLOW, "EFFECT": "Allow"}, "unknown element EFFECT"),
        (IDENTITY, {"Effect": "allow", "Action": "s3:Get*", "Resource": "*"}, "Effect 'allow'"),
        (IDENTITY, {"Effect": "Allow", "Resource": "*"}, "needs exactly one of Action"),
        (IDENTITY, {**ALLOW, "NotAction": "s3:*"}, "needs exactly one of Action"),
        (IDENTITY, {**ALLOW, "Action": "Publish"}, "action 'Publish' is not service:Action"),
        (IDENTITY, {**ALLOW, "Principal": "*"}, "an identity-based policy names no principal"),
        (IDENTITY, {"Effect": "Allow", "Action": "sns:Publish"}, "needs exactly one of Resource"),
        (RESOURCE_BASED, ALLOW, "needs exactly one of Principal"),
        (TRUST, {**ALLOW, "Principal": {"Service": "x"}}, "a trust policy has no Resource"),
        (RESOURCE_BASED, {**ALLOW, "Principal": {"Aws": "*"}}, "Principal {'Aws': '*'}"),
        (IDENTITY, {**ALLOW, "Condition": {"StringEqual": {"a": "b"}}}, "operator StringEqual"),
        (IDENTITY, {**ALLOW, "Condition": {"Bool": {}}}, "Bool has no condition keys"),
    ],
)
def test_each_grammar_rule_catches_what_iam_refuses(
    kind: str, statement: dict[str, Any], says: str
) -> None:
    found = problems(kind, json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    assert any(says in p for p in found), found


def test_the_document_itself_is_checked_too() -> None:
    assert problems(IDENTITY, json.dumps({"Statement": [ALLOW]})) == ["Version None"]
    assert problems(
        IDENTITY, json.dumps({"Version": "2012-10-17", "Statement": [], "statement": []})
    ) == [
        "unknown top-level element statement",
        "no Statement",
    ]
    twice = {"Version": "2012-10-17", "Statement": [{**ALLOW, "Sid": "A"}, {**ALLOW, "Sid": "A"}]}
    assert problems(IDENTITY, json.dumps(twice)) == ["repeated Sid in ['A', 'A']"]
    allowed = {**ALLOW, "Condition": {"ForAnyValue:StringLikeIfExists": {"aws:TagKeys": "x*"}}}
    assert problems(IDENTITY, json.dumps({"Version": "2012-10-17", "Statement": allowed})) == []


# IAM API reference, CreateRole: Description, up to 1,000 characters of this set.
DESCRIPTION = re.compile(r"^[\t\n\r\u0020-\u007E\u00A1-\u00FF]{1,1000}$")


@pytest.mark.parametrize("stack", STACKS)
def test_every_role_says_what_it_is_for_in_a_description_iam_takes(
    run_stack: RunStack, stack: str
) -> None:
    roles = run_stack(stack).of_type("aws:iam/role:Role")
    assert roles
    assert [r.name for r in roles if not DESCRIPTION.match(r.inputs.get("description") or "")] == []


# IAM User Guide, "IAM and AWS STS quotas": a role name is at most 64 characters of these.
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")


@pytest.mark.parametrize("stack", STACKS)
def test_every_role_is_named_for_its_stack_within_iams_limits(
    run_stack: RunStack, stack: str
) -> None:
    """Named, not auto-named: a role Pulumi names gets a random suffix, so CloudTrail and the
    console no longer say which stack it serves, and a replacement gets another name."""
    roles = run_stack(stack).of_type("aws:iam/role:Role")
    names = {r.name: r.inputs.get("name") or "" for r in roles}
    assert {k: n for k, n in names.items() if not ROLE_NAME.match(n)} == {}
    assert {
        k: n for k, n in names.items() if not n.startswith(f"analytics-platform-{stack}-")
    } == {}
