"""IAM documents the components share."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def service_trust_policy(
    service: str,
    *,
    actions: Sequence[str] = ("sts:AssumeRole",),
    condition: Mapping[str, Any] | None = None,
) -> str:
    """A role only the AWS `service` principal may assume; `condition` guards against the
    confused deputy (IAM User Guide, "The confused deputy problem")."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": actions[0] if len(actions) == 1 else list(actions),
    }
    if condition:
        statement["Condition"] = dict(condition)
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]}, sort_keys=True)
