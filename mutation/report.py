"""The kill rate per module of the last `mutmut run`, equivalent mutants excluded.

    python -m mutation.report [--markdown FILE] [--fail-under PERCENT]

mutmut 3 records each mutant's pytest exit code in `mutants/<path>.meta`. A mutant is caught when
a test failed on it (or it timed out: the mutated code never finished); it survived when every
test that reached it passed, or no test reached it at all. Mutants listed in
mutation/equivalent-mutants.toml (reviewed: no test can tell them apart from the original) are
left out of the rate, and a listed one that a test now catches is reported as stale.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "mutation" / "equivalent-mutants.toml"
# mutmut's exit codes (mutmut/stats.py): 1 and 3 a failing test, 37 the type checker, the
# others a timeout; 0 every selected test passed, 5 and 33 no test reached the mutant.
CAUGHT = {1, 3, 37, 36, 24, -24, 152, 255}
SURVIVED = {0, 5, 33}
# infra.plan_diff.x_render__mutmut_3, infra.plan_diff.xǁPlanDiffǁwarnings__mutmut_1
_KEY = re.compile(r"^(?P<module>[\w.]+?)\.x[_ǁ]")


@dataclass
class ModuleScore:
    module: str
    caught: int = 0
    survivors: list[str] = field(default_factory=list)
    equivalent: int = 0

    @property
    def counted(self) -> int:
        return self.caught + len(self.survivors)

    @property
    def rate(self) -> float:
        return 100.0 * self.caught / self.counted if self.counted else 100.0


def module_of(key: str) -> str:
    match = _KEY.match(key)
    return match.group("module") if match else key.rsplit(".", 1)[0]


def load_equivalents(path: Path = EQUIVALENTS) -> dict[str, str]:
    """mutant name -> why it is equivalent."""
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    return {str(e["mutant"]): str(e["reason"]) for e in data.get("equivalent", [])}


def score(results: Mapping[str, int | None], equivalents: Mapping[str, str]) -> list[ModuleScore]:
    """Per module, only mutants that were run (a scoped run leaves the others unset)."""
    modules: dict[str, ModuleScore] = {}
    for key, code in sorted(results.items()):
        if code is None or (code not in CAUGHT and code not in SURVIVED):
            continue
        entry = modules.setdefault(module_of(key), ModuleScore(module_of(key)))
        if code in CAUGHT:
            entry.caught += 1
        elif key in equivalents:
            entry.equivalent += 1
        else:
            entry.survivors.append(key)
    return [modules[m] for m in sorted(modules)]


def stale(results: Mapping[str, int | None], equivalents: Mapping[str, str]) -> list[str]:
    """Listed as equivalent, yet caught: the code (or mutmut's numbering) moved on. A listed
    mutant that was not run in a scoped run is not stale."""
    return sorted(k for k in equivalents if results.get(k) in CAUGHT)


def populations(results: Mapping[str, int | None]) -> dict[str, int]:
    """module -> how many mutants mutmut generated for it, run or not."""
    counts: dict[str, int] = {}
    for key in results:
        counts[module_of(key)] = counts.get(module_of(key), 0) + 1
    return counts


def wilson(caught: int, counted: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a kill rate, in percent."""
    if not counted:
        return (0.0, 100.0)
    p = caught / counted
    centre = (p + z * z / (2 * counted)) / (1 + z * z / counted)
    half = z * math.sqrt(p * (1 - p) / counted + z * z / (4 * counted * counted))
    half /= 1 + z * z / counted
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))


def stratified(
    scores: Sequence[ModuleScore], population: Mapping[str, int], z: float = 1.96
) -> tuple[float, float, float]:
    """The kill rate of all the modules' mutants, estimated from each module's sample: the
    modules' rates weighted by their sizes, and the 95 % interval of that estimate (finite
    population correction; each module's variance from its Agresti-Coull rate, so a module
    whose sample was all caught still adds its uncertainty)."""
    sampled = [s for s in scores if s.counted]
    total = sum(population[s.module] for s in sampled)
    if not total:
        return (100.0, 0.0, 100.0)
    estimate = variance = 0.0
    for s in sampled:
        weight = population[s.module] / total
        estimate += weight * s.caught / s.counted
        adjusted = (s.caught + 2) / (s.counted + 4)
        correction = max(0.0, 1 - s.counted / population[s.module])
        variance += weight**2 * correction * adjusted * (1 - adjusted) / s.counted
    half = z * math.sqrt(variance)
    return (100.0 * estimate, 100.0 * max(0.0, estimate - half), 100.0 * min(1.0, estimate + half))


