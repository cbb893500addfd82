"""RDS: encrypted, private, highly available and recoverable where the tier asks, observable."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from pulumi_policy import PolicyResource, ResourceValidationArgs

from infra.policies._rules import environment, get, resource_rule, stack_rule, tier

CATEGORY = "rds"
INSTANCE = "aws:rds/instance:Instance"
PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
LOG_EXPORTS = ("postgresql", "upgrade")


def _encrypted(args: ResourceValidationArgs) -> Iterable[str]:
    props = args.props
    if props.get("storageEncrypted") is not True:
        yield "storageEncrypted is not true"
    key = props.get("kmsKeyId")
    if not key or str(key).endswith("alias/aws/rds"):
        yield "kmsKeyId is not a customer-managed key (it is unset or the AWS-managed aws/rds key)"


def _not_public(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("publiclyAccessible") is not False:
        yield "publiclyAccessible must be false"


def _multi_az(args: ResourceValidationArgs) -> Iterable[str]:
    if tier(args.props).policy.require_multi_az and args.props.get("multiAz") is not True:
        yield f"a {environment(args.props)} database must be Multi-AZ (multiAz: true)"


def _backups(args: ResourceValidationArgs) -> Iterable[str]:
    floor = tier(args.props).policy.min_backup_retention_days
    days = args.props.get("backupRetentionPeriod") or 0
    if days < floor:
        yield (
            f"backupRetentionPeriod is {days:g}; a {environment(args.props)} database keeps "
            f"backups at least {floor} days"
        )


def _deletion_protection(args: ResourceValidationArgs) -> Iterable[str]:
    if not tier(args.props).policy.require_deletion_protection:
        return
    if args.props.get("deletionProtection") is not True:
        yield "a prod database needs deletionProtection: true"
    if not args.opts.protect:
        yield "a prod database needs the Pulumi `protect` option"


def _flag(key: str, message: str) -> Callable[[ResourceValidationArgs], Iterable[str]]:
    def check(args: ResourceValidationArgs) -> Iterable[str]:
        if args.props.get(key) is not True:
            yield message

    return check


def _log_exports(args: ResourceValidationArgs) -> Iterable[str]:
    exported = set(args.props.get("enabledCloudwatchLogsExports") or [])
    missing = [e for e in LOG_EXPORTS if e not in exported]
    if missing:
        yield f"enabledCloudwatchLogsExports lacks {', '.join(missing)}"


def _observability(args: ResourceValidationArgs) -> Iterable[str]:
    policy, env = tier(args.props).policy, environment(args.props)
    if policy.require_performance_insights and not args.props.get("performanceInsightsEnabled"):
        yield f"a {env} database needs performanceInsightsEnabled: true"
    if policy.require_enhanced_monitoring and not args.props.get("monitoringInterval"):
        yield f"a {env} database needs enhanced monitoring (monitoringInterval > 0)"


def _tls_forced(resources: Sequence[PolicyResource]) -> Iterable[tuple[str, str]]:
    forcing = {
        get(r.props, "name"): r
        for r in resources
        if r.resource_type == PARAMETER_GROUP
        and any(
            get(p, "name") == "rds.force_ssl" and str(get(p, "value")) == "1"
            for p in get(r.props, "parameters") or []
        )
    }
    for r in resources:
        if r.resource_type != INSTANCE:
            continue
        group = r.props.get("parameterGroupName")
        sources = r.property_dependencies.get("parameterGroupName", [])
        if group not in forcing and not any(
            s.urn in {f.urn for f in forcing.values()} for s in sources
        ):
            yield (
                r.urn,
                (
                    f"parameter group {group!r} does not set rds.force_ssl=1: connections "
                    "could be unencrypted"
                ),
            )


POLICIES = [
    resource_rule("rds-encrypted-with-cmk", CATEGORY,
                  "RDS storage is encrypted with a customer-managed KMS key.", [INSTANCE],
                  _encrypted, "Set storage_encrypted=True and kms_key_id to the database's own key "
                  "(infra/database.py creates one)."),
    resource_rule("rds-not-public", CATEGORY, "RDS instances are not publicly accessible.",
                  [INSTANCE], _not_public, "Set publicly_accessible=False; reach the database "
                  "from the cluster through its security group."),
    resource_rule("rds-multi-az-in-prod", CATEGORY, "Prod databases run Multi-AZ.", [INSTANCE],
                  _multi_az, "Set database.multiAz: true (the prod tier default)."),
    resource_rule("rds-backup-retention", CATEGORY,
                  "Automated backups are kept at least the tier's minimum number of days.",
                  [INSTANCE], _backups, "Raise database.backupRetentionDays to the tier's floor "
                  "(infra/tiers.py: min_backup_retention_days)."),
    resource_rule("rds-deletion-protection-in-prod", CATEGORY,
                  "Prod databases have deletion protection and Pulumi `protect`.", [INSTANCE],
                  _deletion_protection, "Keep database.deletionProtection and "
                  "protectStatefulResources true in prod."),
    resource_rule("rds-iam-authentication", CATEGORY, "IAM database authentication is on.",
                  [INSTANCE], _flag("iamDatabaseAuthenticationEnabled",
                                    "iamDatabaseAuthenticationEnabled is not true"),
                  "Set iam_database_authentication_enabled=True."),
    resource_rule("rds-log-exports", CATEGORY,
                  "The postgresql and upgrade logs are exported to CloudWatch.", [INSTANCE],
                  _log_exports, "Set enabled_cloudwatch_logs_exports=['postgresql', 'upgrade'] "
                  "and create their log groups first."),
    resource_rule("rds-auto-minor-upgrades", CATEGORY, "Automatic minor version upgrades are on.",
                  [INSTANCE], _flag("autoMinorVersionUpgrade",
                                    "autoMinorVersionUpgrade is not true"),
                  "Set auto_minor_version_upgrade=True; RDS applies them in the maintenance "
                  "window."),
    resource_rule("rds-copy-tags-to-snapshots", CATEGORY, "Snapshots inherit the instance's tags.",
                  [INSTANCE], _flag("copyTagsToSnapshot", "copyTagsToSnapshot is not true"),
                  "Set copy_tags_to_snapshot=True, so snapshots keep owner and cost tags."),
    resource_rule("rds-insights-and-monitoring", CATEGORY,
                  "Performance Insights and enhanced monitoring are on outside dev.", [INSTANCE],
                  _observability, "Set database.performanceInsights: true and "
                  "database.monitoringIntervalSeconds above 0."),
    stack_rule("rds-tls-forced", CATEGORY,
               "Every database uses a parameter group of this stack that sets rds.force_ssl=1.",
               _tls_forced, "Give the instance the stack's parameter group (infra/database.py), "
               "which sets rds.force_ssl=1."),
]  # fmt: skip
