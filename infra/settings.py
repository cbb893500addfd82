"""Typed stack settings: every config key the program reads, validated once, at the edge.

The stack's `environment` picks a tier (see `infra/tiers.py`); the tier's defaults fill every key
the stack file leaves out, and the tier's policy floors are checked after that. Secrets are never
part of these models: they are read with `get_secret` and stay `Output`s.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import BaseModel, Field, ValidationError, model_validator

from infra.model import ConfigModel
from infra.tiers import TIERS, Environment, Tier, TierDefaults

AccountId = Annotated[str, Field(pattern=r"^\d{12}$")]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")]
# AWS tag values: letters, digits, spaces and + - = . _ : / @, up to 256 characters.
TagValue = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\w .:/=+@-]+$")]


class TagSettings(ConfigModel):
    """Who owns and pays for the stack; goes onto every taggable AWS resource."""

    owner: TagValue
    cost_center: TagValue


class AwsSettings(ConfigModel):
    """The explicit AWS provider. Default providers are not used."""

    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    # Role the provider assumes, e.g. a deploy role in the stack's account.
    assume_role_arn: str | None = Field(
        default=None, pattern=r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$"
    )
    # The provider refuses to touch any other account: a prod stack can never land in dev.
    allowed_account_ids: tuple[AccountId, ...] = ()


class KubernetesSettings(ConfigModel):
    """The explicit Kubernetes provider: a kubeconfig context, or the secret `kubeconfig` key."""

    context: str | None = Field(default=None, min_length=1, max_length=253)
    # Identifies the cluster to Pulumi, so that rotating credentials in the kubeconfig updates
    # the provider instead of replacing every Kubernetes object. Defaults to the context name.
    cluster_name: str | None = Field(default=None, min_length=1, max_length=253)


class WebhookRetrySettings(ConfigModel):
    """SNS delivery retries for the HTTPS (chat webhook) subscription, within SNS limits."""

    num_retries: int = Field(default=10, ge=0, le=100)
    min_delay_seconds: int = Field(default=20, ge=1, le=3600)
    max_delay_seconds: int = Field(default=600, ge=1, le=3600)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> WebhookRetrySettings:
        if self.min_delay_seconds > self.max_delay_seconds:
            raise ValueError(
                f"minDelaySeconds ({self.min_delay_seconds}) must not exceed "
                f"maxDelaySeconds ({self.max_delay_seconds})"
            )
        return self


class AlertsSettings(ConfigModel):
    """Who gets paged. The chat webhook URL is the secret key `alertsWebhookUrl`."""

    emails: tuple[Email, ...] = ()
    webhook_retry: WebhookRetrySettings = WebhookRetrySettings()


class StackSettings(TierDefaults):
    """Every non-secret key under the project namespace. Tier defaults are inherited fields."""

    environment: Environment
    tags: TagSettings
    aws: AwsSettings
    kubernetes: KubernetesSettings = KubernetesSettings()
    alerts: AlertsSettings = AlertsSettings()


# Keys whose values are secrets: read with get_secret, never validated, logged or printed.
SECRET_KEYS: tuple[str, ...] = ("alertsWebhookUrl", "kubeconfig")
# Namespaces besides the project's that a stack file may use (engine options such as
# pulumi:disable-default-providers). Provider namespaces such as aws: are refused: the program
# configures its providers explicitly, so `aws:region` would be silently ignored.
FOREIGN_NAMESPACES_ALLOWED: tuple[str, ...] = ("pulumi",)


@dataclass(frozen=True)
class StackSecrets:
    alerts_webhook_url: pulumi.Output[str] | None
    kubeconfig: pulumi.Output[str] | None


@dataclass(frozen=True)
class Settings:
    project: str
    stack: str
    config: StackSettings
    tier: Tier
    secrets: StackSecrets

    @property
    def environment(self) -> Environment:
        return self.config.environment


@dataclass(frozen=True)
class Problem:
    """One invalid config value: where it is, what it was, and what is allowed."""

    path: str
    value: str | None  # None when the key is not set at all
    allowed: str

    def render(self, project: str, stack: str) -> str:
        shown = "(not set)" if self.value is None else self.value
        key = self.path if ":" in self.path else f"{project}:{self.path}"
        return f"stack {stack}: {key} = {shown}: {self.allowed}"


class InvalidConfig(pulumi.RunError):
    """Raised before any resource is registered. Pulumi prints it without a traceback."""

    def __init__(self, project: str, stack: str, problems: Iterable[Problem]) -> None:
        self.lines = [p.render(project, stack) for p in problems]
        super().__init__(
            f"invalid config for stack {stack} ({len(self.lines)} problem(s)):\n"
            + "\n".join(self.lines)
        )


def parse_settings(
    project: str,
    stack: str,
    values: Mapping[str, str],
    secret_keys: Iterable[str],
) -> StackSettings:
    """Validate raw config as Pulumi passes it: `ns:key` -> string (objects as JSON strings).

    `secret_keys` names the keys that are secret; their values are never read here.
    Raises InvalidConfig listing every problem found.
    """
    secret = set(secret_keys)
    raw, problems = _project_values(project, values, secret)
    present_secrets = {k.partition(":")[2] for k in secret if k.partition(":")[0] == project}

    unparsable = {p.path for p in problems}
    environment = raw.get("environment")
    tier = next((t for name, t in TIERS.items() if name == environment), None)
    # An invalid environment is reported by the model; the dev defaults stand in so that the
    # rest of the config is still checked in the same run.
    merged = _deep_merge(
        (tier or TIERS["dev"]).defaults.model_dump(by_alias=True, mode="json"), raw
    )
    settings: StackSettings | None = None
    try:
        settings = StackSettings.model_validate(merged)
    except ValidationError as exc:
        # A key whose text did not parse is reported once, not again as missing.
        problems.extend(
            p for p in _from_validation_error(exc) if p.path.split(".")[0] not in unparsable
        )
    if settings is not None and tier is not None:
        problems.extend(_policy_problems(settings, tier, present_secrets))
    if problems or settings is None:
        raise InvalidConfig(project, stack, problems)
    return settings


def load_settings() -> Settings:
    """Read and validate the current stack's config from the Pulumi runtime."""
    project, stack = pulumi.get_project(), pulumi.get_stack()
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    secret_keys = {k for k in keys if runtime_config.is_config_secret(k)}
    values = {k: runtime_config.get_config(k) for k in keys - secret_keys}
    config = parse_settings(project, stack, values, secret_keys)
    cfg = pulumi.Config(project)
    return Settings(
        project=project,
        stack=stack,
        config=config,
        tier=TIERS[config.environment],
        secrets=StackSecrets(
            alerts_webhook_url=cfg.get_secret("alertsWebhookUrl"),
            kubeconfig=cfg.get_secret("kubeconfig"),
        ),
    )


