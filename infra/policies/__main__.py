"""python -m infra.policies PREVIEW.json: every rule over an offline preview.

Prints each violation (enforcement level, policy, resource URN, message), then a summary.
Exit codes: 0 no mandatory violation, 1 a mandatory rule is violated, 2 unreadable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.policies import POLICIES
from infra.policies.runner import BadPreview, check

EXIT_OK, EXIT_VIOLATED, EXIT_BAD_INPUT = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.policies", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("preview", type=Path, help="offline-preview JSON (infra.preview --json)")
    args = parser.parse_args(argv)
    try:
        document = json.loads(args.preview.read_text(encoding="utf-8"))
        violations = check(document)
    except OSError as exc:
        print(f"error: {args.preview}: cannot read a preview: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (UnicodeDecodeError, json.JSONDecodeError, BadPreview) as exc:
        print(f"error: {args.preview}: cannot read a preview: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a value no offline preview writes: one line, never a traceback
        print(
            f"error: {args.preview}: not an offline preview a rule can read: "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT

    for v in violations:
        print(f"{v.level.upper():<9} {v.policy}  {v.urn}\n          {v.message}")
    mandatory = sum(v.mandatory for v in violations)
    count = len(document["resources"])
    print(
        f"\n{len(violations)} violation(s), {mandatory} mandatory, "
        f"{len(violations) - mandatory} advisory; {len(POLICIES)} policies over "
        f"{count} resources"
    )
    return EXIT_VIOLATED if mandatory else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
