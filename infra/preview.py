"""Offline preview: what a stack would create, with no cloud credentials and no Pulumi CLI.

    python -m infra.preview --stack NAME [--json FILE] [--diff BASE.json]

Reads Pulumi.yaml and Pulumi.NAME.yaml, runs the program as the language host does against the
offline engine (infra/mock_engine.py), and prints the plan. Every secret shows as "[secret]".
Exit codes: 0 success, 2 invalid config or stack file, 1 program error.
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

from infra.mock_engine import ProgramRun, ResourceRecord, mask_secrets, run_program
from infra.plan_diff import compare, render
from infra.settings import SECRET_SET_COMMANDS
from infra.stackfiles import StackFileError, load_stack_config

EXIT_OK, EXIT_PROGRAM_ERROR, EXIT_BAD_INPUT = 0, 1, 2
PROJECT_DIR = Path(__file__).resolve().parent.parent
# Inputs that are noise in a plan: tags repeat on every resource; policies are long JSON.
_HIDDEN_INPUTS = {"tags", "tagsAll", "policy", "deliveryPolicy", "__defaults", "apiVersion", "kind"}
_MAX_SHOWN_INPUTS = 6
_MAX_VALUE_CHARS = 60


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


def _key_properties(record: ResourceRecord) -> str:
    shown = []
    inputs = mask_secrets(record.inputs)
    for key in sorted(inputs, key=lambda k: (k != "name", k)):
        value = inputs[key]
        if key in _HIDDEN_INPUTS or (isinstance(value, (dict, list)) and not value):
            continue
        shown.append(f"{key}={_short(value)}")
        if len(shown) == _MAX_SHOWN_INPUTS:
            break
    return " ".join(shown)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _stand_in_note(stack: str, key: str) -> str:
    command = SECRET_SET_COMMANDS.get(key.partition(":")[2], "pulumi config set --secret ...")
    return (
        f"note: stack {stack}: {key} is a required secret that is not set; this offline preview "
        f"uses a stand-in value instead. Before a real run: {command}"
    )


def main(argv: Sequence[str] | None = None, project_dir: Path = PROJECT_DIR) -> int:
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
    args = parser.parse_args(argv)
    base: dict[str, Any] | None = None
    if args.diff:
        try:
            base = json.loads(args.diff.read_text(encoding="utf-8"))
            if not isinstance(base, dict) or not isinstance(base.get("resources"), list):
                raise ValueError("expected an object with a `resources` list")
        except (OSError, ValueError) as exc:
            print(f"error: --diff {args.diff}: not a preview JSON: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT

    try:
        stack = load_stack_config(args.project_dir, args.stack)
    except StackFileError as exc:
        print(f"error: stack {args.stack}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for key in stack.stand_ins:
        print(_stand_in_note(args.stack, key), file=sys.stderr)
    try:
        run = run_program(
            stack.main_dir, stack.project, stack.stack, stack.config, stack.secret_keys
        )
    except RunError as exc:
        lines = getattr(exc, "lines", None) or str(exc).splitlines()
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # any program failure is reported, never re-raised
        if args.debug:
            traceback.print_exc()
        print(
            f"error: stack {args.stack}: the program failed: {type(exc).__name__}: {exc}"
            " (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_PROGRAM_ERROR

    for level, message in run.log:
        if level in ("warning", "error"):
            print(f"{level}: {message}", file=sys.stderr)
    if base is not None:
        sys.stdout.write(render(compare(base, run.to_json())))
    else:
        render_plan(run, sys.stdout)
    if args.json:
        args.json.write_text(json.dumps(run.to_json(), indent=2, sort_keys=True) + "\n")
        print(f"\nwrote {args.json}")
    return EXIT_OK


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader (e.g. `head`) stopped early
        sys.stderr.close()
        sys.exit(EXIT_OK)
