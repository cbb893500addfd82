"""Shared harness: run the program for any stack under the offline engine.

Each call is a fresh event loop, fresh mocks and a fresh monitor (see infra/mock_engine.py),
with `dry_run=False` so that every apply runs and tests assert on resolved values.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from infra.mock_engine import FAKE_ACCOUNT_ID, FakeCloud, ProgramRun, run_program
from infra.settings import IMAGE_TAG_VARIABLE
from infra.stackfiles import load_stack_config, to_config_string

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "analytics-platform"
STACKS = ("dev", "staging", "prod")

RunStack = Callable[..., ProgramRun]
T = TypeVar("T")
# What CI passes a build as its tag (deploy.yml: IMAGE_TAG from github.sha); the tests run the
# program as CI does.
CI_COMMIT = "5e0c3b7a9d1f2468ace0b2d4f6a8c0e2b4d6f8a1"
os.environ[IMAGE_TAG_VARIABLE] = CI_COMMIT


def full_key(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def stack_config(
    stack: str,
    overrides: Mapping[str, Any] | None = None,
    remove: Iterable[str] = (),
    secrets: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """A repository stack's config as the CLI passes it, with keys changed for one test."""
    loaded = load_stack_config(ROOT, stack)
    config, secret_keys = dict(loaded.config), list(loaded.secret_keys)
    for key in remove:
        config.pop(full_key(key), None)
        if full_key(key) in secret_keys:
            secret_keys.remove(full_key(key))
    for key, value in (overrides or {}).items():
        config[full_key(key)] = to_config_string(value)
    for key, value in (secrets or {}).items():
        config[full_key(key)] = value
        secret_keys.append(full_key(key))
    return config, secret_keys


# Program runs shared within one test session, by what they were run from: the program is
# deterministic, so every test that needs the same run gets a copy of one. Each entry keeps the
# functions mutmut saw the run reach (see `shared`).
_SHARED_RUNS: dict[Hashable, tuple[Any, frozenset[str]]] = {}


def _mutmut_first_pass() -> bool:
    """mutmut's first pass (mutmut 3.8.1, mutation/trampoline.py: MUTANT_UNDER_TEST=stats), in
    which it records, per test, every mutated function the test reaches."""
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def shared(key: Hashable, make: Callable[[], T]) -> T:
    """A deep copy of `make()`'s result, made once per test session for `key`.

    mutmut 3 runs for each mutant only the tests that reached the mutated function in its first
    pass (runners/harness.py: the functions a test's trampolines recorded in `state()._stats` by
    its teardown). A test handed a shared run reaches nothing itself, so in the first pass the
    functions `make` reached are recorded with the run and recorded again for every test that
    gets it: each test is selected for exactly the mutants it would reach running the program
    itself. A mutant's own session runs the mutated program (a fresh session, see
    `pytest_sessionstart`), so sharing there hands every test the mutant's resources."""
    if key not in _SHARED_RUNS:
        _SHARED_RUNS[key] = _recording(make)
    value, reached = _SHARED_RUNS[key]
    if reached:
        from mutmut.state import state

        state()._stats.update(reached)
    return copy.deepcopy(value)


def _recording(make: Callable[[], T]) -> tuple[T, frozenset[str]]:
    if not _mutmut_first_pass():
        return make(), frozenset()
    from mutmut.state import state

    before, state()._stats = state()._stats, set()
    try:
        value = make()
    finally:
        # A run that raises (a refused config) still reached what it reached.
        reached = state()._stats
        state()._stats = before | reached
    return value, frozenset(reached)


@pytest.fixture
def run_stack() -> RunStack:
    """Runs a repository stack, optionally with config changed; see `stack_config`.

    A run is shared (`shared`) by every test that asks for the same stack name, config and
    IMAGE_TAG (the one environment variable the program reads) in a session, and handed out as
    a deep copy, so a test can never see another test's changes. A run against a test's own
    fake cloud is always fresh (new event loop, new mocks), and so is one that fails. A test
    that patches the program's own modules calls `run_program` itself.
    """

    def run(
        stack: str = "dev",
        overrides: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        secrets: Mapping[str, str] | None = None,
        name: str | None = None,
        cloud: FakeCloud | None = None,
    ) -> ProgramRun:
        config, secret_keys = stack_config(stack, overrides, remove, secrets)
        if cloud is not None:
            return run_program(ROOT / "infra", PROJECT, name or stack, config, secret_keys, cloud)
        return shared_program_run(name or stack, config, secret_keys)

    return run