def read_results(mutants: Path) -> dict[str, int | None]:
    results: dict[str, int | None] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        results.update(json.loads(meta.read_text()).get("exit_code_by_key", {}))
    return results


def render_sample(
    scores: Sequence[ModuleScore], population: Mapping[str, int], stale: Iterable[str]
) -> str:
    estimate, low, high = stratified(scores, population)
    lines = [
        "| Module | Mutants | Drawn | Caught | Survived | Equivalent | Kill rate | 95 % interval |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in scores:
        lo, hi = wilson(s.caught, s.counted)
        lines.append(
            f"| `{s.module}` | {population[s.module]} | {s.counted + s.equivalent} | {s.caught} "
            f"| {len(s.survivors)} | {s.equivalent} | {s.rate:.1f} % | {lo:.1f}-{hi:.1f} % |"
        )
    lines.append(
        f"| **all** (stratified estimate) | {sum(population[s.module] for s in scores)} "
        f"| {sum(s.counted + s.equivalent for s in scores)} | {sum(s.caught for s in scores)} "
        f"| {sum(len(s.survivors) for s in scores)} | {sum(s.equivalent for s in scores)} "
        f"| **{estimate:.1f} %** | {low:.1f}-{high:.1f} % |"
    )
    return _with_survivors(lines, scores, stale)


def _with_survivors(lines: list[str], scores: Sequence[ModuleScore], stale: Iterable[str]) -> str:
    survivors = [k for s in scores for k in s.survivors]
    if survivors:
        lines += ["", "Survivors (`python -m mutmut show NAME`):", *(f"- `{k}`" for k in survivors)]
    lines += [f"STALE: {k} is listed as equivalent but is not a survivor" for k in stale]
    return "\n".join(lines) + "\n"


def render(scores: Sequence[ModuleScore], stale: Iterable[str]) -> str:
    caught = sum(s.caught for s in scores)
    counted = sum(s.counted for s in scores)
    total = 100.0 * caught / counted if counted else 100.0
    lines = [
        "| Module | Mutants | Caught | Survived | Equivalent | Kill rate |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| `{s.module}` | {s.counted + s.equivalent} | {s.caught} | {len(s.survivors)} "
            f"| {s.equivalent} | {s.rate:.1f} % |"
            for s in scores
        ),
        f"| **all** | {counted + sum(s.equivalent for s in scores)} | {caught} "
        f"| {counted - caught} | {sum(s.equivalent for s in scores)} | **{total:.1f} %** |",
    ]
    return _with_survivors(lines, scores, stale)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mutation.report", description=__doc__)
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--fail-under", type=float, default=0.0, metavar="PERCENT")
    parser.add_argument("--sample", type=Path, help="score only the mutants this file names")
    args = parser.parse_args(argv)
    results = read_results(args.mutants)
    population = populations(results)
    if args.sample:
        if not args.sample.exists():
            print(f"error: no sample file {args.sample}: run `python -m mutation.sample` first",
                  file=sys.stderr)  # fmt: skip
            return 2
        drawn = set(args.sample.read_text().split())
        results = {key: code for key, code in results.items() if key in drawn}
    if not any(code is not None for code in results.values()):
        print(f"error: no mutmut results under {args.mutants}: run `make mutation` first",
              file=sys.stderr)  # fmt: skip
        return 2
    equivalents = load_equivalents()
    scores = score(results, equivalents)
    if args.sample:
        text = render_sample(scores, population, stale(results, equivalents))
        total = stratified(scores, population)[0]
    else:
        text = render(scores, stale(results, equivalents))
        counted = sum(s.counted for s in scores)
        total = 100.0 * sum(s.caught for s in scores) / counted if counted else 100.0
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)
    return 1 if total < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
