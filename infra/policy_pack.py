"""Builds the self-contained CrossGuard pack that `pulumi policy publish` uploads.

    python -m infra.policy_pack OUT_DIR        (make policy-pack: build/policy-pack)

`pulumi policy publish` tars only the pack's folder, and a published pack is installed from that
tarball alone (pulumi/pulumi pkg/backend/httpstate/policypack.go: archive.TGZ of the folder;
an install extracts it and runs pip there). So the build holds the pack's files, a copy of
every `infra` module the rules import, and a requirements.txt that pins every package those
modules need, transitively, at the versions of constraints.txt: the pack installs the same
versions as the program, with nothing outside it.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# _rules.is_taggable imports pulumi_aws resource classes by name, which no import statement shows.
DYNAMIC_IMPORTS = ("pulumi_aws",)
PACK_YAML = """\
# Built by `make policy-pack` from policy/ and infra/policies: publish with
#   pulumi policy publish build/policy-pack
description: analytics-platform security, data-safety and cost rules (infra/policies)
runtime:
  name: python
  options:
    toolchain: pip
    virtualenv: venv
version: {version}
"""


def _module_file(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def infra_modules(entry: str = "infra.policies", root: Path = ROOT) -> tuple[list[Path], set[str]]:
    """The files of every `infra` module `entry` imports, and the top-level names of the rest."""
    files: dict[str, Path] = {}
    external: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        path = _module_file(name, root)
        if name in files or path is None:
            continue
        files[name] = path
        parent = name.rpartition(".")[0]
        imported = _imports(path) | ({parent} if parent else set())
        todo.extend(i for i in imported if i.split(".")[0] == "infra")
        external.update(i.split(".")[0] for i in imported if i.split(".")[0] != "infra")
    return sorted(files.values()), external - set(sys.stdlib_module_names) - {"__future__"}


def _constraints(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def pinned_closure(import_names: Iterable[str], constraints: dict[str, str]) -> dict[str, str]:
    """Every distribution the imports need, with its dependencies, pinned as in constraints."""
    owners = packages_distributions()
    todo = [canonicalize_name(d) for name in import_names for d in owners.get(name, [])]
    pins: dict[str, str] = {}
    while todo:
        dist = todo.pop()
        if dist in pins:
            continue
        if dist not in constraints:
            raise SystemExit(f"error: {dist} is not pinned in constraints.txt (make constraints)")
        pins[dist] = constraints[dist]
        try:
            needs = requires(dist) or []
        except PackageNotFoundError:
            raise SystemExit(
                f"error: {dist} is not installed here (make .venv/.installed)"
            ) from None
        for spec in map(Requirement, needs):
            if spec.marker is None or spec.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(spec.name))
    return pins


def build(out: Path, root: Path = ROOT) -> Path:
    modules, external = infra_modules(root=root)
    pins = pinned_closure(
        sorted(external | set(DYNAMIC_IMPORTS)), _constraints(root / "constraints.txt")
    )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in modules:
        target = out / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shutil.copyfile(root / "policy" / "__main__.py", out / "__main__.py")
    version = _pack_version(root / "policy" / "PulumiPolicy.yaml")
    (out / "PulumiPolicy.yaml").write_text(PACK_YAML.format(version=version), encoding="utf-8")
    lines = ["# Every package the rules need, pinned as in the project's constraints.txt."]
    lines += [f"{name}=={version}" for name, version in sorted(pins.items())]
    (out / "requirements.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _pack_version(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("version:"):
            return line.partition(":")[2].strip()
    raise SystemExit(f"error: {path}: no `version:`")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.policy_pack", description=__doc__)
    parser.add_argument("out", type=Path, help="folder to build the pack in (replaced)")
    out = build(parser.parse_args(argv).out)
    print(f"built {out}: pulumi policy publish {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