def shared_program_run(
    stack: str, config: Mapping[str, str], secret_keys: Iterable[str]
) -> ProgramRun:
    """The program's run for this stack name and config, against a new fake cloud, shared."""
    config, secret_keys = dict(config), sorted(secret_keys)
    image_tag = os.environ.get(IMAGE_TAG_VARIABLE)
    key = ("run", stack, json.dumps(config, sort_keys=True), tuple(secret_keys), image_tag)
    return shared(
        key,
        lambda: run_program(ROOT / "infra", PROJECT, stack, config, secret_keys, mocks=FakeCloud()),
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """A shared run lives for one test session, not one process. mutmut runs its first pass on the
    unmutated code and then forks each mutant's session from that same process; a run kept from
    then would hand every mutant the unmutated program's resources, and hide it."""
    del session
    _SHARED_RUNS.clear()


# infra.release.xǁReleaseǁcanary__mutmut_42 -> release; infra.policies.rds.x_f__mutmut_1 -> policies
_MUTANT_MODULE = re.compile(r"^infra\.(?P<module>[a-z_]+)[.\w]*?\.x[_ǁ]")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under a mutant, the tests of its own module's file run first. mutmut stops a mutant's run
    at its first failing test (runners/harness.py: `-x`) and hands pytest its tests in no
    particular order, so a mutant that its own file's tests catch is caught in seconds instead
    of after every other test that reaches it. Survivors run every test either way."""
    match = _MUTANT_MODULE.match(os.environ.get("MUTANT_UNDER_TEST", ""))
    if match is None:
        return
    own = f"test_{match.group('module')}.py"
    items.sort(key=lambda item: item.path.name != own)


def unchanged_run(stack: str) -> ProgramRun:
    """A copy of the repository stack's run as it is, shared within the test session."""
    return shared_program_run(stack, *stack_config(stack))


@pytest.fixture
def project_copy(tmp_path: Path) -> Callable[..., Path]:
    """A project folder with this repo's program and a stack file written by the test."""

    def make(stack: str, stack_file: str | dict[str, Any]) -> Path:
        shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
        (tmp_path / "infra").symlink_to(ROOT / "infra", target_is_directory=True)
        text = stack_file if isinstance(stack_file, str) else yaml.safe_dump(stack_file)
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(text)
        return tmp_path

    return make


def stack_yaml(stack: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())


def stack_account(stack: str) -> str:
    """The account a repository stack's AWS provider works in offline: the first it is pinned
    to, as the provider refuses any other; the offline engine's own account otherwise."""
    pinned = stack_yaml(stack)["config"][f"{PROJECT}:aws"].get("allowedAccountIds") or []
    return pinned[0] if pinned else FAKE_ACCOUNT_ID


def policy_doc(text: str) -> dict[str, Any]:
    doc = json.loads(text)
    assert doc["Version"] == "2012-10-17"
    return doc


DB_CALL = "instance = aws.rds.Instance(\n            name,"


def renamed_database(tmp_path: Path, new_name: str, alias: bool) -> Path:
    """A copy of the program whose database instance has another logical name."""
    main_dir = tmp_path / "infra"
    shutil.copytree(ROOT / "infra", main_dir, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    source = (main_dir / "database.py").read_text()
    assert DB_CALL in source
    options = "opts=self.stateful_opts(depends_on=waits_for),"
    assert options in source
    renamed = source.replace(DB_CALL, f'instance = aws.rds.Instance(\n            "{new_name}",')
    if alias:
        renamed = renamed.replace(
            options,
            "opts=self.stateful_opts(depends_on=waits_for, aliases=[pulumi.Alias(name=name)]),",
        )
    (main_dir / "database.py").write_text(renamed)
    return main_dir


def preview_of_copy(stack: str, main_dir: Path) -> dict[str, Any]:
    """The preview of a changed copy of the program, imported afresh as the `infra` package."""
    saved_modules = {k: v for k, v in sys.modules.items() if k == "infra" or k.startswith("infra.")}
    saved_path = list(sys.path)
    for key in saved_modules:
        del sys.modules[key]
    sys.path.insert(0, str(main_dir.parent))
    try:
        config, secret_keys = stack_config(stack)
        run = run_program(main_dir, PROJECT, stack, config, secret_keys, FakeCloud())
        return json.loads(json.dumps(run.to_json()))
    finally:
        for key in [k for k in sys.modules if k == "infra" or k.startswith("infra.")]:
            del sys.modules[key]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path
