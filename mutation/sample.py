"""A seeded random sample of mutmut's mutants, the same number from each module, run by mutmut.

    python -m mutation.sample --per-module N [--seed S] [--jobs J] [--only GLOB ...] [--resume]

A run over every mutant of infra/ takes longer than a working day on two cores: a mutant that
survives runs every test that reached it, and most component functions are reached by every
stack test. A sample estimates the kill rate instead: the mutants are generated as mutmut
generates them, `N` of each module's are drawn with a fixed seed (a rerun draws the same ones),
written to `mutants/sample.txt`, and handed to `mutmut run` by name. `python -m mutation.report
--sample mutants/sample.txt` then scores only the drawn mutants, each module against the number
it has, and gives the estimate for the whole with its 95 % interval. `--resume` hands mutmut
only the drawn mutants that have no result yet (mutmut reruns every mutant it is given by name),
so a run that was stopped goes on where it stopped.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
import subprocess  # nosec B404 - it runs mutmut, with arguments built here
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from mutation.report import ROOT, module_of, read_results

SAMPLE_FILE = ROOT / "mutants" / "sample.txt"


def generate() -> None:
    """mutmut's own generation step (the first of `mutmut run`; mutmut 3.8.1's functions), so the
    names exist before any test runs."""
    # Imported here: mutmut reads pyproject.toml from the working folder when imported.
    from mutmut.__main__ import create_mutants
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    set_mutant_under_test("mutant_generation")
    (ROOT / "mutants").mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    create_mutants(2)


def mutant_names(mutants: Path) -> dict[str, list[str]]:
    """module -> its mutants' names, as mutmut recorded them next to each mutated file."""
    by_module: dict[str, list[str]] = defaultdict(list)
    for meta in sorted(mutants.rglob("*.py.meta")):
        for key in json.loads(meta.read_text()).get("exit_code_by_key", {}):
            by_module[module_of(key)].append(key)
    return {module: sorted(keys) for module, keys in sorted(by_module.items())}


def draw(
    by_module: Mapping[str, Sequence[str]], per_module: int, seed: int, only: Sequence[str] = ()
) -> list[str]:
    """`per_module` names of each module (all of a smaller one), drawn with `seed`."""
    chosen: list[str] = []
    for module, names in sorted(by_module.items()):
        if only and not any(fnmatch.fnmatchcase(module, pattern) for pattern in only):
            continue
        # A reproducible draw, not a secret.
        rng = random.Random(f"{seed}:{module}")  # noqa: S311  # nosec B311
        chosen += sorted(rng.sample(list(names), min(per_module, len(names))))
    return chosen


def pending(chosen: Sequence[str], results: Mapping[str, int | None]) -> list[str]:
    """The drawn mutants that no run has a result for yet."""
    return [name for name in chosen if results.get(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mutation.sample", description=__doc__)
    parser.add_argument("--per-module", type=int, required=True, metavar="N")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=[], metavar="GLOB", help="module globs")
    parser.add_argument("--resume", action="store_true", help="skip mutants with a result")
    args = parser.parse_args(argv)
    if args.per_module < 1:
        print("error: --per-module takes a whole number of at least 1", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    print("==> generating the mutants (mutmut)", flush=True)
    generate()
    chosen = draw(mutant_names(ROOT / "mutants"), args.per_module, args.seed, args.only)
    if not chosen:
        print(f"error: no module matches {' '.join(args.only)}", file=sys.stderr)
        return 2
    SAMPLE_FILE.write_text("".join(f"{name}\n" for name in chosen))
    print(f"==> {len(chosen)} mutants drawn (seed {args.seed}), in {SAMPLE_FILE}", flush=True)
    if args.resume:
        chosen = pending(chosen, read_results(ROOT / "mutants"))
        print(f"==> {len(chosen)} of them without a result yet", flush=True)
        if not chosen:
            return 0
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.jobs), *chosen]
    # Our own interpreter and arguments.
    return subprocess.run(command, check=False).returncode  # noqa: S603  # nosec B603


if __name__ == "__main__":
    sys.exit(main())
