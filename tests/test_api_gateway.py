"""API gateway: HTTP API -> VPC link -> internal load balancer -> NodePort of the active color."""

from __future__ import annotations

import copy
import json

import pytest

from infra.mock_engine import ProgramRun
from infra.settings import InvalidConfig
from tests.conftest import STACKS, RunStack, stack_yaml

API = "aws:apigatewayv2/api:Api"
STAGE = "aws:apigatewayv2/stage:Stage"
ROUTE = "aws:apigatewayv2/route:Route"
INTEGRATION = "aws:apigatewayv2/integration:Integration"
SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"


def _network(stack: str) -> dict[str, object]:
    return stack_yaml(stack)["config"]["analytics-platform:network"]


@pytest.mark.parametrize("stack", STACKS)
def test_http_api_with_an_auto_deploying_default_stage(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    api = run.one(API)
    assert api.inputs["protocolType"] == "HTTP"
    assert api.inputs["name"] == f"analytics-platform-{stack}-api"  # not auto-named
    stage = run.one(STAGE)
    assert stage.inputs["apiId"] == api.id
    assert stage.inputs["name"] == "$default"
    assert stage.inputs["autoDeploy"] is True


@pytest.mark.parametrize(("stack", "days"), [("dev", 7), ("staging", 30), ("prod", 365)])
def test_access_logs_are_json_in_their_own_encrypted_group(
    run_stack: RunStack, stack: str, days: int
) -> None:
    run = run_stack(stack)
    group = run.one("aws:cloudwatch/logGroup:LogGroup", "api-access-logs")
    assert group.inputs["retentionInDays"] == days
    assert group.inputs["kmsKeyId"] == run.one("aws:kms/key:Key", "platform-key").outputs["arn"]
    assert group.protect is (stack == "prod")
    settings = run.one(STAGE).inputs["accessLogSettings"]
    assert settings["destinationArn"] == group.outputs["arn"]
    log_format = json.loads(settings["format"])
    assert log_format["requestId"] == "$context.requestId"
    assert log_format["status"] == "$context.status"


@pytest.mark.parametrize(
    ("stack", "burst", "rate"), [("dev", 50, 20), ("staging", 200, 100), ("prod", 1000, 500)]
)
def test_throttling_per_tier_and_detailed_metrics(
    run_stack: RunStack, stack: str, burst: int, rate: int
) -> None:
    route_settings = run_stack(stack).one(STAGE).inputs["defaultRouteSettings"]
    assert route_settings["throttlingBurstLimit"] == burst
    assert route_settings["throttlingRateLimit"] == rate
    assert route_settings["detailedMetricsEnabled"] is True


def _routes(run: ProgramRun) -> dict[str, dict[str, object]]:
    integrations = {r.id: r.inputs for r in run.of_type(INTEGRATION)}
    routes = {}
    for route in run.of_type(ROUTE):
        target = route.inputs["target"]
        assert target.startswith("integrations/")
        routes[route.inputs["routeKey"]] = integrations[target.removeprefix("integrations/")]
    return routes


def test_routes_reach_the_internal_listener_through_the_vpc_link(run_stack: RunStack) -> None:
    run = run_stack("prod")
    routes = _routes(run)
    assert set(routes) == {"ANY /{proxy+}", "GET /health", "ANY /preview/{proxy+}"}
    listener = run.one("aws:lb/listener:Listener")
    link = run.one("aws:apigatewayv2/vpcLink:VpcLink")
    for integration in routes.values():
        assert integration["integrationType"] == "HTTP_PROXY"
        assert integration["connectionType"] == "VPC_LINK"
        assert integration["connectionId"] == link.id
        assert integration["integrationUri"] == listener.outputs["arn"]
    assert routes["GET /health"]["requestParameters"] == {
        "overwrite:path": "/health/ready",
        "remove:header.x-analytics-preview": "''",
    }


def test_only_the_iam_signed_preview_route_can_choose_the_preview_color(
    run_stack: RunStack,
) -> None:
    """HTTP API parameter mapping can remove or overwrite a request header before it reaches
    the integration (API Gateway, "Transform API requests and responses for HTTP APIs"); routes
    with authorizationType AWS_IAM need a SigV4 signature (API Gateway, "Controlling access to
    HTTP APIs with IAM authorization"). So users can never set the header the listener's
    preview rule matches, and the release tool can."""
    run = run_stack("prod")
    routes = {r.inputs["routeKey"]: r.inputs for r in run.of_type(ROUTE)}
    assert routes["ANY /{proxy+}"]["authorizationType"] == "NONE"
    assert routes["GET /health"]["authorizationType"] == "NONE"
    assert routes["ANY /preview/{proxy+}"]["authorizationType"] == "AWS_IAM"
    integrations = _routes(run)
    assert integrations["ANY /{proxy+}"]["requestParameters"] == {
        "remove:header.x-analytics-preview": "''"
    }
    assert integrations["ANY /preview/{proxy+}"]["requestParameters"] == {
        "overwrite:path": "/${request.path.proxy}",
        "overwrite:header.x-analytics-preview": "true",
    }
    # An HTTP proxy integration passes the route's method on: ANY for ANY routes.
    assert {key: i["integrationMethod"] for key, i in integrations.items()} == {
        "ANY /{proxy+}": "ANY",
        "GET /health": "GET",
        "ANY /preview/{proxy+}": "ANY",
    }
    api = run.one(API)
    assert run.outputs["apiPreviewInvokeArn"] == api.outputs["executionArn"] + "/*/*/preview/*"


def test_the_preview_header_rule_forwards_to_the_preview_target_group(run_stack: RunStack) -> None:
    """Listener rules are evaluated by priority before the default action (Elastic Load
    Balancing, "Listener rules for your Application Load Balancer": http-header condition)."""
    run = run_stack("staging")
    rule = run.one("aws:lb/listenerRule:ListenerRule").inputs
    preview = run.one(TARGET_GROUP, "api-analytics-api-preview")
    assert rule["listenerArn"] == run.one("aws:lb/listener:Listener").outputs["arn"]
    assert rule["conditions"] == [
        {"httpHeader": {"httpHeaderName": "x-analytics-preview", "values": ["true"]}}
    ]
    assert rule["actions"] == [{"type": "forward", "targetGroupArn": preview.outputs["arn"]}]


def test_vpc_link_sits_in_the_private_subnets_with_its_own_group(run_stack: RunStack) -> None:
    run = run_stack("staging")
    link = run.one("aws:apigatewayv2/vpcLink:VpcLink").inputs
    assert link["subnetIds"] == _network("staging")["privateSubnetIds"]
    assert link["securityGroupIds"] == [run.one(SG, "api-vpc-link").id]


@pytest.mark.parametrize("stack", STACKS)
def test_internal_load_balancer_forwards_to_instance_targets_on_the_node_port(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    lb = run.one("aws:lb/loadBalancer:LoadBalancer")
    assert lb.inputs["internal"] is True
    assert lb.inputs["loadBalancerType"] == "application"
    assert lb.inputs["dropInvalidHeaderFields"] is True
    assert lb.inputs["subnets"] == _network(stack)["privateSubnetIds"]
    assert lb.inputs["enableDeletionProtection"] is (stack == "prod")
    assert len(lb.inputs["name"]) <= 32
    stable = run.one(TARGET_GROUP, "api-analytics-api")
    preview = run.one(TARGET_GROUP, "api-analytics-api-preview")
    for group, port in ((stable, 30080), (preview, 30081)):
        assert group.inputs["targetType"] == "instance"
        assert group.inputs["port"] == port
        assert group.inputs["vpcId"] == _network(stack)["vpcId"]
        assert len(group.inputs["name"]) <= 32
        # Elastic Load Balancing, "Health checks for Application Load Balancer target groups":
        # the timeout must be shorter than the interval; a target leaves rotation after 2
        # failed checks 10 s apart.
        assert group.inputs["healthCheck"] == {
            "enabled": True,
            "protocol": "HTTP",
            "path": "/health/ready",
            "port": "traffic-port",
            "matcher": "200",
            "interval": 10,
            "timeout": 5,
            "healthyThreshold": 2,
            "unhealthyThreshold": 2,
        }
    assert stable.inputs["name"] != preview.inputs["name"]
    listener = run.one("aws:lb/listener:Listener").inputs
    assert listener["loadBalancerArn"] == lb.outputs["arn"]
    assert _weights(run) == {"stable": 100, "preview": 0}
    assert run.outputs["targetGroupArns"] == {"analytics-api": stable.outputs["arn"]}
    assert run.outputs["previewTargetGroupArns"] == {"analytics-api": preview.outputs["arn"]}


def _weights(run: ProgramRun) -> dict[str, int]:
    """The listener's forward weights by target group role, and nothing else in the action."""
    [action] = run.one("aws:lb/listener:Listener").inputs["defaultActions"]
    assert set(action) == {"type", "forward"}
    assert action["type"] == "forward"
    assert set(action["forward"]) == {"targetGroups"}  # no stickiness: a per-request split
    arns = {
        run.one(TARGET_GROUP, "api-analytics-api").outputs["arn"]: "stable",
        run.one(TARGET_GROUP, "api-analytics-api-preview").outputs["arn"]: "preview",
    }
    return {arns[group["arn"]]: group["weight"] for group in action["forward"]["targetGroups"]}


@pytest.mark.parametrize("weight", [1, 10, 50, 100])
def test_a_canary_weight_in_config_splits_the_listener_100_minus_w_to_w(
    run_stack: RunStack, weight: int
) -> None:
    """ALB forward actions distribute requests across target groups by weight, 0-999 (Elastic
    Load Balancing, "Listeners for your Application Load Balancers: forward actions")."""
    services = copy.deepcopy(stack_yaml("prod")["config"]["analytics-platform:services"])
    services[0]["canary"] = {"weight": weight}
    run = run_stack("prod", {"services": services})
    assert _weights(run) == {"stable": 100 - weight, "preview": weight}


def test_security_groups_chain_vpc_link_to_load_balancer_to_node_port_only(
    run_stack: RunStack,
) -> None:
    run = run_stack("dev")
    link = run.one(SG, "api-vpc-link").id
    lb = run.one(SG, "api-lb").id
    nodes = _network("dev")["clusterNodeSecurityGroupId"]

    def rules(type_: str) -> set[tuple[str, str, int, int]]:
        found = [r for r in run.of_type(type_) if r.parent and "ApiGateway" in r.parent]
        # The VPC API's protocol names: tcp, udp, icmp, icmpv6, or -1 for all (EC2 API
        # reference, IpPermission.IpProtocol); HTTP and the NodePorts are TCP only.
        assert {r.inputs["ipProtocol"] for r in found} == {"tcp"}
        return {
            (
                r.inputs["securityGroupId"],
                r.inputs["referencedSecurityGroupId"],
                r.inputs["fromPort"],
                r.inputs["toPort"],
            )
            for r in found
        }

    assert rules(EGRESS) == {(link, lb, 80, 80), (lb, nodes, 30080, 30080),
                             (lb, nodes, 30081, 30081)}  # fmt: skip
    assert rules(INGRESS) == {(lb, link, 80, 80), (nodes, lb, 30080, 30080),
                              (nodes, lb, 30081, 30081)}  # fmt: skip


def test_a_custom_domain_gets_tls_1_2_and_replaces_the_default_endpoint(
    run_stack: RunStack,
) -> None:
    domain = {
        "domainName": "analytics.example.com",
        "certificateArn": (
            "arn:aws:acm:eu-west-1:123456789012:certificate/0b1c2d3e-1111-2222-3333-444455556666"
        ),
    }
    run = run_stack("dev", overrides={"api": {"customDomain": domain}})
    configuration = run.one("aws:apigatewayv2/domainName:DomainName").inputs[
        "domainNameConfiguration"
    ]
    assert configuration == {
        "certificateArn": domain["certificateArn"],
        "endpointType": "REGIONAL",
        "securityPolicy": "TLS_1_2",
    }
    mapping = run.one("aws:apigatewayv2/apiMapping:ApiMapping").inputs
    assert mapping["apiId"] == run.one(API).id
    assert mapping["stage"] == "$default"
    assert run.one(API).inputs["disableExecuteApiEndpoint"] is True
    assert run.outputs["apiEndpoint"] == "https://analytics.example.com"


def test_without_a_custom_domain_the_default_endpoint_is_the_output(run_stack: RunStack) -> None:
    run = run_stack("dev")
    assert run.of_type("aws:apigatewayv2/domainName:DomainName") == []
    assert run.one(API).inputs["disableExecuteApiEndpoint"] is False
    assert run.outputs["apiEndpoint"] == run.one(API).outputs["apiEndpoint"]
    assert run.outputs["apiId"] == run.one(API).id
    assert run.outputs["apiStageName"] == "$default"


def test_node_ports_are_configurable_within_the_kubernetes_range(run_stack: RunStack) -> None:
    run = run_stack("dev", overrides={"api": {"nodePort": 31000, "previewNodePort": 31001}})
    assert run.one(TARGET_GROUP, "api-analytics-api").inputs["port"] == 31000
    assert run.one(TARGET_GROUP, "api-analytics-api-preview").inputs["port"] == 31001
    services = {s.name: s.inputs["spec"] for s in run.of_type("kubernetes:core/v1:Service")}
    assert services["analytics-api-active"]["ports"][0]["nodePort"] == 31000
    assert services["analytics-api-preview"]["ports"][0]["nodePort"] == 31001


PROD_TLS = stack_yaml("prod")["config"]["analytics-platform:api"]["loadBalancerTls"]


def test_prod_encrypts_the_hop_from_the_vpc_link_to_the_load_balancer(run_stack: RunStack) -> None:
    """ "Create an HTTPS listener for your Application Load Balancer" (ELB User Guide): port 443,
    a certificate, and a security policy; ELBSecurityPolicy-TLS13-1-2-2021-06 is AWS's
    recommended TLS 1.3 + 1.2 policy. "Working with private integrations for HTTP APIs" (API
    Gateway Developer Guide): with tlsConfig.serverNameToVerify, API Gateway connects to the
    listener over TLS, sends that name (SNI) and verifies the certificate against it."""
    run = run_stack("prod")
    listener = run.one("aws:lb/listener:Listener").inputs
    assert listener["protocol"] == "HTTPS"
    assert listener["port"] == 443
    assert listener["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert listener["certificateArn"] == PROD_TLS["certificateArn"]
    for integration in _routes(run).values():
        assert integration["tlsConfig"] == {"serverNameToVerify": PROD_TLS["serverName"]}
    link, lb = run.one(SG, "api-vpc-link").id, run.one(SG, "api-lb").id
    [egress] = [r.inputs for r in run.of_type(EGRESS) if r.inputs["securityGroupId"] == link]
    [ingress] = [r.inputs for r in run.of_type(INGRESS) if r.inputs["securityGroupId"] == lb]
    assert (egress["fromPort"], egress["toPort"]) == (443, 443)
    assert (ingress["fromPort"], ingress["toPort"]) == (443, 443)


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_without_a_certificate_the_hop_stays_http_inside_the_vpc(
    run_stack: RunStack, stack: str
) -> None:
    run = run_stack(stack)
    listener = run.one("aws:lb/listener:Listener").inputs
    assert (listener["protocol"], listener["port"]) == ("HTTP", 80)
    assert "certificateArn" not in listener
    assert "sslPolicy" not in listener
    for integration in _routes(run).values():
        assert "tlsConfig" not in integration


def test_prod_requires_the_load_balancer_certificate(run_stack: RunStack) -> None:
    with pytest.raises(InvalidConfig) as caught:
        run_stack("prod", overrides={"api": {}})
    [line] = [line for line in caught.value.lines if "loadBalancerTls" in line]
    assert line.startswith("stack prod: analytics-platform:api.loadBalancerTls = (not set): ")
    assert "encrypts the hop from the VPC link to the load balancer" in line


@pytest.mark.parametrize(
    ("arn", "says"),
    [("arn:aws:acm:us-east-1:123456789012:certificate/5c1e7b2a-9d4f-4e3b-8a6c-2f0d1e9b7a43",
      "must be in the stack's region (eu-west-1), not us-east-1"),
     ("arn:aws:iam::123456789012:server-certificate/lb", "allowed: an ACM certificate ARN")],
)  # fmt: skip
def test_the_certificate_must_be_an_acm_certificate_of_the_stacks_region(
    run_stack: RunStack, arn: str, says: str
) -> None:
    """ "Requirements for ACM certificates" / ELB: a listener can use only an ACM certificate of
    its own region."""
    tls = {**PROD_TLS, "certificateArn": arn}
    with pytest.raises(InvalidConfig) as caught:
        run_stack("prod", overrides={"api": {"loadBalancerTls": tls}})
    [line] = [line for line in caught.value.lines if "certificateArn" in line]
    assert line.startswith("stack prod: analytics-platform:api.loadBalancerTls.certificateArn = ")
    assert says in line


@pytest.mark.parametrize("stack", STACKS)
def test_every_security_group_rule_has_a_description(run_stack: RunStack, stack: str) -> None:
    """ "Security group rules" (Amazon VPC User Guide): a rule's description says why it exists;
    AWS Config / Security Hub checks and scanners (e.g. Checkov CKV_AWS_23) flag rules without."""
    run = run_stack(stack)
    rules = run.of_type(INGRESS) + run.of_type(EGRESS)
    assert len(rules) == 7  # the chain to both NodePorts, and the database's
    for rule in rules:
        description = rule.inputs.get("description", "")
        assert 0 < len(description) <= 255, rule.urn
        port = int(rule.inputs["fromPort"])
        assert f"TCP {port}" in description or "PostgreSQL" in description, description


@pytest.mark.parametrize("stack", STACKS)
def test_security_group_names_are_unique_in_the_vpc(run_stack: RunStack, stack: str) -> None:
    """EC2 refuses a second security group of the same name in a VPC (CreateSecurityGroup:
    InvalidGroup.Duplicate)."""
    names = [g.inputs["name"] for g in run_stack(stack).of_type(SG)]
    assert len(names) >= 3
    assert len(names) == len(set(names))
