"""The environment tiers: one table of defaults and policy floors per tier.

A stack picks its tier with the `environment` key. Its config then only states where it differs
from the tier's defaults; the policy floors are limits that no stack of the tier may go below.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.model import ConfigModel

Environment = Literal["dev", "staging", "prod"]


class TierDefaults(ConfigModel):
    """Config values a stack gets unless it sets them, in the shape of the stack config."""

    protect_stateful_resources: bool
    kms_deletion_window_days: int = Field(ge=7, le=30)


class TierPolicy(BaseModel):
    """Floors that a stack of this tier may not go below, whatever its config says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Stateful resources (keys, topics, later the database) carry `protect=True`.
    require_protect: bool
    # A KMS key scheduled for deletion can be cancelled only inside this window.
    min_kms_deletion_window_days: int = Field(ge=7, le=30)
    # Somebody must receive the alarms.
    require_alert_subscriber: bool
    # The AWS provider refuses to run against any account not listed.
    require_allowed_account_ids: bool


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: TierDefaults
    policy: TierPolicy


TIERS: dict[Environment, Tier] = {
    "dev": Tier(
        defaults=TierDefaults(protect_stateful_resources=False, kms_deletion_window_days=7),
        policy=TierPolicy(
            require_protect=False,
            min_kms_deletion_window_days=7,
            require_alert_subscriber=False,
            require_allowed_account_ids=False,
        ),
    ),
    "staging": Tier(
        defaults=TierDefaults(protect_stateful_resources=False, kms_deletion_window_days=14),
        policy=TierPolicy(
            require_protect=False,
            min_kms_deletion_window_days=7,
            require_alert_subscriber=True,
            require_allowed_account_ids=False,
        ),
    ),
    "prod": Tier(
        defaults=TierDefaults(protect_stateful_resources=True, kms_deletion_window_days=30),
        policy=TierPolicy(
            require_protect=True,
            min_kms_deletion_window_days=30,
            require_alert_subscriber=True,
            require_allowed_account_ids=True,
        ),
    ),
}
