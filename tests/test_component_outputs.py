"""Each component's registered outputs: its public face, as terraform-aws-modules' outputs.tf.

A component's `register_outputs` is what `pulumi stack export` holds for it and what other
components and the stack read instead of reaching inside. Every value here is derived from the
child resource it names, so an output that names the wrong resource, or is missing, fails.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.mock_engine import ProgramRun, ResourceRecord, reveal_all
from infra.tiers import TIERS
from tests.conftest import PROJECT, STACKS, RunStack

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def component(run: ProgramRun, type_: str) -> ResourceRecord:
    [found] = [r for r in run.resources if r.type == f"{PROJECT}:{type_}"]
    return found


def outputs(run: ProgramRun, type_: str) -> dict[str, Any]:
    return reveal_all(component(run, type_).outputs)


def under(run: ProgramRun, parent: ResourceRecord, type_: str) -> list[ResourceRecord]:
    """The resources of `type_` anywhere below `parent`."""
    below = {parent.urn}
    found = []
    for resource in run.resources:  # registration order: a parent comes before its children
        if resource.parent in below:
            below.add(resource.urn)
            if resource.type == type_:
                found.append(resource)
    return found


def one_under(run: ProgramRun, parent: ResourceRecord, type_: str) -> ResourceRecord:
    [found] = under(run, parent, type_)
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_alerts_outputs_name_the_topic_and_its_key(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    alerts = component(run, "alerts:Alerts")
    key = one_under(run, alerts, "aws:kms/key:Key")
    assert outputs(run, "alerts:Alerts") == {
        "topicArn": one_under(run, alerts, "aws:sns/topic:Topic").outputs["arn"],
        "keyArn": key.outputs["arn"],
    }
    topic = one_under(run, alerts, "aws:sns/topic:Topic")
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"]


@pytest.mark.parametrize("stack", STACKS)
def test_api_outputs_name_the_api_its_stage_and_each_services_target_groups(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    gateway = component(run, "api:ApiGateway")
    api = one_under(run, gateway, "aws:apigatewayv2/api:Api")
    stage = one_under(run, gateway, "aws:apigatewayv2/stage:Stage")
    groups = {
        g.name: g.outputs["arn"] for g in under(run, gateway, "aws:lb/targetGroup:TargetGroup")
    }
    service = "analytics-api"
    assert outputs(run, "api:ApiGateway") == {
        "apiId": api.id,
        "endpoint": api.outputs["apiEndpoint"],
        "stageName": stage.inputs["name"],
        "targetGroupArns": {service: groups[f"api-{service}"]},
        "previewTargetGroupArns": {service: groups[f"api-{service}-preview"]},
    }


@pytest.mark.parametrize("stack", STACKS)
def test_costs_outputs_name_the_budget_and_the_anomaly_monitor(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    costs = component(run, "costs:CostGuardrails")
    monitor = one_under(run, costs, "aws:costexplorer/anomalyMonitor:AnomalyMonitor")
    budget = one_under(run, costs, "aws:budgets/budget:Budget")
    assert monitor.inputs["name"] == f"{PROJECT}-{stack}-costs-anomalies"
    assert outputs(run, "costs:CostGuardrails") == {
        "budgetName": budget.inputs["name"],
        "anomalyMonitorArn": monitor.outputs["arn"],
    }


@pytest.mark.parametrize("stack", STACKS)
def test_database_outputs_are_the_instances_own(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    database = component(run, "database:Database")
    instance = one_under(run, database, "aws:rds/instance:Instance")
    group = one_under(run, database, "aws:ec2/securityGroup:SecurityGroup")
    assert outputs(run, "database:Database") == {
        "databaseName": instance.inputs["dbName"],
        "endpoint": instance.outputs["address"],
        "port": instance.outputs["port"],
        "resourceId": instance.outputs["resourceId"],
        "masterSecretArn": instance.outputs["masterUserSecrets"][0]["secretArn"],
        "securityGroupId": group.id,
    }


@pytest.mark.parametrize("stack", STACKS)
def test_database_access_outputs_name_the_user_account_and_job(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    access = component(run, "database:DatabaseAccess")
    job = one_under(run, access, "kubernetes:batch/v1:Job")
    deployments = under(run, component(run, "delivery:BlueGreenService"), DEPLOYMENT)
    accounts = {d.inputs["spec"]["template"]["spec"]["serviceAccountName"] for d in deployments}
    assert outputs(run, "database:DatabaseAccess") == {
        "databaseUser": "analytics_api",
        "serviceAccount": "analytics-api",
        "bootstrapJob": job.outputs["metadata"]["name"],
    }
    assert accounts == {"analytics-api"}  # the pods run as the account the role is bound to


@pytest.mark.parametrize("stack", STACKS)
def test_blue_green_outputs_name_its_namespace_services_and_active_color(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    service = component(run, "delivery:BlueGreenService")
    services = {
        s.inputs["spec"]["selector"].get("color"): s.inputs["metadata"]["name"]
        for s in under(run, service, "kubernetes:core/v1:Service")
    }
    namespace = one_under(run, service, "kubernetes:core/v1:Namespace")
    assert outputs(run, "delivery:BlueGreenService") == {
        "namespace": namespace.inputs["metadata"]["name"],
        "activeColor": "blue",
        "activeService": services["blue"],
        "previewService": services["green"],
    }


@pytest.mark.parametrize("stack", STACKS)
def test_image_outputs_name_the_repository_and_the_reference_run(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    image = component(run, "image:ContainerImage")
    repository = one_under(run, image, "aws:ecr/repository:Repository")
    found = outputs(run, "image:ContainerImage")
    assert found["repositoryUrl"] == repository.outputs["repositoryUrl"]
    deployments = under(
        run, component(run, "delivery:BlueGreenService"), "kubernetes:apps/v1:Deployment"
    )
    # The stack's image is what a color without an image of its own runs.
    images = {d.inputs["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments}
    assert found["reference"] in images
    assert set(found) == {"repositoryUrl", "reference"}


@pytest.mark.parametrize("stack", STACKS)
def test_monitoring_outputs_name_every_alarm_its_log_groups_and_dashboard(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    monitoring = component(run, "monitoring:Monitoring")
    prefix = f"{PROJECT}-{stack}-"
    alarms = {
        a.inputs["name"].removeprefix(prefix): a.outputs["arn"]
        for a in under(run, monitoring, "aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    # The service's composite alarm (the FIS stop condition) is one of them.
    for composite in under(run, monitoring, "aws:cloudwatch/compositeAlarm:CompositeAlarm"):
        alarms[composite.inputs["alarmName"].removeprefix(prefix)] = composite.outputs["arn"]
    dashboard = one_under(run, monitoring, "aws:cloudwatch/dashboard:Dashboard")
    groups = {
        g.inputs["name"].rsplit("/", 1)[1]: g.inputs["name"]
        for g in under(run, monitoring, "aws:cloudwatch/logGroup:LogGroup")
        if g.inputs.get("name", "").startswith(f"/{PROJECT}/{stack}/")
    }
    assert outputs(run, "monitoring:Monitoring") == {
        "alarmArns": alarms,
        "applicationLogGroups": groups,
        "dashboardName": dashboard.inputs["dashboardName"],
    }
    assert groups == {"analytics-api": f"/{PROJECT}/{stack}/analytics-api"}


@pytest.mark.parametrize("stack", STACKS)
def test_tracing_outputs_are_the_collectors_address_and_the_tiers_ratio(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    collector = component(run, "tracing:TraceCollector")
    [service] = under(run, collector, "kubernetes:core/v1:Service")
    metadata = service.inputs["metadata"]
    [http] = [p["port"] for p in service.inputs["spec"]["ports"] if p["name"] == "otlp-http"]
    assert outputs(run, "tracing:TraceCollector") == {
        "endpoint": f"http://{metadata['name']}.{metadata['namespace']}.svc.cluster.local:{int(http)}",
        "namespace": metadata["namespace"],
        "samplingRatio": TIERS[stack].defaults.tracing.sampling_ratio,
    }


@pytest.mark.parametrize("stack", STACKS)
def test_chaos_outputs_name_each_template_by_its_experiment(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack, overrides={"chaos": {"enabled": True}})
    chaos = component(run, "chaos:ChaosExperiments")
    templates = under(run, chaos, "aws:fis/experimentTemplate:ExperimentTemplate")
    assert templates
    assert outputs(run, "chaos:ChaosExperiments") == {
        "templateIds": {t.inputs["tags"]["Experiment"]: t.id for t in templates}
    }


@pytest.mark.parametrize("stack", STACKS)
def test_the_platforms_outputs_are_the_stacks(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    assert outputs(run, "index:AnalyticsPlatform") == reveal_all(run.outputs)
