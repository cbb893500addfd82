"""AnalyticsPlatform: the one component that holds every other, wired from typed settings."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.alerts import Alerts
from infra.aws_account import AwsAccount
from infra.component import PlatformComponent, StackContext
from infra.settings import Settings


class AnalyticsPlatform(PlatformComponent):
    def __init__(
        self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        ctx = StackContext.from_settings(settings)
        super().__init__("index:AnalyticsPlatform", name, ctx, opts)
        config = settings.config
        account = AwsAccount.lookup(self, config.aws.region)

        self.alerts = Alerts(
            "alerts",
            config.alerts,
            webhook_url=settings.secrets.alerts_webhook_url,
            account=account,
            ctx=ctx,
            opts=self.child_opts(),
        )

        self.exports: dict[str, pulumi.Input[Any]] = {
            "environment": config.environment,
            "region": config.aws.region,
            "alertsTopicArn": self.alerts.topic_arn,
        }
        self.finish(self.exports)
