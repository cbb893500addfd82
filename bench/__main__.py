"""make bench: the offline preview against its floor, scaling with services, and make test.

    python -m bench [--runs N] [--test-runs N] [--skip-make-test]
    python -m bench --ratio-json FILE          # only the prod preview/floor ratio (CI gate)
    python -m bench --gate BASE.json HEAD.json  # exit 1 if the head's ratio is >20 % worse

Every figure is the median of several runs; the preview and its floor are measured
interleaved, in the same process, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess  # times our own commands  # nosec B404
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.critical_path import critical_path, minutes
from bench.floor import replay_program, run_floor
from infra.mock_engine import FakeCloud, ProgramRun, run_program
from infra.stackfiles import load_stack_config, to_config_string

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "staging", "prod")
SCALES = (1, 5, 10, 20)
GATE_TOLERANCE = 1.20  # the head's ratio may be at most 20 % above the base's


def _config(stack: str, services: int | None = None) -> tuple[dict[str, str], list[str]]:
    loaded = load_stack_config(ROOT, stack)
    config = dict(loaded.config)
    if services is not None:
        key = f"{loaded.project}:services"
        first = json.loads(config[key])[0]
        generated = [first] + [
            {**copy.deepcopy(first), "name": f"service-{i:02d}"} for i in range(2, services + 1)
        ]
        config[key] = to_config_string(generated)
    return config, list(loaded.secret_keys)


def preview(stack: str, services: int | None = None) -> ProgramRun:
    config, secret_keys = _config(stack, services)
    return run_program(
        ROOT / "infra", "analytics-platform", stack, config, secret_keys, FakeCloud()
    )


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def preview_and_floor(stack: str, runs: int) -> tuple[float, float, int]:
    """Median seconds of the preview and of its floor, measured alternately."""
    recorded = preview(stack)  # also warms imports for both
    program = replay_program(recorded)
    run_floor(recorded, program)
    previews, floors = [], []
    for _ in range(runs):
        previews.append(_timed(lambda: preview(stack)))
        floors.append(_timed(lambda: run_floor(recorded, program)))
    return statistics.median(previews), statistics.median(floors), len(recorded.resources)


def tracked_outputs(stack: str) -> tuple[int, int]:
    """How many Outputs Pulumi's runtime tracks (and its wait loop awaits): preview, floor."""
    import pulumi.output

    counted = [0]
    original = pulumi.output.Output._track  # pyright: ignore[reportPrivateUsage]

    def track(self: Any) -> None:
        counted[0] += 1
        original(self)

    pulumi.output.Output._track = track  # type: ignore[method-assign]
    try:
        recorded = preview(stack)
        in_preview, counted[0] = counted[0], 0
        run_floor(recorded, replay_program(recorded))
        return in_preview, counted[0]
    finally:
        pulumi.output.Output._track = original  # type: ignore[method-assign]


def cli_wall_and_peak(stack: str, runs: int) -> tuple[float, float]:
    """Median wall seconds and peak RSS (MB) of `python -m infra.preview` in a fresh process."""
    walls, peaks = [], []
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen(  # our own CLI, argv without a shell  # nosec B603
            [sys.executable, "-m", "infra.preview", "--stack", stack],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        walls.append(time.perf_counter() - started)
        peaks.append(usage.ru_maxrss / 1024)  # KiB on Linux
        if process.returncode != 0:
            raise SystemExit(f"preview of {stack} failed")
    return statistics.median(walls), statistics.median(peaks)


def make_test_seconds(runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        # the project's own `make test`, found on PATH as a developer would
        subprocess.run(["make", "test"], cwd=ROOT, check=True, capture_output=True)  # nosec B603 B607
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(runs: int, test_runs: int) -> Iterator[str]:
    """The report's lines, each yielded as soon as its figure is measured."""
    yield from [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}; median of {runs} runs",
        "",
    ]
    yield from [
        _row(
            [
                "Stack",
                "Resources",
                "Preview (s)",
                "Floor (s)",
                "Preview / floor",
                "Tracked Outputs (preview / floor)",
                "CLI wall (s)",
                "Peak RSS (MB)",
            ]
        ),
        _row(["---"] * 8),
    ]
    for stack in STACKS:
        seconds, floor, count = preview_and_floor(stack, runs)
        wall, peak = cli_wall_and_peak(stack, max(1, runs // 2))
        outputs_preview, outputs_floor = tracked_outputs(stack)
        yield (
            _row(
                [
                    stack,
                    count,
                    f"{seconds:.3f}",
                    f"{floor:.3f}",
                    f"{seconds / floor:.2f}x",
                    f"{outputs_preview} / {outputs_floor}",
                    f"{wall:.2f}",
                    f"{peak:.0f}",
                ]
            )
        )
    yield from [
        "",
        _row(
            ["prod with N services", "Resources", "Preview (s)", "ms per resource", "vs 1 service"]
        ),
        _row(["---"] * 5),
    ]
    base_cost = None
    for services in SCALES:
        preview("prod", services)  # warm
        seconds = statistics.median(
            _timed(lambda s=services: preview("prod", s)) for _ in range(runs)
        )
        count = len(preview("prod", services).resources)
        cost = seconds / count * 1000
        base_cost = base_cost or cost
        yield (_row([services, count, f"{seconds:.3f}", f"{cost:.2f}", f"{cost / base_cost:.2f}x"]))
    yield from [
        "",
        _row(["Stack", "Critical path (min)", "Slowest resource (min)", "Chain"]),
        _row(["---"] * 4),
    ]
    for stack in STACKS:
        path = critical_path(preview(stack))
        chain = " → ".join(f"{r.name} ({minutes(r.type):g})" for r in path.chain)
        yield (
            _row(
                [
                    stack,
                    f"{path.minutes:.1f}",
                    f"{path.slowest.name} {minutes(path.slowest.type):g}",
                    chain,
                ]
            )
        )
    if test_runs:
        yield ""
        print(f"(timing make test, {test_runs} runs...)", file=sys.stderr, flush=True)
        yield f"make test: {make_test_seconds(test_runs):.0f} s (median of {test_runs})"


def ratio(runs: int) -> float:
    seconds, floor, _ = preview_and_floor("prod", runs)
    return seconds / floor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--test-runs", type=int, default=3)
    parser.add_argument("--skip-make-test", action="store_true")
    parser.add_argument("--ratio-json", type=Path, metavar="FILE")
    parser.add_argument("--gate", nargs=2, type=Path, metavar=("BASE", "HEAD"))
    args = parser.parse_args(argv)
    if args.gate:
        base, head = (json.loads(p.read_text())["ratio"] for p in args.gate)
        verdict = head <= base * GATE_TOLERANCE
        print(
            f"preview/floor ratio: base {base:.2f}x, head {head:.2f}x "
            f"(limit {base * GATE_TOLERANCE:.2f}x): {'ok' if verdict else 'REGRESSION'}"
        )
        return 0 if verdict else 1
    if args.ratio_json:
        value = ratio(args.runs)
        args.ratio_json.write_text(json.dumps({"ratio": value}) + "\n")
        print(f"prod preview / floor: {value:.2f}x")
        return 0
    # Each line as soon as it is measured: the whole report takes minutes.
    for line in report(args.runs, 0 if args.skip_make_test else args.test_runs):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
