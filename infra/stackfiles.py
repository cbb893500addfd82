"""Reads Pulumi.yaml and Pulumi.<stack>.yaml into config as the Pulumi CLI hands it to a program.

Values become strings (objects and lists as JSON), keys without a namespace get the project's.
`secure:` values cannot be decrypted without the stack's secrets provider; they become opaque
stand-ins, and their keys are marked secret, so the program treats them as it would the real
ones. Their ciphertext is never passed on. A secret the stack lists under `requiredSecrets` but
that is not set (a fresh clone: stack files carry no placeholder ciphertext) gets a stand-in
too, named in `StackConfig.stand_ins` so that the preview can say so.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class StackFileError(Exception):
    """A project or stack file is missing or malformed."""


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    main_dir: Path
    config: dict[str, str]
    secret_keys: list[str]
    # Required secrets that are not set, given a stand-in value (full keys).
    stand_ins: tuple[str, ...] = ()


# pulumi/pulumi sdk/go/common/resource/config (symmetricCrypter): the passphrase provider writes
# `v1:<nonce>:<ciphertext>`, both standard base64, the nonce 12 bytes (AES-256-GCM); the service
# and cloud KMS providers write the ciphertext alone, in standard base64.
_NONCE_BYTES = 12
SECURE_SHAPE = (
    "`v1:<12-byte nonce, base64>:<ciphertext, base64>` (passphrase provider) or the base64 "
    "ciphertext alone (Pulumi Cloud or a KMS provider); set it with `pulumi config set --secret`"
)


def secure_value_problem(value: object) -> str | None:
    """Why `value` is not a `secure:` value the Pulumi CLI could decrypt, or None."""
    if not isinstance(value, str) or not value:
        return "empty or not a string"
    parts = value.split(":")
    if parts[0] == "v1":
        if len(parts) != 3:
            return "a v1 value has exactly three parts separated by `:`"
        nonce, ciphertext = (_base64(part) for part in parts[1:])
        if nonce is None or ciphertext is None or not ciphertext:
            return "the nonce or the ciphertext is not base64"
        if len(nonce) != _NONCE_BYTES:
            return f"the nonce is {len(nonce)} bytes, not {_NONCE_BYTES}"
        return None
    if len(parts) != 1 or not _base64(value):
        return "neither a v1 value nor a base64 ciphertext"
    return None


def _base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def secret_placeholder(key: str) -> str:
    """The offline stand-in for a secret's value: never a real one, and says what it is."""
    return f"offline-stand-in-for-secret-{key}"


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StackFileError(f"{path.name}: file not found in {path.parent}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise StackFileError(f"{path.name}: malformed YAML{where}: {problem}") from None


def available_stacks(project_dir: Path) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))


def load_stack_config(project_dir: Path, stack: str) -> StackConfig:
    project_file = _read_yaml(project_dir / "Pulumi.yaml")
    if not isinstance(project_file, dict) or not isinstance(project_file.get("name"), str):
        raise StackFileError("Pulumi.yaml: expected a mapping with a `name`")
    project = project_file["name"]
    main_dir = (project_dir / str(project_file.get("main") or ".")).resolve()

    stack_path = project_dir / f"Pulumi.{stack}.yaml"
    if not stack_path.exists():
        known = ", ".join(available_stacks(project_dir)) or "none"
        raise StackFileError(f"{stack_path.name}: no such stack file; stacks here: {known}")
    stack_file = _read_yaml(stack_path) or {}
    if not isinstance(stack_file, dict):
        raise StackFileError(f"{stack_path.name}: expected a mapping at the top level")
    raw_config = stack_file.get("config") or {}
    if not isinstance(raw_config, dict):
        raise StackFileError(f"{stack_path.name}: `config` must be a mapping")
    _require_no_default_providers(raw_config, stack_path.name)

    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in raw_config.items():
        full_key = str(key) if ":" in str(key) else f"{project}:{key}"
        plain, secret = _strip_secure(value, full_key, stack_path.name)
        config[full_key] = to_config_string(plain)
        if secret:
            secret_keys.append(full_key)
    stand_ins = _stand_ins(project, raw_config, config)
    for full_key in stand_ins:
        config[full_key] = secret_placeholder(full_key)
        secret_keys.append(full_key)
    return StackConfig(project, stack, main_dir, config, secret_keys, stand_ins)


def _stand_ins(project: str, raw_config: dict[Any, Any], config: dict[str, str]) -> tuple[str, ...]:
    """The full keys of the required secrets (`requiredSecrets`) that the stack file leaves out."""
    required = raw_config.get(f"{project}:requiredSecrets", raw_config.get("requiredSecrets"))
    if not isinstance(required, list):
        return ()  # absent, or malformed: the program's settings report it
    keys = (f"{project}:{name}" for name in required if isinstance(name, str))
    return tuple(key for key in keys if key not in config)


DISABLE_DEFAULT_PROVIDERS = "pulumi:disable-default-providers"


def _require_no_default_providers(raw_config: dict[Any, Any], file: str) -> None:
    """Every stack turns default providers off: nothing may use ambient credentials.

    Checked here, on the file, rather than in the program: it is an engine option.
    """
    listed = raw_config.get(DISABLE_DEFAULT_PROVIDERS)
    if isinstance(listed, list) and "*" in listed:
        return
    shown = "(not set)" if listed is None else json.dumps(listed)
    raise StackFileError(
        f'{file}: {DISABLE_DEFAULT_PROVIDERS} = {shown}: required: a list holding "*" '
        "(every package), so that no resource is created by a default provider with the "
        "ambient AWS credentials or kubeconfig"
    )


def _strip_secure(value: Any, key: str, file: str) -> tuple[Any, bool]:
    """Replace every `{secure: ...}` with a placeholder; say whether any was found.

    A malformed one is refused, as the Pulumi CLI refuses to decrypt it; its text is not shown.
    """
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            problem = secure_value_problem(value["secure"])
            if problem:
                raise StackFileError(
                    f"{file}: {key}: malformed secure value ({problem}); expected {SECURE_SHAPE}"
                )
            return secret_placeholder(key), True
        items = [(k, *_strip_secure(v, f"{key}.{k}", file)) for k, v in value.items()]
        return {k: v for k, v, _ in items}, any(s for _, _, s in items)
    if isinstance(value, list):
        pairs = [_strip_secure(v, f"{key}[{i}]", file) for i, v in enumerate(value)]
        return [v for v, _ in pairs], any(s for _, s in pairs)
    return value, False


def to_config_string(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)
