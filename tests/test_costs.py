"""Cost guardrails: a monthly budget and a cost anomaly monitor per stack, alerting the topic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.mock_engine import ProgramRun
from infra.settings import InvalidConfig
from tests.conftest import STACKS, RunStack, policy_doc, stack_account

BUDGET = "aws:budgets/budget:Budget"
MONITOR = "aws:costexplorer/anomalyMonitor:AnomalyMonitor"
SUBSCRIPTION = "aws:costexplorer/anomalySubscription:AnomalySubscription"
TOPIC = "aws:sns/topic:Topic"
TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"


def _statements(text: str) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in policy_doc(text)["Statement"]}


def _notifications(run: ProgramRun) -> list[tuple[str, str, float, str]]:
    return [
        (n["notificationType"], n["comparisonOperator"], n["threshold"], n["thresholdType"])
        for n in run.one(BUDGET).inputs["notifications"]
    ]


@pytest.mark.parametrize(
    ("stack", "amount"), [("dev", "300"), ("staging", "1000"), ("prod", "5000")]
)
def test_each_stack_has_a_monthly_cost_budget_of_its_tier_scoped_by_its_stack_tag(
    run_stack: RunStack, stack: str, amount: str
) -> None:
    """AWS Budgets, "Creating a cost budget" and the Budgets API `CostFilters` (Terraform /
    Pulumi `aws_budgets_budget`: `TagKeyValue` values are `user:<tag key>$<tag value>`): a
    COST budget per MONTHLY period; names are unique per account, so each carries its stack."""
    budget = run_stack(stack).one(BUDGET, "costs-budget")
    assert budget.inputs["budgetType"] == "COST"
    assert budget.inputs["timeUnit"] == "MONTHLY"
    assert (budget.inputs["limitAmount"], budget.inputs["limitUnit"]) == (amount, "USD")
    assert budget.inputs["name"] == f"analytics-platform-{stack}-costs-budget"
    assert budget.inputs["costFilters"] == [
        {"name": "TagKeyValue", "values": [f"user:Stack${stack}"]}
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_the_budget_alerts_the_topic_on_actual_and_forecasted_spend(
    run_stack: RunStack, stack: str
) -> None:
    """AWS Budgets, "Configuring budget notifications" / Budgets API `Notification`: ACTUAL
    alerts once spend passes the threshold, FORECASTED once the month's forecast does;
    PERCENTAGE thresholds are shares of the budgeted amount; at most 5 per budget."""
    run = run_stack(stack)
    assert _notifications(run) == [
        ("ACTUAL", "GREATER_THAN", 80, "PERCENTAGE"),
        ("ACTUAL", "GREATER_THAN", 100, "PERCENTAGE"),
        ("FORECASTED", "GREATER_THAN", 100, "PERCENTAGE"),
    ]
    topic_arn = run.one(TOPIC).outputs["arn"]
    for notification in run.one(BUDGET).inputs["notifications"]:
        assert notification["subscriberSnsTopicArns"] == [topic_arn]


def test_budget_amount_and_thresholds_follow_stack_overrides(run_stack: RunStack) -> None:
    run = run_stack(
        "prod",
        overrides={
            "costs": {
                "monthlyBudgetUsd": 12500.5,
                "actualAlertPercents": [50, 90, 110],
                "forecastAlertPercent": 120,
                "anomalyThresholdUsd": 1000,
            }
        },
    )
    assert run.one(BUDGET).inputs["limitAmount"] == "12500.5"
    assert _notifications(run) == [
        ("ACTUAL", "GREATER_THAN", 50, "PERCENTAGE"),
        ("ACTUAL", "GREATER_THAN", 90, "PERCENTAGE"),
        ("ACTUAL", "GREATER_THAN", 110, "PERCENTAGE"),
        ("FORECASTED", "GREATER_THAN", 120, "PERCENTAGE"),
    ]
    dimension = run.one(SUBSCRIPTION).inputs["thresholdExpression"]["dimension"]
    assert dimension["values"] == ["1000"]


@pytest.mark.parametrize(
    ("costs", "message"),
    [
        ({"monthlyBudgetUsd": 0}, r"costs\.monthlyBudgetUsd = 0: allowed: greater than 0"),
        ({"monthlyBudgetUsd": "lots"}, r"costs\.monthlyBudgetUsd = \"lots\": allowed: a valid"),
        (
            {"actualAlertPercents": [100, 80]},
            r"costs\.actualAlertPercents = \[100, 80\]: must rise strictly",
        ),
        (
            {"actualAlertPercents": [10, 20, 30, 40, 50]},
            r"costs\.actualAlertPercents = \[10, 20, 30, 40, 50\]: allowed: have at most 4",
        ),
        ({"anomalyThresholdUsd": -5}, r"costs\.anomalyThresholdUsd = -5: allowed: greater than 0"),
        ({"budget": 5}, r"costs\.budget = 5: unknown key; allowed keys here: monthlyBudgetUsd"),
    ],
)
def test_a_bad_cost_setting_is_a_one_line_error_naming_the_key(
    run_stack: RunStack, costs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidConfig, match=rf"stack staging: analytics-platform:{message}"):
        run_stack("staging", overrides={"costs": costs})


@pytest.mark.parametrize(
    ("stack", "threshold"), [("dev", "25"), ("staging", "100"), ("prod", "300")]
)
def test_each_stack_has_a_tag_scoped_anomaly_monitor_alerting_the_topic_at_once(
    run_stack: RunStack, stack: str, threshold: str
) -> None:
    """AWS Cost Anomaly Detection ("Creating your cost monitors and alert subscriptions";
    Cost Explorer API `AnomalyMonitor`, `AnomalySubscription`): a CUSTOM monitor takes a cost
    allocation tag expression (an account holds only one DIMENSIONAL SERVICE monitor);
    IMMEDIATE alerts go only to SNS subscribers; `ThresholdExpression` on
    ANOMALY_TOTAL_IMPACT_ABSOLUTE replaces the deprecated `Threshold`."""
    run = run_stack(stack)
    monitor = run.one(MONITOR, "costs-anomalies")
    assert monitor.inputs["monitorType"] == "CUSTOM"
    assert json.loads(monitor.inputs["monitorSpecification"]) == {
        "Tags": {"Key": "Stack", "Values": [stack], "MatchOptions": ["EQUALS"]}
    }
    subscription = run.one(SUBSCRIPTION, "costs-anomalies")
    # Named for the stack, not auto-named: the console and the alert e-mails show the name.
    assert (
        monitor.inputs["name"]
        == subscription.inputs["name"]
        == (f"analytics-platform-{stack}-costs-anomalies")
    )
    assert subscription.inputs["frequency"] == "IMMEDIATE"
    assert subscription.inputs["monitorArnLists"] == [monitor.outputs["arn"]]
    assert subscription.inputs["subscribers"] == [
        {"type": "SNS", "address": run.one(TOPIC).outputs["arn"]}
    ]
    assert subscription.inputs["thresholdExpression"] == {
        "dimension": {
            "key": "ANOMALY_TOTAL_IMPACT_ABSOLUTE",
            "matchOptions": ["GREATER_THAN_OR_EQUAL"],
            "values": [threshold],
        }
    }


def test_budget_and_anomaly_subscription_wait_for_the_topic_policy(run_stack: RunStack) -> None:
    """AWS Cost Management, "Creating an Amazon SNS topic for budget notifications": creating a
    budget whose topic Budgets may not publish to fails; so day 1 creates the policy first."""
    run = run_stack("dev")
    policy_urn = run.one(TOPIC_POLICY).urn
    assert policy_urn in run.one(BUDGET).dependencies
    assert policy_urn in run.one(SUBSCRIPTION).dependencies


def test_the_topic_lets_budgets_and_cost_anomaly_detection_of_this_account_publish(
    run_stack: RunStack,
) -> None:
    """AWS Cost Management, "Creating an Amazon SNS topic for budget notifications"
    (budgets.amazonaws.com, aws:SourceAccount and aws:SourceArn arn:aws:budgets::<account>:*)
    and "Creating an Amazon SNS topic for anomaly notifications" (costalerts.amazonaws.com,
    aws:SourceAccount)."""
    run = run_stack("staging")
    topic_arn = run.one(TOPIC).outputs["arn"]
    account = stack_account("staging")
    statements = _statements(run.one(TOPIC_POLICY).inputs["policy"])
    budgets = statements["AllowBudgetsOfThisAccount"]
    assert budgets["Principal"] == {"Service": "budgets.amazonaws.com"}
    assert (budgets["Action"], budgets["Resource"]) == ("sns:Publish", topic_arn)
    assert budgets["Condition"] == {
        "ArnLike": {"aws:SourceArn": f"arn:aws:budgets::{account}:*"},
        "StringEquals": {"aws:SourceAccount": account},
    }
    anomalies = statements["AllowCostAnomalyDetectionOfThisAccount"]
    assert anomalies["Principal"] == {"Service": "costalerts.amazonaws.com"}
    assert (anomalies["Action"], anomalies["Resource"]) == ("sns:Publish", topic_arn)
    assert anomalies["Condition"] == {"StringEquals": {"aws:SourceAccount": account}}


@pytest.mark.parametrize("stack", STACKS)
def test_the_topic_key_lets_budgets_and_cost_anomaly_detection_encrypt(
    run_stack: RunStack, stack: str
) -> None:
    """AWS Cost Management: a budget's or anomaly subscription's encrypted topic needs a key
    policy that lets the service use the key ("Securing your Amazon SNS data with SSE";
    SNS, "Enable compatibility between event sources from AWS services and encrypted topics":
    kms:GenerateDataKey* and kms:Decrypt); without it notifications are dropped silently."""
    run = run_stack(stack)
    statements = _statements(run.one("aws:kms/key:Key", "alerts-key").inputs["policy"])
    account = stack_account(stack)
    budgets = statements["AllowBudgetsToUseKey"]
    assert budgets["Principal"] == {"Service": "budgets.amazonaws.com"}
    assert set(budgets["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert budgets["Condition"] == {
        "StringEquals": {"aws:SourceAccount": account},
        "ArnLike": {"aws:SourceArn": f"arn:aws:budgets::{account}:*"},
    }
    anomalies = statements["AllowCostAnomalyDetectionToUseKey"]
    assert anomalies["Principal"] == {"Service": "costalerts.amazonaws.com"}
    assert set(anomalies["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert anomalies["Condition"] == {"StringEquals": {"aws:SourceAccount": account}}


def test_the_budget_name_is_a_stack_output(run_stack: RunStack) -> None:
    assert run_stack("prod").outputs["budgetName"] == "analytics-platform-prod-costs-budget"
