"""The offline plan diff: what a pull request changes in a stack, as markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.mock_engine import FAKE_DB_PASSWORD
from infra.plan_diff import REPLACE_ON, compare, render
from infra.preview import main
from infra.stackfiles import secret_placeholder
from infra.stateful import STATEFUL_TYPES
from tests.conftest import ROOT, RunStack, preview_of_copy, renamed_database, unchanged_run


def _doc(stack: str) -> dict[str, Any]:
    return json.loads(json.dumps(unchanged_run(stack).to_json()))


def _diff_cli(stack: str, base: dict[str, Any], tmp_path: Path,
              capsys: pytest.CaptureFixture[str]) -> str:  # fmt: skip
    path = tmp_path / "base.json"
    path.write_text(json.dumps(base))
    assert main(["--stack", stack, "--diff", str(path)]) == 0
    return capsys.readouterr().out


def test_an_unchanged_stack_prints_no_changes_and_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _diff_cli("prod", _doc("prod"), tmp_path, capsys)
    assert "No changes: the `prod` stack is the same as on the base branch." in out
    assert "WARNING" not in out


def test_a_changed_property_shows_its_old_and_new_value_under_its_component(
    run_stack: RunStack,
) -> None:
    head = run_stack("prod", overrides={"database": {"backupRetentionDays": 35}}).to_json()
    text = render(compare(_doc("prod"), json.loads(json.dumps(head))))
    assert "0 to add, 1 to update in place, 0 to replace, 0 to remove." in text
    section = text.split("#### database\n", 1)[1]
    assert section.startswith("- **update** `aws:rds/instance:Instance` `database`\n")
    assert "  - `backupRetentionPeriod`: `30` → `35`" in section
    assert "WARNING" not in text


def test_added_and_removed_resources_are_listed(run_stack: RunStack) -> None:
    head = json.loads(json.dumps(run_stack("dev", overrides={"alerts": {"emails": []}}).to_json()))
    text = render(compare(_doc("dev"), head))
    assert "- **remove** `aws:sns/topicSubscription:TopicSubscription` `alerts-email-" in text
    reverse = render(compare(head, _doc("dev")))
    assert "- **add** `aws:sns/topicSubscription:TopicSubscription` `alerts-email-" in reverse


def test_secrets_show_as_secret_and_never_in_plaintext(run_stack: RunStack) -> None:
    endpoint = "https://events.pagerduty.com/integration/k/enqueue"
    head = json.loads(json.dumps(run_stack(
        "prod",
        overrides={"alerts": {"emails": ["oncall@example.com"],
                              "paging": {"service": "pagerduty"}}},
        secrets={"alertsPagingEndpoint": endpoint, "kubeconfig": "apiVersion: v1"},
    ).to_json()))  # fmt: skip
    base = json.loads(json.dumps(head))
    # A base that held the kubeconfig in the clear (as a leak would).
    [provider] = [r for r in base["resources"] if r["type"] == "pulumi:providers:kubernetes"]
    provider["inputs"]["kubeconfig"] = "clear-kubeconfig"
    text = render(compare(base, head))
    assert "`kubeconfig`: `clear-kubeconfig` → `[secret]`" in text
    assert endpoint not in render(compare(_doc("prod"), head))
    assert FAKE_DB_PASSWORD not in text
    assert secret_placeholder("analytics-platform:kubeconfig") not in text


def test_a_renamed_database_gets_a_warning_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = preview_of_copy("prod", renamed_database(tmp_path, "analytics-db", alias=False))
    text = render(compare(_doc("prod"), head))
    [warning] = [line for line in text.splitlines() if line.startswith("WARNING:")]
    assert warning.startswith(
        "WARNING: stateful resource database (aws:rds/instance:Instance) would be deleted or "
        "replaced"
    )
    assert "- **add** `aws:rds/instance:Instance` `analytics-db`" in text


def test_an_aliased_rename_is_a_change_not_a_deletion(tmp_path: Path) -> None:
    head = preview_of_copy("prod", renamed_database(tmp_path, "analytics-db", alias=True))
    diff = compare(_doc("prod"), head)
    assert not diff.warnings
    assert not diff.removed
    [change] = [c for c in diff.changed if c.resource["name"] == "analytics-db"]
    assert change.renamed_from is not None
    assert change.renamed_from.endswith("::database")
    assert "(renamed from `database`, aliased)" in render(diff)


def test_an_unreadable_base_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "base.json"
    broken.write_text('{"no": "resources"}')
    assert main(["--stack", "dev", "--diff", str(broken)]) == 2
    assert "not a preview JSON" in capsys.readouterr().err
    assert main(["--stack", "dev", "--diff", str(tmp_path / "missing.json")]) == 2


def _resource(doc: dict[str, Any], name: str) -> dict[str, Any]:
    custom = {"database": "aws:rds/instance:Instance", "alerts-topic": "aws:sns/topic:Topic"}
    return next(r for r in doc["resources"] if (r["type"], r["name"]) == (custom[name], name))


def test_each_change_is_an_update_in_place_or_a_replacement() -> None:
    """The AWS provider replaces an RDS instance when a ForceNew input changes (db_name,
    storage_encrypted, kms_key_id, …: hashicorp/terraform-provider-aws,
    internal/service/rds/instance.go) and updates it in place otherwise (backup retention)."""
    base, head = _doc("dev"), _doc("dev")
    _resource(base, "database")["inputs"]["dbName"] = "reports"
    _resource(base, "database")["inputs"]["backupRetentionPeriod"] = 3
    _resource(base, "alerts-topic")["inputs"]["signatureVersion"] = 1
    diff = compare(base, head)
    actions = {c.resource["name"]: c.action for c in diff.changed}
    assert actions == {"database": "replace", "alerts-topic": "update"}
    text = render(diff)
    assert "0 to add, 1 to update in place, 1 to replace, 0 to remove." in text
    assert (
        "- **replace** `aws:rds/instance:Instance` `database` (replaced because dbName changes)"
        in text
    )
    assert "  - `dbName`: `reports` → `analytics` (forces replacement)" in text
    assert "  - `backupRetentionPeriod`: `3` → `1`\n" in text
    assert "- **update** `aws:sns/topic:Topic` `alerts-topic`" in text
    assert (
        "WARNING: stateful resource database (aws:rds/instance:Instance) would be replaced by a "
        "new, empty one: dbName cannot change in place"
    ) in text
    assert "BLOCKED" not in text  # dev does not protect its database


def test_removing_or_replacing_a_protected_resource_is_flagged_as_blocked() -> None:
    """Pulumi refuses to delete a protected resource, so a plan that needs to is blocked."""
    base, head = _doc("prod"), _doc("prod")
    head["resources"] = [r for r in head["resources"] if r["name"] != "alerts-topic"]
    _resource(base, "database")["inputs"]["storageEncrypted"] = False
    text = render(compare(base, head))
    assert (
        "BLOCKED: protected resource alerts-topic (aws:sns/topic:Topic) would be deleted; "
        "`pulumi up` refuses to delete a protected resource"
    ) in text
    assert (
        "BLOCKED: protected resource database (aws:rds/instance:Instance) would be replaced "
        "(by storageEncrypted)"
    ) in text
    assert "- **remove** `aws:sns/topic:Topic` `alerts-topic` [protected]" in text


def test_a_kubernetes_object_is_replaced_when_its_identity_changes() -> None:
    base, head = _doc("dev"), _doc("dev")
    [deployment] = [
        r for r in base["resources"]
        if r["type"] == "kubernetes:apps/v1:Deployment" and r["name"].endswith("-blue")
    ]  # fmt: skip
    deployment["inputs"]["spec"]["selector"]["matchLabels"]["color"] = "azure"
    [change] = compare(base, head).changed
    assert change.action == "replace"
    assert change.replaced_by == ["spec.selector.matchLabels.color"]


def _snapshot_types() -> list[str]:
    """Every stateful type the state-safety snapshot records, in any stack."""
    urns = json.loads((ROOT / "state" / "stateful-urns.json").read_text())
    return sorted({urn.split("::")[-2].rsplit("$", 1)[-1] for stack in urns.values()
                   for urn in stack})  # fmt: skip


# A dev resource of each stateful type, and one input the provider cannot change in place (the
# Pulumi AWS registry pages mark it "Changing this forces a new resource": aws.rds.Instance
# identifier, aws.kms.Key multiRegion, aws.sns.Topic name, aws.cloudwatch.LogGroup name,
# aws.ecr.Repository name).
REPLACED_BY = {
    "aws:rds/instance:Instance": ("database", "identifier"),
    "aws:kms/key:Key": ("alerts-key", "multiRegion"),
    "aws:sns/topic:Topic": ("alerts-topic", "name"),
    "aws:cloudwatch/logGroup:LogGroup": ("api-access-logs", "name"),
    "aws:ecr/repository:Repository": ("image", "name"),
}


def test_the_plan_diff_knows_every_stateful_type_of_the_snapshot() -> None:
    assert set(_snapshot_types()) <= STATEFUL_TYPES
    assert set(REPLACED_BY) == set(_snapshot_types())
    for type_ in _snapshot_types():
        assert REPLACE_ON[type_], type_


def _of(doc: dict[str, Any], type_: str, name: str) -> dict[str, Any]:
    return next(r for r in doc["resources"] if (r["type"], r["name"]) == (type_, name))


@pytest.mark.parametrize("type_", sorted(REPLACED_BY))
def test_removing_any_stateful_type_warns(type_: str) -> None:
    name, _ = REPLACED_BY[type_]
    base, head = _doc("dev"), _doc("dev")
    urn = _of(base, type_, name)["urn"]
    head["resources"] = [r for r in head["resources"] if r["urn"] != urn]
    assert render(compare(base, head)).splitlines()[2] == (
        f"WARNING: stateful resource {name} ({type_}) would be deleted or replaced: its URN "
        f"{urn} disappears and no resource has an alias to it"
    )


@pytest.mark.parametrize("type_", sorted(REPLACED_BY))
def test_a_stateful_resource_that_keeps_its_urn_but_must_be_replaced_warns(type_: str) -> None:
    name, prop = REPLACED_BY[type_]
    base, head = _doc("dev"), _doc("dev")
    _of(base, type_, name)["inputs"][prop] = "the-old-value"
    diff = compare(base, head)
    [change] = diff.changed
    assert (change.action, change.replaced_by) == ("replace", [prop])
    assert diff.warnings == [
        f"WARNING: stateful resource {name} ({type_}) would be replaced by a new, empty one: "
        f"{prop} cannot change in place"
    ]


def test_a_protect_change_is_shown_and_dropping_it_warns() -> None:
    """`protect` is a resource option, not an input: Pulumi refuses to delete a protected
    resource and deletes an unprotected one (Pulumi docs, "Resource option: protect")."""
    base, head = _doc("prod"), _doc("prod")
    _of(head, "aws:sns/topic:Topic", "alerts-topic")["protect"] = False
    _of(base, "aws:kms/key:Key", "alerts-key")["protect"] = False
    diff = compare(base, head)
    assert {c.resource["name"]: c.protect_change for c in diff.changed} == {
        "alerts-topic": "protect removed", "alerts-key": "protect added",
    }  # fmt: skip
    assert diff.warnings == [
        "WARNING: alerts-topic (aws:sns/topic:Topic) is no longer protected: `pulumi up` will "
        "not refuse to delete it"
    ]
    text = render(diff)
    assert "- **update** `aws:sns/topic:Topic` `alerts-topic` (**protect removed**)" in text
    assert "  - `(protect)`: `true` → `false`" in text
    assert "- **update** `aws:kms/key:Key` `alerts-key` (**protect added**)" in text
    assert "0 to add, 2 to update in place, 0 to replace, 0 to remove." in text


def test_long_values_are_cut_at_80_characters() -> None:
    def doc(a: str, b: str) -> dict[str, Any]:
        resource = {"urn": "urn:pulumi:dev::p::aws:sns/topic:Topic::t", "name": "t",
                    "type": "aws:sns/topic:Topic", "inputs": {"a": a, "b": b}}  # fmt: skip
        return {"stack": "dev", "project": "p", "resources": [resource]}

    text = render(compare(doc("", ""), doc("x" * 80, "y" * 81)))
    assert f"  - `a`: `` → `{'x' * 80}`\n" in text
    assert f"  - `b`: `` → `{'y' * 79}…`\n" in text
    assert "\n#### (stack)\n- **update** `aws:sns/topic:Topic` `t`\n" in text  # no parent
    assert render(compare(doc("a", "b"), doc("a", "b"))) == (
        "### Plan diff: `dev`\n\nNo changes: the `dev` stack is the same as on the base branch.\n"
    )


def test_a_kubernetes_object_is_replaced_when_its_name_changes() -> None:
    """pulumi-kubernetes replaces an object whose metadata.name or namespace changes: the API
    server has no rename."""
    base, head = _doc("dev"), _doc("dev")
    [namespace] = [
        r
        for r in base["resources"]
        if r["type"] == "kubernetes:core/v1:Namespace" and r["name"] == "analytics-api"
    ]
    namespace["inputs"]["metadata"]["name"] = "old-name"
    [change] = compare(base, head).changed
    assert (change.action, change.replaced_by) == ("replace", ["metadata.name"])


def test_the_markdown_escapes_values_and_cuts_after_25_paths() -> None:
    def doc(resources: list[dict[str, Any]]) -> dict[str, Any]:
        return {"stack": "dev", "project": "p", "resources": resources}

    def topic(name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"urn": f"urn:pulumi:dev::p::aws:sns/topic:Topic::{name}", "name": name,
                "type": "aws:sns/topic:Topic", "inputs": inputs}  # fmt: skip

    exactly = {f"k{i:02}": "a" for i in range(25)}
    over = {f"k{i:02}": "a" for i in range(26)}
    base = doc([topic("exact", {}), topic("over", {}), topic("gone", {}),
                topic("odd", {"v": "x"})])  # fmt: skip
    head = doc([topic("exact", exactly), topic("over", over), topic("odd", {"v": "a`b|c"})])
    text = render(compare(base, head))
    assert "- **remove** `aws:sns/topic:Topic` `gone`\n" in text  # not protected: no flag
    assert "  - `v`: `x` → `a'b\\|c`\n" in text
    assert text.count("… and 1 more properties") == 1
    assert "\n\n#### (stack)\n" in text
    assert "\n\n0 to add, 3 to update in place, 0 to replace, 1 to remove." in text


def test_a_changed_list_item_shows_its_index_and_both_values() -> None:
    base, head = _doc("dev"), _doc("dev")
    exports = _resource(head, "database")["inputs"]["enabledCloudwatchLogsExports"]
    assert exports == ["postgresql", "upgrade"]
    _resource(base, "database")["inputs"]["enabledCloudwatchLogsExports"] = ["postgresql", "iam"]
    text = render(compare(base, head))
    assert "  - `enabledCloudwatchLogsExports[1]`: `iam` → `upgrade`\n" in text
    assert "enabledCloudwatchLogsExports[0]" not in text  # unchanged items are not listed


def test_a_stack_new_on_this_branch_adds_every_resource() -> None:
    """A base plan of a stack that did not exist there has no resources at all."""
    head = _doc("dev")
    diff = compare({"stack": "dev"}, head)
    text = render(diff)
    assert f"{len(head['resources'])} to add, 0 to update in place, 0 to replace, 0 to remove." in (
        text
    )


def test_an_input_set_or_unset_shows_absent_on_the_side_without_it() -> None:
    base, head = _doc("dev"), _doc("dev")
    del _resource(head, "alerts-topic")["inputs"]["signatureVersion"]
    text = render(compare(base, head))
    assert "  - `signatureVersion`: `2` → `<absent>`\n" in text
    assert "  - `signatureVersion`: `<absent>` → `2`\n" in render(compare(head, base))