def _project_values(
    project: str, values: Mapping[str, str], secret: set[str]
) -> tuple[dict[str, Any], list[Problem]]:
    raw: dict[str, Any] = {}
    problems: list[Problem] = []
    for full_key in sorted(set(values) | secret):
        namespace, _, key = full_key.partition(":")
        if namespace != project:
            if namespace not in FOREIGN_NAMESPACES_ALLOWED:
                problems.append(
                    Problem(
                        full_key,
                        "(secret)" if full_key in secret else _show(values[full_key]),
                        f"unknown key; this program configures its providers explicitly, so "
                        f"use the {project}:aws and {project}:kubernetes keys instead",
                    )
                )
            continue
        if key in SECRET_KEYS:
            if full_key not in secret:
                problems.append(
                    Problem(
                        key,
                        "(plaintext, not shown)",
                        f"must be a secret: pulumi config set --secret {key} ...",
                    )
                )
            continue
        if full_key in secret:
            problems.append(
                Problem(
                    key,
                    "(secret)",
                    "must not be a secret; only these keys are secrets: " + ", ".join(SECRET_KEYS),
                )
            )
            continue
        text = values[full_key]
        if text.lstrip()[:1] in ("{", "["):
            try:
                raw[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(
                    Problem(key, _show(text), f"not a valid object or list ({exc.msg})")
                )
        else:
            raw[key] = text
    return raw, problems


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_MESSAGE_PREFIXES = ("Input should be ", "Value error, ", "String should ", "Tuple should ")


def _from_validation_error(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        path = _path(loc)
        if err["type"] == "missing":
            problems.append(Problem(path, None, "required key is not set"))
        elif err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            problems.append(
                Problem(
                    path,
                    _show(err["input"]),
                    "unknown key; allowed keys here: " + ", ".join(allowed),
                )
            )
        else:
            message = err["msg"]
            for prefix in _MESSAGE_PREFIXES:
                if message.startswith(prefix):
                    message = message[len(prefix) :]
                    break
            problems.append(Problem(path, _show(err["input"]), f"allowed: {message}"))
    return problems


def _policy_problems(settings: StackSettings, tier: Tier, secrets: set[str]) -> list[Problem]:
    env, policy = settings.environment, tier.policy
    problems = []
    if policy.require_protect and not settings.protect_stateful_resources:
        problems.append(
            Problem(
                "protectStatefulResources",
                "false",
                f"production safety: a {env} stack must protect stateful resources; allowed: true",
            )
        )
    if settings.kms_deletion_window_days < policy.min_kms_deletion_window_days:
        problems.append(
            Problem(
                "kmsDeletionWindowDays",
                str(settings.kms_deletion_window_days),
                f"a {env} stack needs at least {policy.min_kms_deletion_window_days} days; "
                f"allowed: {policy.min_kms_deletion_window_days} to 30",
            )
        )
    if (
        policy.require_alert_subscriber
        and not settings.alerts.emails
        and ("alertsWebhookUrl" not in secrets)
    ):
        problems.append(
            Problem(
                "alerts.emails",
                "[]",
                f"a {env} stack must page somebody: set at least one email, "
                "or the secret alertsWebhookUrl",
            )
        )
    if policy.require_allowed_account_ids and not settings.aws.allowed_account_ids:
        problems.append(
            Problem(
                "aws.allowedAccountIds",
                "[]",
                f"production safety: a {env} stack must pin its AWS account; "
                "allowed: one or more 12-digit account ids",
            )
        )
    if settings.kubernetes.context is None and "kubeconfig" not in secrets:
        problems.append(
            Problem(
                "kubernetes.context",
                None,
                "the Kubernetes provider needs a kubeconfig context, or the secret "
                "kubeconfig; the ambient kubeconfig is never used",
            )
        )
    return problems


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The camelCase keys allowed at a location of the stack config."""
    model: type[BaseModel] = StackSettings
    for part in loc:
        if isinstance(part, int):
            continue
        field = next(f for name, f in model.model_fields.items() if (f.alias or name) == part)
        nested = _model_in(field.annotation)
        if nested is None:
            return []
        model = nested
    keys = [f.alias or name for name, f in model.model_fields.items()]
    return sorted(keys + list(SECRET_KEYS)) if model is StackSettings else keys


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
