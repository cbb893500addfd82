"""API gateway: access logs, throttling, and TLS 1.2 on custom domains."""

from __future__ import annotations

from collections.abc import Iterable

from pulumi_policy import ResourceValidationArgs

from infra.policies._rules import get, resource_rule

CATEGORY = "api-gateway"
STAGE = "aws:apigatewayv2/stage:Stage"
DOMAIN = "aws:apigatewayv2/domainName:DomainName"


def _access_logs(args: ResourceValidationArgs) -> Iterable[str]:
    settings = args.props.get("accessLogSettings")
    if not get(settings, "destinationArn") or not get(settings, "format"):
        yield "accessLogSettings needs a destinationArn and a format"


def _throttled(args: ResourceValidationArgs) -> Iterable[str]:
    route = args.props.get("defaultRouteSettings")
    for key in ("throttlingBurstLimit", "throttlingRateLimit"):
        if not get(route, key):
            yield f"defaultRouteSettings.{key} is not set: the API can be flooded"


def _tls12(args: ResourceValidationArgs) -> Iterable[str]:
    policy = get(args.props, "domainNameConfiguration", "securityPolicy")
    if policy != "TLS_1_2":
        yield f"securityPolicy is {policy!r}; custom domains must use TLS_1_2"


POLICIES = [
    resource_rule("api-access-logging", CATEGORY, "Every API stage writes access logs.", [STAGE],
                  _access_logs, "Set access_log_settings with the access log group's ARN and "
                  "the JSON format (infra/api_gateway.py)."),
    resource_rule("api-throttling", CATEGORY, "Every API stage throttles its default route.",
                  [STAGE], _throttled, "Set api.throttlingBurstLimit and "
                  "api.throttlingRateLimit (tier defaults exist)."),
    resource_rule("api-domain-tls12", CATEGORY, "Custom domains require TLS 1.2.", [DOMAIN],
                  _tls12, "Set domain_name_configuration.security_policy='TLS_1_2'."),
]  # fmt: skip
