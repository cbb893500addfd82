"""CostGuardrails: the stack's monthly AWS Budget and its Cost Anomaly Detection monitor, both
alerting the stack's alerts topic.

Both see the stack's costs by its `Stack` tag, which every taggable resource carries. Billing
sees a tag only once it is activated as a cost allocation tag (once per payer account, in the
Billing console), and only for costs from then on; until then both watch nothing.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.component import PlatformComponent, StackContext
from infra.settings import CostSettings

# The tag that names the stack (StackContext.tags) and scopes every cost view to it.
STACK_TAG = "Stack"


def budget_tag_filter(stack: str) -> str:
    """A Budgets `TagKeyValue` filter value: `user:<key>$<value>` for a user-defined tag."""
    return f"user:{STACK_TAG}${stack}"


def anomaly_monitor_specification(stack: str) -> str:
    """A Cost Explorer expression: costs tagged Stack=<stack> (a CUSTOM monitor)."""
    return json.dumps(
        {"Tags": {"Key": STACK_TAG, "Values": [stack], "MatchOptions": ["EQUALS"]}},
        sort_keys=True,
    )


class CostGuardrails(PlatformComponent):
    budget_name: pulumi.Output[str]
    anomaly_monitor_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: CostSettings,
        topic_arn: pulumi.Input[str],
        topic_policy: pulumi.Resource,
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("costs:CostGuardrails", name, ctx, opts)
        # Budgets and Cost Anomaly Detection check that they may publish when the budget or
        # subscription is created, so the topic's policy comes first.
        after_policy = self.child_opts(depends_on=[topic_policy])
        budget = self._budget(settings, topic_arn, after_policy)
        monitor = aws.costexplorer.AnomalyMonitor(
            f"{name}-anomalies",
            name=self.physical_name("anomalies", max_length=1024),
            # CUSTOM: an account may hold only one DIMENSIONAL (per service) monitor; a tag
            # expression gives each stack its own.
            monitor_type="CUSTOM",
            monitor_specification=anomaly_monitor_specification(ctx.stack),
            tags=self.tags(),
            opts=self.child_opts(),
        )
        aws.costexplorer.AnomalySubscription(
            f"{name}-anomalies",
            name=self.physical_name("anomalies", max_length=1024),
            # IMMEDIATE delivers each anomaly as it is found, and only to SNS subscribers.
            frequency="IMMEDIATE",
            monitor_arn_lists=[monitor.arn],
            subscribers=[
                aws.costexplorer.AnomalySubscriptionSubscriberArgs(type="SNS", address=topic_arn)
            ],
            threshold_expression=aws.costexplorer.AnomalySubscriptionThresholdExpressionArgs(
                dimension=aws.costexplorer.AnomalySubscriptionThresholdExpressionDimensionArgs(
                    key="ANOMALY_TOTAL_IMPACT_ABSOLUTE",
                    match_options=["GREATER_THAN_OR_EQUAL"],
                    values=[_amount(settings.anomaly_threshold_usd)],
                )
            ),
            tags=self.tags(),
            opts=after_policy,
        )
        self.budget_name = budget.name
        self.anomaly_monitor_arn = monitor.arn
        self.finish({"budgetName": self.budget_name, "anomalyMonitorArn": monitor.arn})

    def _budget(
        self, settings: CostSettings, topic_arn: pulumi.Input[str], opts: pulumi.ResourceOptions
    ) -> aws.budgets.Budget:
        notifications = [
            aws.budgets.BudgetNotificationArgs(
                notification_type="ACTUAL",
                comparison_operator="GREATER_THAN",
                threshold=percent,
                threshold_type="PERCENTAGE",
                subscriber_sns_topic_arns=[topic_arn],
            )
            for percent in settings.actual_alert_percents
        ]
        notifications.append(
            aws.budgets.BudgetNotificationArgs(
                notification_type="FORECASTED",
                comparison_operator="GREATER_THAN",
                threshold=settings.forecast_alert_percent,
                threshold_type="PERCENTAGE",
                subscriber_sns_topic_arns=[topic_arn],
            )
        )
        return aws.budgets.Budget(
            f"{self.resource_name}-budget",
            name=self.physical_name("budget", max_length=100),
            budget_type="COST",
            time_unit="MONTHLY",
            limit_amount=_amount(settings.monthly_budget_usd),
            limit_unit="USD",
            cost_filters=[
                aws.budgets.BudgetCostFilterArgs(
                    name="TagKeyValue", values=[budget_tag_filter(self.ctx.stack)]
                )
            ],
            notifications=notifications,
            tags=self.tags(),
            opts=opts,
        )


def _amount(usd: float) -> str:
    # Budgets and Cost Explorer take amounts as decimal text; "300" rather than "300.0".
    return f"{usd:.2f}".rstrip("0").rstrip(".")
