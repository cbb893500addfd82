"""`make mutation`'s report: the kill rate per module, equivalent mutants left out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mutation.report import (
    ModuleScore,
    load_equivalents,
    main,
    module_of,
    score,
    stale,
    stratified,
    wilson,
)
from mutation.sample import draw
from tests.conftest import ROOT

RESULTS = {
    "infra.plan_diff.x_render__mutmut_1": 1,  # a test failed: caught
    "infra.plan_diff.x_render__mutmut_2": 0,  # every test passed: survived
    "infra.plan_diff.xǁPlanDiffǁwarnings__mutmut_1": 36,  # timed out: caught
    "infra.plan_diff.x_show__mutmut_1": 0,  # listed as equivalent
    "infra.policies.network.x__open_sources__mutmut_1": 5,  # no test reached it: survived
    "infra.policies.network.x__described__mutmut_1": 3,
    "infra.release.x_judge__mutmut_1": None,  # not run in a scoped run
}


def test_a_mutant_belongs_to_its_module_whether_function_or_method() -> None:
    assert module_of("infra.plan_diff.xǁPlanDiffǁwarnings__mutmut_1") == "infra.plan_diff"
    assert module_of("infra.policies.network.x__open_sources__mutmut_1") == (
        "infra.policies.network"
    )


def test_the_rate_counts_caught_over_caught_and_survived_without_equivalents() -> None:
    scores = {
        s.module: s for s in score(RESULTS, {"infra.plan_diff.x_show__mutmut_1": "same output"})
    }
    assert set(scores) == {"infra.plan_diff", "infra.policies.network"}  # release was not run
    plan = scores["infra.plan_diff"]
    assert (plan.caught, plan.survivors, plan.equivalent) == (
        2, ["infra.plan_diff.x_render__mutmut_2"], 1,
    )  # fmt: skip
    assert plan.rate == pytest.approx(200 / 3)
    assert scores["infra.policies.network"].rate == 50.0


def test_the_command_prints_a_table_and_fails_under_the_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = tmp_path / "infra" / "plan_diff.py.meta"
    meta.parent.mkdir()
    meta.write_text(json.dumps({"exit_code_by_key": RESULTS}))
    out = tmp_path / "report.md"
    assert main(["--mutants", str(tmp_path), "--markdown", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    assert "| `infra.policies.network` | 2 | 1 | 1 | 0 | 50.0 % |" in text
    assert "- `infra.plan_diff.x_render__mutmut_2`" in text
    assert main(["--mutants", str(tmp_path), "--fail-under", "90"]) == 1


def test_no_results_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--mutants", str(tmp_path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: no mutmut results under ")


def test_every_listed_equivalent_mutant_says_why() -> None:
    for mutant, reason in load_equivalents().items():
        assert mutant.startswith("infra."), mutant
        assert len(reason) > 20, mutant


def test_a_listed_mutant_that_is_caught_is_stale_and_one_not_run_is_not() -> None:
    listed = {"infra.plan_diff.x_render__mutmut_1": "r", "infra.release.x_judge__mutmut_1": "r",
              "infra.plan_diff.x_show__mutmut_1": "r"}  # fmt: skip
    assert stale(RESULTS, listed) == ["infra.plan_diff.x_render__mutmut_1"]


def test_a_stack_run_cached_by_one_session_is_not_handed_to_the_next() -> None:
    """mutmut's default process isolation forks every mutant from the process that ran the first,
    unmutated pass (mutmut/configuration.py, ProcessIsolation.FORK: "every worker inherits
    whatever the test setup left in that process"), and pytest reuses an imported conftest
    module. A second pytest session in one process must start with no cached stack run."""
    target = (
        "tests/test_mutation_report.py::"
        "test_a_mutant_belongs_to_its_module_whether_function_or_method"
    )
    probe = (
        "import sys, pytest\n"
        "import tests.conftest as harness\n"
        "harness._UNCHANGED_RUNS['dev'] = 'left by an earlier session'\n"
        f"code = pytest.main(['-q', '-p', 'no:xdist', '-p', 'no:cacheprovider', {target!r}])\n"
        "sys.exit(10 + int(code) if code else (3 if harness._UNCHANGED_RUNS else 0))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_draw_is_the_same_for_the_same_seed_and_capped_by_the_module() -> None:
    by_module = {
        "infra.kms": [f"infra.kms.x_key_policy__mutmut_{i}" for i in range(1, 41)],
        "infra.network": ["infra.network.x_f__mutmut_1", "infra.network.x_f__mutmut_2"],
    }
    first = draw(by_module, per_module=5, seed=7)
    assert first == draw(by_module, per_module=5, seed=7)
    assert first != draw(by_module, per_module=5, seed=8)
    assert sum(name.startswith("infra.kms.") for name in first) == 5
    assert [n for n in first if n.startswith("infra.network.")] == by_module["infra.network"]
    # Each module's draw is its own: another module changes nothing of it.
    assert [n for n in first if n.startswith("infra.kms.")] == draw(
        {"infra.kms": by_module["infra.kms"]}, per_module=5, seed=7
    )
    assert draw(by_module, per_module=5, seed=7, only=["infra.net*"]) == by_module["infra.network"]


def test_the_wilson_interval_of_nine_caught_in_ten() -> None:
    """Wilson (1927), the score interval; 9 of 10 at 95 % is 59.6 % to 98.2 %."""
    low, high = wilson(9, 10)
    assert (round(low, 1), round(high, 1)) == (59.6, 98.2)
    assert wilson(0, 0) == (0.0, 100.0)


def test_the_estimate_of_the_whole_weights_each_module_by_its_size() -> None:
    small = ModuleScore("infra.kms", caught=10)
    large = ModuleScore("infra.monitoring", caught=8, survivors=["a", "b"])
    estimate, low, high = stratified([small, large], {"infra.kms": 100, "infra.monitoring": 300})
    assert estimate == pytest.approx(0.25 * 100 + 0.75 * 80)
    assert low < estimate < high
    # Every mutant run: nothing left to estimate.
    assert stratified([small], {"infra.kms": 10}) == (100.0, 100.0, 100.0)


def test_a_sampled_report_counts_only_the_drawn_mutants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = tmp_path / "infra" / "kms.py.meta"
    meta.parent.mkdir()
    results = {f"infra.kms.x_key_policy__mutmut_{i}": (1 if i % 4 else 0) for i in range(1, 21)}
    meta.write_text(json.dumps({"exit_code_by_key": results}))
    sample = tmp_path / "sample.txt"
    sample.write_text("".join(f"infra.kms.x_key_policy__mutmut_{i}\n" for i in (1, 2, 3, 4)))
    assert main(["--mutants", str(tmp_path), "--sample", str(sample), "--fail-under", "70"]) == 0
    text = capsys.readouterr().out
    assert "| `infra.kms` | 20 | 4 | 3 | 1 | 0 | 75.0 % |" in text
    assert "- `infra.kms.x_key_policy__mutmut_4`" in text
    assert "x_key_policy__mutmut_8`" not in text  # a survivor, but not drawn
    assert main(["--mutants", str(tmp_path), "--sample", str(sample), "--fail-under", "80"]) == 1
    assert main(["--mutants", str(tmp_path), "--sample", str(tmp_path / "none.txt")]) == 2


def test_under_mutmut_every_test_runs_the_program_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """mutmut 3 runs for each mutant only the tests that called the mutated function in its
    first pass (mutmut README, "test selection"; runners/harness.py records the calls per
    test). A test handed a cached stack run calls no component function, so under mutmut
    (MUTANT_UNDER_TEST set) nothing is cached."""
    import tests.conftest as harness

    monkeypatch.setattr(harness, "_UNCHANGED_RUNS", {})
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")
    first, second = harness.unchanged_run("dev"), harness.unchanged_run("dev")
    assert harness._UNCHANGED_RUNS == {}
    assert first is not second
    assert first.to_json() == second.to_json()


@pytest.mark.parametrize(("mutmut", "scope"), [(None, "module"), ("stats", "function")])
def test_a_shared_fixture_is_made_per_test_under_mutmut(
    monkeypatch: pytest.MonkeyPatch, mutmut: str | None, scope: str
) -> None:
    """The same test selection as above, for fixtures shared by a module's tests."""
    from tests.conftest import once_per_module

    if mutmut is None:
        monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
    else:
        monkeypatch.setenv("MUTANT_UNDER_TEST", mutmut)
    assert once_per_module("overridden", None) == scope  # type: ignore[arg-type]
