"""The hashed lock that `make run` installs from agrees with pyproject.toml and with this venv."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^[A-Za-z0-9_.\-]+==")


def _pins(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) for every pin whose marker holds here."""
    pins: dict[str, tuple[str, int]] = {}
    name = None
    for line in path.read_text().splitlines():
        if PIN.match(line):
            requirement = Requirement(line.rstrip("\\ "))
            name = canonicalize_name(requirement.name)
            if requirement.marker is not None and not requirement.marker.evaluate():
                name = None  # for another platform or Python (the lock is universal)
                continue
            pins[name] = (str(requirement.specifier).removeprefix("=="), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    ]


@pytest.mark.parametrize(
    "path", ["requirements.lock", "requirements-models.txt", "requirements-models-large.txt"]
)
def test_every_pin_has_a_hash(path: str) -> None:
    pins = _pins(ROOT / path)
    assert pins
    assert [name for name, (_, hashes) in pins.items() if hashes == 0] == []


def test_the_lock_satisfies_every_dependency_of_the_project() -> None:
    pins = _pins(ROOT / "requirements.lock")
    problems = []
    for requirement in _project_requirements():
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name}: not in requirements.lock (run make lock)")
        elif not requirement.specifier.contains(Version(pinned[0]), prereleases=True):
            problems.append(f"{requirement.name}=={pinned[0]} does not satisfy {requirement}")
    assert problems == []


def test_this_environment_runs_what_the_lock_pins() -> None:
    pins = _pins(ROOT / "requirements.lock")
    drift = []
    for name, (version, _) in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            drift.append(f"{name}: not installed")
            continue
        if Version(installed) != Version(version):
            drift.append(f"{name}: {installed} installed, {version} locked")
    assert drift == []
