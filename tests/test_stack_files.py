"""The committed stack files as the real engine reads them: secrets and roles.

The engine decrypts every `secure:` value of the stack before preview, up or refresh, so one
value it cannot decrypt stops every operation on the stack. The passphrase and cloud-KMS secrets
managers write `v1:<base64 12-byte nonce>:<base64 AES-256-GCM ciphertext and 16-byte tag>`, and
the stack file then carries `encryptionsalt` (passphrase) or `secretsprovider` and
`encryptedkey` (pulumi/pulumi sdk/go/common/resource/config/crypt.go, symmetricCrypter;
https://www.pulumi.com/docs/iac/concepts/secrets/#configuring-secrets-encryption).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import SECRET_SET_COMMANDS
from tests.conftest import ROOT

STACK_FILES = sorted(ROOT.glob("Pulumi.*.yaml"))


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return None


def unreadable_secure_values(stack_file: dict[str, Any]) -> list[str]:
    """The `secure:` values the stack's secrets manager could not have written."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if set(value) == {"secure"}:
                found.append(str(value["secure"]))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(stack_file.get("config") or {})
    symmetric = "encryptionsalt" in stack_file or {"secretsprovider", "encryptedkey"} <= set(
        stack_file
    )
    return [value for value in found if not (symmetric and _is_symmetric_ciphertext(value))]


def _is_symmetric_ciphertext(value: str) -> bool:
    parts = value.split(":")
    if len(parts) != 3 or parts[0] != "v1":
        return False
    nonce, sealed = _b64(parts[1]), _b64(parts[2])
    return nonce is not None and len(nonce) == 12 and sealed is not None and len(sealed) >= 16


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_no_stack_file_holds_a_secure_value_its_secrets_manager_cannot_read(path: Path) -> None:
    assert unreadable_secure_values(yaml.safe_load(path.read_text())) == []


SALT = "v1:c2FsdA==:x"
NONCE = base64.b64encode(b"0123456789ab").decode()
SEALED = base64.b64encode(b"ciphertext and its 16-byte tag").decode()


@pytest.mark.parametrize(
    ("stack_file", "unreadable"),
    [
        # The placeholders once committed: an 8-byte nonce, and no secrets manager in the file.
        ({"config": {"k": {"secure": "v1:cHJvZC1ub25jZQ==:cGxhY2Vob2xkZXI="}}}, 1),
        ({"config": {"k": {"secure": f"v1:{NONCE}:{SEALED}"}}}, 1),
        ({"encryptionsalt": SALT, "config": {"k": {"secure": "v1:bm9uY2U=:eA=="}}}, 1),
        ({"encryptionsalt": SALT, "config": {"k": {"secure": "not base64!"}}}, 1),
        ({"encryptionsalt": SALT, "config": {"k": {"secure": f"v1:{NONCE}:{SEALED}"}}}, 0),
        ({"secretsprovider": "awskms://alias/x", "encryptedkey": "AQID",
          "config": {"k": {"o": [{"secure": f"v1:{NONCE}:{SEALED}"}]}}}, 0),
        ({"config": {"k": "plain"}}, 0),
    ],
    ids=["placeholder", "no-secrets-manager", "short-nonce", "not-base64", "passphrase",
         "cloud-kms-nested", "no-secrets"],
)  # fmt: skip
def test_the_ciphertext_check_tells_real_from_placeholder(
    stack_file: dict[str, Any], unreadable: int
) -> None:
    assert len(unreadable_secure_values(stack_file)) == unreadable


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_each_required_secret_is_documented_with_the_command_that_sets_it(path: Path) -> None:
    text = path.read_text()
    config = yaml.safe_load(text)["config"]
    for key in config.get("analytics-platform:requiredSecrets", []):
        assert f"#   {SECRET_SET_COMMANDS[key]}\n" in text, f"{path.name}: how to set {key}"


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_no_stack_needs_a_kubeconfig_secret_and_the_webhook_is_optional(path: Path) -> None:
    """Every stack reaches its EKS cluster with the caller's AWS credentials, so none requires a
    kubeconfig; optional secrets are absent until set."""
    config = yaml.safe_load(path.read_text())["config"]
    assert "kubeconfig" not in config.get("analytics-platform:requiredSecrets", [])
    assert "analytics-platform:kubeconfig" not in config
    assert "analytics-platform:alertsWebhookUrl" not in config


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_no_stack_file_names_a_role_to_assume(path: Path) -> None:
    """The role is the caller's, chosen per operation by the workflows' OIDC credentials; a
    preview or refresh builds the providers from stack config, so a role there would have to be
    assumable by the read-only preview and drift roles (tests/test_workflows.py)."""
    text = path.read_text()
    assert not re.search(r"arn:aws[a-z-]*:iam::\d{12}:role/", text)
    assert "assumeRole" not in text
