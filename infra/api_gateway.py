"""ApiGateway: the HTTP API in front of the analytics API, and its private path into the cluster.

Traffic path: HTTP API ($default stage) -> VPC link -> internal ALB listener (owned here) ->
weighted forward to two instance target groups, in the style of Argo Rollouts' ALB routing:
  stable  (weight 100 - canary) -> the active Service's NodePort  -> pods of the active color
  preview (weight canary)       -> the preview Service's NodePort -> pods of the idle color
A listener rule sends requests carrying the preview header to the preview group; the API sets
that header only on its IAM-authorised `/preview/...` route, so the release tool can test the
idle color through the real path before any user request goes there.

The target groups hold the cluster's nodes, not pods: one TargetGroupBinding per Service (AWS
Load Balancer Controller, created with the Services) keeps each group's node list current. A
blue/green switch changes the Services' selectors; the load balancer's targets never change.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.component import PlatformComponent, StackContext
from infra.settings import ApiSettings, NetworkSettings

READINESS_PATH = "/health/ready"
# The listener rule that reaches the preview color matches this header; the API sets it only on
# the IAM-authorised preview route and strips it from every public one.
PREVIEW_HEADER = "x-analytics-preview"
PREVIEW_HEADER_VALUE = "true"
PREVIEW_ROUTE_PREFIX = "/preview"
PREVIEW_RULE_PRIORITY = 10
# ALB forward actions take weights from 0 to 999; ours are percentages.
MAX_WEIGHT = 100


def canary_weights(canary_weight: int) -> tuple[int, int]:
    """(stable, preview) weights of the listener for a canary at `canary_weight` percent."""
    if not 0 <= canary_weight <= MAX_WEIGHT:
        raise ValueError(f"canary weight {canary_weight} is outside 0-{MAX_WEIGHT}")
    return MAX_WEIGHT - canary_weight, canary_weight


# AWS's TLS 1.3 policy that still accepts TLS 1.2 clients (API Gateway private integrations).
LISTENER_TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


def listener_port(settings: ApiSettings) -> int:
    """HTTPS on 443 when the hop is encrypted, else plain HTTP on 80 inside the VPC."""
    return 443 if settings.load_balancer_tls else 80


# One JSON object per request; field names follow the $context variables of HTTP APIs.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "sourceIp": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "httpMethod": "$context.httpMethod",
    "routeKey": "$context.routeKey",
    "path": "$context.path",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationStatus": "$context.integrationStatus",
    "integrationLatency": "$context.integrationLatency",
    "integrationError": "$context.integration.error",
}


class ApiGateway(PlatformComponent):
    endpoint: pulumi.Output[str]
    preview_invoke_arn: pulumi.Output[str]
    api_id: pulumi.Output[str]
    stage_name: pulumi.Output[str]
    target_group_arns: dict[str, pulumi.Output[str]]
    preview_target_group_arns: dict[str, pulumi.Output[str]]
    # The ARN suffixes CloudWatch uses as the LoadBalancer and TargetGroup dimensions.
    load_balancer_arn_suffix: pulumi.Output[str]
    target_group_arn_suffixes: dict[str, pulumi.Output[str]]
    preview_target_group_arn_suffixes: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        settings: ApiSettings,
        network: NetworkSettings,
        subnet_ids: pulumi.Output[list[str]],
        logs_key_arn: pulumi.Output[str],
        ctx: StackContext,
        canary_weight: int = 0,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("api:ApiGateway", name, ctx, opts)
        link_sg, lb_sg = self._security_groups(settings, network)

        load_balancer = aws.lb.LoadBalancer(
            name,
            name=self.physical_name("lb", max_length=32),
            internal=True,
            load_balancer_type="application",
            subnets=subnet_ids,
            security_groups=[lb_sg.id],
            drop_invalid_header_fields=True,
            enable_deletion_protection=ctx.protect,
            tags=self.tags(),
            opts=self.child_opts(),
        )
        stable = self._target_group(f"{name}-{settings.service}", settings.service,
                                    settings.node_port, network, settings.service)  # fmt: skip
        preview = self._target_group(
            f"{name}-{settings.service}-preview",
            f"{settings.service}-preview",
            settings.preview_node_port,
            network,
            settings.service,
        )
        listener = self._listener(name, settings, load_balancer, stable, preview, canary_weight)
        self._preview_rule(name, listener, preview)

        access_logs = self.log_group(
            f"{name}-access-logs", f"/aws/apigateway/{self.physical_name()}/access", logs_key_arn
        )
        api = aws.apigatewayv2.Api(
            name,
            name=self.physical_name(),
            protocol_type="HTTP",
            description=f"Analytics API of {ctx.project}/{ctx.stack}",
            # With a custom domain, the execute-api URL would be a second, unguarded way in.
            disable_execute_api_endpoint=settings.custom_domain is not None,
            tags=self.tags(),
            opts=self.child_opts(),
        )
        vpc_link = aws.apigatewayv2.VpcLink(
            name,
            name=self.physical_name(),
            subnet_ids=subnet_ids,
            security_group_ids=[link_sg.id],
            tags=self.tags(),
            opts=self.child_opts(),
        )
        # A client may not choose the preview color: public routes drop the header the
        # listener's preview rule matches; only the IAM-signed /preview route sets it.
        strip = {f"remove:header.{PREVIEW_HEADER}": "''"}
        routes = {
            # Everything under / goes to the service as it is.
            "ANY /{proxy+}": ("proxy", "ANY", strip, "NONE"),
            # The public health check is the service's readiness check.
            "GET /health": ("health", "GET", {**strip, "overwrite:path": READINESS_PATH}, "NONE"),
            # The release tool's way to the preview color before any user traffic goes there.
            f"ANY {PREVIEW_ROUTE_PREFIX}/{{proxy+}}": (
                "preview",
                "ANY",
                {
                    "overwrite:path": "/${request.path.proxy}",
                    f"overwrite:header.{PREVIEW_HEADER}": PREVIEW_HEADER_VALUE,
                },
                "AWS_IAM",
            ),
        }
        tls = settings.load_balancer_tls
        for route_key, (suffix, method, parameters, authorization) in routes.items():
            integration = aws.apigatewayv2.Integration(
                f"{name}-{suffix}",
                api_id=api.id,
                integration_type="HTTP_PROXY",
                integration_method=method,
                integration_uri=listener.arn,
                connection_type="VPC_LINK",
                connection_id=vpc_link.id,
                payload_format_version="1.0",
                request_parameters=parameters,
                timeout_milliseconds=29_000,
                # With TLS to the listener, API Gateway sends this name (SNI) and verifies the
                # listener's certificate against it.
                tls_config=(
                    aws.apigatewayv2.IntegrationTlsConfigArgs(server_name_to_verify=tls.server_name)
                    if tls
                    else None
                ),
                opts=self.child_opts(),
            )
            aws.apigatewayv2.Route(
                f"{name}-{suffix}",
                api_id=api.id,
                route_key=route_key,
                authorization_type=authorization,
                target=pulumi.Output.concat("integrations/", integration.id),
                opts=self.child_opts(),
            )
        stage = aws.apigatewayv2.Stage(
            name,
            api_id=api.id,
            name="$default",
            auto_deploy=True,
            access_log_settings=aws.apigatewayv2.StageAccessLogSettingsArgs(
                destination_arn=access_logs.arn,
                format=json.dumps(ACCESS_LOG_FORMAT, sort_keys=True),
            ),
            default_route_settings=aws.apigatewayv2.StageDefaultRouteSettingsArgs(
                throttling_burst_limit=settings.throttling_burst_limit,
                throttling_rate_limit=settings.throttling_rate_limit,
                detailed_metrics_enabled=True,
            ),
            tags=self.tags(),
            opts=self.child_opts(),
        )

        endpoint: pulumi.Output[str] = api.api_endpoint
        if settings.custom_domain is not None:
            domain = aws.apigatewayv2.DomainName(
                name,
                domain_name=settings.custom_domain.domain_name,
                domain_name_configuration=aws.apigatewayv2.DomainNameDomainNameConfigurationArgs(
                    certificate_arn=settings.custom_domain.certificate_arn,
                    endpoint_type="REGIONAL",
                    security_policy="TLS_1_2",
                ),
                tags=self.tags(),
                opts=self.child_opts(),
            )
            aws.apigatewayv2.ApiMapping(
                name,
                api_id=api.id,
                domain_name=domain.domain_name,
                stage=stage.name,
                opts=self.child_opts(),
            )
            endpoint = pulumi.Output.concat("https://", domain.domain_name)

        self.endpoint = endpoint
        # What the release tool's role needs `execute-api:Invoke` on to reach the preview color.
        self.preview_invoke_arn = pulumi.Output.concat(
            api.execution_arn, "/*/*", PREVIEW_ROUTE_PREFIX, "/*"
        )
        self.api_id = api.id
        self.stage_name = stage.name
        self.target_group_arns = {settings.service: stable.arn}
        self.preview_target_group_arns = {settings.service: preview.arn}
        self.load_balancer_arn_suffix = load_balancer.arn_suffix
        self.target_group_arn_suffixes = {settings.service: stable.arn_suffix}
        self.preview_target_group_arn_suffixes = {settings.service: preview.arn_suffix}
        self.finish(
            {
                "endpoint": self.endpoint,
                "apiId": self.api_id,
                "stageName": self.stage_name,
                "targetGroupArns": self.target_group_arns,
                "previewTargetGroupArns": self.preview_target_group_arns,
            }
        )

    def _target_group(
        self, resource: str, role: str, node_port: int, network: NetworkSettings, service: str
    ) -> aws.lb.TargetGroup:
        """Instance targets on one Service's NodePort, health-checked on the pods' readiness."""
        return aws.lb.TargetGroup(
            resource,
            name=self.physical_name(role, max_length=32),
            target_type="instance",
            protocol="HTTP",
            port=node_port,
            vpc_id=network.vpc_id,
            # Matches the pods' preStop drain: a node is taken out of rotation before its pods go.
            deregistration_delay=30,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                enabled=True,
                protocol="HTTP",
                path=READINESS_PATH,
                port="traffic-port",
                matcher="200",
                interval=10,
                timeout=5,
                healthy_threshold=2,
                unhealthy_threshold=2,
            ),
            tags=self.tags(Service=service, Role=role),
            opts=self.child_opts(),
        )

    def _listener(
        self,
        name: str,
        settings: ApiSettings,
        load_balancer: aws.lb.LoadBalancer,
        stable: aws.lb.TargetGroup,
        preview: aws.lb.TargetGroup,
        canary_weight: int,
    ) -> aws.lb.Listener:
        """Weighted forward: stable `100 - canary_weight`, preview `canary_weight` (0 at rest).

        No target-group stickiness: the app keeps no session state, and per-request splitting
        keeps the canary's share of requests equal to its weight, which the analysis relies on.
        """
        weights = canary_weights(canary_weight)
        tls = settings.load_balancer_tls
        return aws.lb.Listener(
            name,
            load_balancer_arn=load_balancer.arn,
            port=listener_port(settings),
            protocol="HTTPS" if tls else "HTTP",
            certificate_arn=tls.certificate_arn if tls else None,
            ssl_policy=LISTENER_TLS_POLICY if tls else None,
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="forward",
                    forward=aws.lb.ListenerDefaultActionForwardArgs(
                        target_groups=[
                            aws.lb.ListenerDefaultActionForwardTargetGroupArgs(
                                arn=group.arn, weight=weight
                            )
                            for group, weight in ((stable, weights[0]), (preview, weights[1]))
                        ]
                    ),
                )
            ],
            tags=self.tags(),
            opts=self.child_opts(),
        )

    def _preview_rule(
        self, name: str, listener: aws.lb.Listener, preview: aws.lb.TargetGroup
    ) -> None:
        """Requests carrying the preview header reach the preview color, whatever the weights."""
        aws.lb.ListenerRule(
            f"{name}-preview",
            listener_arn=listener.arn,
            priority=PREVIEW_RULE_PRIORITY,
            conditions=[
                aws.lb.ListenerRuleConditionArgs(
                    http_header=aws.lb.ListenerRuleConditionHttpHeaderArgs(
                        http_header_name=PREVIEW_HEADER, values=[PREVIEW_HEADER_VALUE]
                    )
                )
            ],
            actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=preview.arn)],
            tags=self.tags(),
            opts=self.child_opts(),
        )

    def _security_groups(
        self, settings: ApiSettings, network: NetworkSettings
    ) -> tuple[aws.ec2.SecurityGroup, aws.ec2.SecurityGroup]:
        """VPC link -> load balancer on the listener port -> cluster nodes on the NodePort only."""
        groups = {
            role: aws.ec2.SecurityGroup(
                f"{self.resource_name}-{role}",
                name=self.physical_name(role),
                description=description,
                vpc_id=network.vpc_id,
                tags=self.tags(Name=self.physical_name(role)),
                opts=self.child_opts(),
            )
            for role, description in (
                ("vpc-link", "API gateway VPC link: to the internal load balancer only"),
                ("lb", "Internal load balancer: from the VPC link, to the cluster NodePort"),
            )
        }
        link, lb = groups["vpc-link"], groups["lb"]
        listener, nodes = listener_port(settings), settings.node_port
        preview_nodes = settings.preview_node_port
        # (direction, rule, group it belongs to, the other side, port, description)
        rules = [
            (aws.vpc.SecurityGroupEgressRule, "vpc-link-to-lb", link.id, lb.id, listener,
             f"To the internal load balancer's listener (TCP {listener})"),
            (aws.vpc.SecurityGroupIngressRule, "lb-from-vpc-link", lb.id, link.id, listener,
             f"From the API gateway VPC link to the listener (TCP {listener})"),
            (aws.vpc.SecurityGroupEgressRule, "lb-to-nodes", lb.id,
             network.cluster_node_security_group_id, nodes,
             f"To the cluster nodes' NodePort of {settings.service} (TCP {nodes})"),
            (aws.vpc.SecurityGroupIngressRule, "nodes-from-lb",
             network.cluster_node_security_group_id, lb.id, nodes,
             f"From the internal load balancer to the {settings.service} NodePort (TCP {nodes})"),
            (aws.vpc.SecurityGroupEgressRule, "lb-to-nodes-preview", lb.id,
             network.cluster_node_security_group_id, preview_nodes,
             f"To the cluster nodes' preview NodePort of {settings.service} (TCP {preview_nodes})"),
            (aws.vpc.SecurityGroupIngressRule, "nodes-from-lb-preview",
             network.cluster_node_security_group_id, lb.id, preview_nodes,
             f"From the internal load balancer to the {settings.service} preview NodePort "
             f"(TCP {preview_nodes})"),
        ]  # fmt: skip
        for rule_type, rule, group, peer, port, description in rules:
            rule_type(
                f"{self.resource_name}-{rule}",
                security_group_id=group,
                referenced_security_group_id=peer,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                description=description,
                tags=self.tags(),
                opts=self.child_opts(),
            )
        return link, lb
