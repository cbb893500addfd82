"""Offline preview: what a stack would create, with no cloud credentials and no Pulumi CLI.

    python -m infra.preview --stack NAME [--json FILE] [--diff BASE.json]

Reads Pulumi.yaml and Pulumi.NAME.yaml, runs the program as `pulumi up` does (a preview pass
with unknown outputs, then the update) against the offline engine (infra/mock_engine.py), and
prints the plan. Every secret shows as "[secret]".
Exit codes: 0 success, 2 invalid arguments, config or stack file (one line each), 1 program error.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from pulumi import RunError

from infra.mock_engine import (
    EngineError,
    ProgramRun,
    ResourceRecord,
    mask_secrets,
    run_like_pulumi_up,
    stack_name_problem,
)
from infra.plan_diff import compare, render
from infra.settings import SECRET_SET_COMMANDS
from infra.stackfiles import StackConfig, StackFileError, load_stack_config

EXIT_OK, EXIT_PROGRAM_ERROR, EXIT_BAD_INPUT = 0, 1, 2
PROJECT_DIR = Path(__file__).resolve().parent.parent
# Inputs that are noise in a plan: tags repeat on every resource; policies are long JSON.
_HIDDEN_INPUTS = {"tags", "tagsAll", "policy", "deliveryPolicy", "__defaults", "apiVersion", "kind"}
_MAX_SHOWN_INPUTS = 6
_MAX_VALUE_CHARS = 60
NOT_SET = "(not set)"
_WEIGHTS = ("weights", "{}[*].forward.targetGroups[*].weight")

# Per resource type, what a reviewer checks first (safety and cost): (label, input path).
# `[*]` walks a list. A path ending in `?` is left out when absent; the others show "(not set)",
# since an unset safety setting is news. Other types show their name and first inputs.
KEY_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "aws:rds/instance:Instance": (
        ("class", "instanceClass"), ("storageGb", "allocatedStorage"),
        ("maxStorageGb", "maxAllocatedStorage"), ("multiAz", "multiAz"),
        ("deletionProtection", "deletionProtection"), ("encrypted", "storageEncrypted"),
        ("public", "publiclyAccessible"), ("engine", "engineVersion"),
        ("backupDays", "backupRetentionPeriod"),
    ),
    "kubernetes:apps/v1:Deployment": (
        ("image", "spec.template.spec.containers[*].image"), ("replicas", "spec.replicas"),
    ),
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": (
        ("minReplicas", "spec.minReplicas"), ("maxReplicas", "spec.maxReplicas"),
    ),
    "aws:lb/listener:Listener": (
        ("protocol", "protocol"), ("port", "port"), ("actions", "defaultActions[*].type"),
        (_WEIGHTS[0], _WEIGHTS[1].format("defaultActions") + "?"),
    ),
    "aws:lb/listenerRule:ListenerRule": (
        ("priority", "priority"), ("conditions", "conditions"), ("actions", "actions[*].type"),
        (_WEIGHTS[0], _WEIGHTS[1].format("actions") + "?"),
    ),
    "aws:lb/targetGroup:TargetGroup": (
        ("protocol", "protocol"), ("port", "port"), ("targetType", "targetType"),
        ("healthCheck", "healthCheck.path?"),
    ),
    "kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding": (
        ("service", "spec.serviceRef.name"), ("targetGroup", "spec.targetGroupARN"),
    ),
    "aws:cloudwatch/metricAlarm:MetricAlarm": (
        ("metric", "metricName?"), ("namespace", "namespace?"), ("statistic", "statistic?"),
        ("percentile", "extendedStatistic?"), ("comparison", "comparisonOperator"),
        ("threshold", "threshold"), ("periods", "evaluationPeriods"),
    ),
    "aws:cloudwatch/compositeAlarm:CompositeAlarm": (("rule", "alarmRule"),),
    "aws:cloudwatch/logGroup:LogGroup": (
        ("name", "name"), ("retentionDays", "retentionInDays"), ("kmsKeyId", "kmsKeyId"),
    ),
    "aws:kms/key:Key": (
        ("rotation", "enableKeyRotation"), ("deletionWindowDays", "deletionWindowInDays"),
    ),
    "aws:ecr/repository:Repository": (
        ("name", "name"), ("tagMutability", "imageTagMutability"),
    ),
}  # fmt: skip


def render_plan(run: ProgramRun, out: TextIO) -> None:
    out.write(f"Offline preview of {run.project}/{run.stack}: {len(run.resources)} resources\n\n")
    children: dict[str | None, list[ResourceRecord]] = {}
    for record in run.resources:
        children.setdefault(record.parent, []).append(record)

    def walk(parent: str | None, prefix: str) -> None:
        nodes = children.get(parent, [])
        for i, node in enumerate(nodes):
            last = i == len(nodes) - 1
            flags = " [protected]" if node.protect else ""
            props = _key_properties(node)
            out.write(f"{prefix}{'└─ ' if last else '├─ '}{node.type}  {node.name}{flags}")
            out.write(f"  {props}\n" if props else "\n")
            walk(node.urn, prefix + ("   " if last else "│  "))

    walk(None, "")
    out.write("\nResources by type:\n")
    counts = Counter(r.type for r in run.resources)
    width = max((len(t) for t in counts), default=0)
    for type_, count in sorted(counts.items()):
        out.write(f"  {type_:<{width}}  {count}\n")
    out.write("\nOutputs:\n")
    for key, value in sorted(mask_secrets(run.outputs).items()):
        out.write(f"  {key}: {value if isinstance(value, str) else json.dumps(value)}\n")


def key_properties(type_: str, inputs: dict[str, Any]) -> list[tuple[str, Any]]:
    """The inputs a reviewer checks first for a resource of `type_`, in order, as (label, value).

    `inputs` are JSON-ready (secrets masked); a list path gives the list of what it found.
    """
    found = []
    for label, path in KEY_INPUTS.get(type_, ()):
        optional = path.endswith("?")
        values = _walk(inputs, path.rstrip("?").split("."))
        if not values and optional:
            continue
        wildcard = "[*]" in path
        found.append((label, (values if wildcard else values[0]) if values else NOT_SET))
    return found


def _walk(value: Any, parts: list[str]) -> list[Any]:
    if not parts:
        return [] if value is None else [value]
    key, many = parts[0].removesuffix("[*]"), parts[0].endswith("[*]")
    if not isinstance(value, dict) or key not in value:
        return []
    inner = value[key]
    items = inner if many and isinstance(inner, list) else [inner]
    return [found for item in items for found in _walk(item, parts[1:])]


def _key_properties(record: ResourceRecord) -> str:
    inputs = mask_secrets(record.inputs)
    shown = [f"{label}={_full(value)}" for label, value in key_properties(record.type, inputs)]
    if shown:
        return " ".join(shown)
    for key in sorted(inputs, key=lambda k: (k != "name", k)):
        value = inputs[key]
        if key in _HIDDEN_INPUTS or (isinstance(value, (dict, list)) and not value):
            continue
        shown.append(f"{key}={_short(value)}")
        if len(shown) == _MAX_SHOWN_INPUTS:
            break
    return " ".join(shown)


def _full(value: Any) -> str:
    # Key properties are what the reviewer came for: an image digest is shown whole.
    if isinstance(value, list):
        return ",".join(_full(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _stand_in_note(stack: str, key: str) -> str:
    command = SECRET_SET_COMMANDS.get(key.partition(":")[2], "pulumi config set --secret ...")
    return (
        f"note: stack {stack}: {key} is a required secret that is not set; this offline preview "
        f"uses a stand-in value instead. Before a real run: {command}"
    )


class BadInput(Exception):
    """An argument the command cannot use: exit 2, with this one line."""


def _parser(project_dir: Path) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.preview", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the plan as JSON")
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=project_dir,
        help="folder holding Pulumi.yaml (default: this repository)",
    )
    parser.add_argument(
        "--diff",
        type=Path,
        metavar="BASE.json",
        help="print a markdown diff against an earlier preview JSON instead of the plan",
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback when the program fails"
    )
    return parser


def _check_json_target(path: Path | None) -> None:
    """Refuse a --json target that cannot be written, before the program runs."""
    if path is None:
        return
    if path.is_dir():
        raise BadInput(f"--json {path}: is a folder; give a file name, e.g. {path / 'plan.json'}")
    if not path.parent.is_dir():
        raise BadInput(f"--json {path}: the folder {path.parent} does not exist; create it first")


def read_base(path: Path, project: str, stack: str) -> dict[str, Any]:
    """An earlier preview JSON of the same stack, checked before anything is compared."""
    try:
        base = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not JSON ({exc})"
        raise BadInput(f"--diff {path}: not a preview JSON: {reason}") from None
    resources = base.get("resources") if isinstance(base, dict) else None
    if not isinstance(resources, list):
        raise BadInput(
            f"--diff {path}: not a preview JSON: expected an object with a `resources` list"
        )
    for i, resource in enumerate(resources):
        missing = [k for k in ("urn", "type", "name") if not isinstance(
            resource.get(k) if isinstance(resource, dict) else None, str)]  # fmt: skip
        if missing:
            raise BadInput(
                f"--diff {path}: not a preview JSON: resources[{i}] has no `{missing[0]}` "
                "(write one with python -m infra.preview --json)"
            )
    theirs = (base.get("project"), base.get("stack"))
    if theirs != (project, stack):
        raise BadInput(
            f"--diff {path}: is the preview of {theirs[0]}/{theirs[1]}, not {project}/{stack}; "
            "compare a stack only with its own earlier preview"
        )
    return base


def _load(args: argparse.Namespace) -> tuple[StackConfig, dict[str, Any] | None]:
    problem = stack_name_problem(args.stack)
    if problem:
        raise BadInput(f"--stack: {problem}")
    _check_json_target(args.json)
    stack = load_stack_config(args.project_dir, args.stack)
    base = read_base(args.diff, stack.project, stack.stack) if args.diff else None
    return stack, base


def _run(stack: StackConfig, debug: bool) -> ProgramRun | int:
    """The program run as `pulumi up` runs it, or the exit code of its failure."""
    try:
        return run_like_pulumi_up(
            stack.main_dir, stack.project, stack.stack, stack.config, stack.secret_keys
        )
    except RunError as exc:
        lines = getattr(exc, "lines", None) or str(exc).splitlines()[:1]
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EngineError as exc:
        print(f"error: stack {stack.stack}: {exc}", file=sys.stderr)
        return EXIT_PROGRAM_ERROR
    except Exception as exc:  # any program failure is reported, never re-raised
        if debug:
            traceback.print_exc()
        print(
            f"error: stack {stack.stack}: the program failed: {type(exc).__name__}: {exc}"
            " (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_PROGRAM_ERROR


def main(argv: Sequence[str] | None = None, project_dir: Path = PROJECT_DIR) -> int:
    args = _parser(project_dir).parse_args(argv)
    try:
        stack, base = _load(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StackFileError as exc:
        print(f"error: stack {args.stack}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for key in stack.stand_ins:
        print(_stand_in_note(args.stack, key), file=sys.stderr)
    run = _run(stack, args.debug)
    if isinstance(run, int):
        return run

    for level, message in run.log:
        if level in ("warning", "error"):
            print(f"{level}: {message}", file=sys.stderr)
    if base is not None:
        sys.stdout.write(render(compare(base, run.to_json())))
    else:
        render_plan(run, sys.stdout)
    if args.json:
        try:
            args.json.write_text(json.dumps(run.to_json(), indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            print(f"error: --json {args.json}: cannot write it: {exc.strerror}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"\nwrote {args.json}")
    return EXIT_OK


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader (e.g. `head`) stopped early
        sys.stderr.close()
        sys.exit(EXIT_OK)
