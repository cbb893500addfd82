"""`make mutation`'s report: the kill rate per module, equivalent mutants left out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
from mutation.sample import draw, pending
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
        "harness._SHARED_RUNS['dev'] = ('left by an earlier session', frozenset())\n"
        f"code = pytest.main(['-q', '-p', 'no:xdist', '-p', 'no:cacheprovider', {target!r}])\n"
        "sys.exit(10 + int(code) if code else (3 if harness._SHARED_RUNS else 0))\n"
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


def test_in_mutmuts_first_pass_a_shared_run_counts_for_every_test_that_gets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mutmut 3 runs for each mutant only the tests that reached the mutated function in its
    first pass (MUTANT_UNDER_TEST=stats; runners/harness.py files `state()._stats` under the
    test at its teardown, then clears it). A test handed a shared run reaches nothing itself,
    so the functions the run reached are filed again under every test that gets it."""
    from mutmut.state import state

    import tests.conftest as harness

    monkeypatch.setattr(harness, "_SHARED_RUNS", {})
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")
    monkeypatch.setattr(state(), "_stats", {"infra.settings.x_load"})  # reached before the run
    made: list[int] = []

    def make() -> list[int]:
        made.append(1)
        state()._stats.add("infra.monitoring.x_alarm")
        return made

    assert harness.shared("k", make) == [1]
    assert state()._stats == {"infra.settings.x_load", "infra.monitoring.x_alarm"}
    state()._stats.clear()  # the next test
    assert harness.shared("k", make) == [1]
    assert made == [1]  # shared, not run again
    assert state()._stats == {"infra.monitoring.x_alarm"}
    state()._stats.clear()
    harness.shared("other", lambda: None)
    assert state()._stats == set()


def test_in_mutmuts_first_pass_a_run_that_fails_still_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused config raises inside the program; what it reached before must still select the
    test (the test asserts the refusal)."""
    from mutmut.state import state

    import tests.conftest as harness

    monkeypatch.setattr(harness, "_SHARED_RUNS", {})
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")
    monkeypatch.setattr(state(), "_stats", set())

    def refuse() -> None:
        state()._stats.add("infra.settings.x_validate")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        harness.shared("bad", refuse)
    assert state()._stats == {"infra.settings.x_validate"}
    assert harness._SHARED_RUNS == {}  # not kept: the next test runs it again


@pytest.mark.parametrize("mutant", ["", "infra.monitoring.x_alarm__mutmut_3"])
def test_outside_the_first_pass_a_run_is_made_once_and_handed_out_as_copies(
    monkeypatch: pytest.MonkeyPatch, mutant: str
) -> None:
    """A mutant's own session (a fresh session: `pytest_sessionstart` drops what was shared)
    runs the mutated program once per config; each test gets its own copy."""
    import tests.conftest as harness

    monkeypatch.setattr(harness, "_SHARED_RUNS", {})
    monkeypatch.setenv("MUTANT_UNDER_TEST", mutant)
    made: list[dict[str, list[int]]] = []

    def make() -> dict[str, list[int]]:
        made.append({"v": [1]})
        return made[-1]

    first = harness.shared("k", make)
    first["v"].append(2)
    assert harness.shared("k", make) == {"v": [1]}
    assert len(made) == 1


def test_a_shared_stack_run_is_keyed_by_its_config_and_image_tag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The program reads its config and one environment variable, IMAGE_TAG; a run made under
    another value of either is another run."""
    import tests.conftest as harness

    monkeypatch.setattr(harness, "_SHARED_RUNS", {})
    made: list[tuple[str, str | None]] = []

    def run_program(*args: Any, **kwargs: Any) -> int:
        config = args[3]
        made.append((config["k"], os.environ.get("IMAGE_TAG")))
        return len(made)

    monkeypatch.setattr(harness, "run_program", run_program)
    assert harness.shared_program_run("dev", {"k": "1"}, []) == 1
    assert harness.shared_program_run("dev", {"k": "1"}, []) == 1
    assert harness.shared_program_run("dev", {"k": "2"}, []) == 2
    monkeypatch.setenv("IMAGE_TAG", "abcdef0")
    assert harness.shared_program_run("dev", {"k": "1"}, []) == 3
    assert harness.shared_program_run("staging", {"k": "1"}, []) == 4
    assert made[-1] == ("1", "abcdef0")


def test_a_resumed_sample_runs_only_the_drawn_mutants_without_a_result() -> None:
    """mutmut reruns every mutant named on its command line (mutmut 3.8.1 __main__.py: "Rerun
    mutant if it's explicitly mentioned"), so a resumed run names only those still to do."""
    chosen = ["infra.kms.x_a__mutmut_1", "infra.kms.x_a__mutmut_2", "infra.kms.x_a__mutmut_3"]
    results = {"infra.kms.x_a__mutmut_1": 0, "infra.kms.x_a__mutmut_2": None}
    assert pending(chosen, results) == ["infra.kms.x_a__mutmut_2", "infra.kms.x_a__mutmut_3"]


FILES = ["test_alerts.py", "test_release.py", "test_policies.py", "test_database_access.py",
         "test_release.py", "test_database.py"]  # fmt: skip


@pytest.mark.parametrize(
    ("mutant", "order"),
    [
        ("infra.release.xǁReleaseǁcanary__mutmut_42", [1, 4, 0, 2, 3, 5]),
        ("infra.policies.rds.x__encrypted__mutmut_3", [2, 0, 1, 3, 4, 5]),
        ("infra.database_access.x_bootstrap__mutmut_1", [3, 0, 1, 2, 4, 5]),
        ("infra.iam.x_policy__mutmut_1", [0, 1, 2, 3, 4, 5]),  # no file of its own
        ("", [0, 1, 2, 3, 4, 5]),  # not under a mutant: pytest's own order
        ("stats", [0, 1, 2, 3, 4, 5]),
    ],
)
def test_under_a_mutant_its_own_modules_tests_run_first(
    monkeypatch: pytest.MonkeyPatch, mutant: str, order: list[int]
) -> None:
    """mutmut stops a mutant's run at the first failing test (`-x`); the own file's tests are
    the likeliest to fail, so they go first, and every file's tests keep their order."""
    from types import SimpleNamespace

    from tests.conftest import pytest_collection_modifyitems

    items = [SimpleNamespace(path=Path("tests") / name, n=i) for i, name in enumerate(FILES)]
    monkeypatch.setenv("MUTANT_UNDER_TEST", mutant)
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    assert [item.n for item in items] == order
