"""Reproducible installs: constraints.txt pins every dependency, and every install uses it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "siliconflow-img-proxy"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, separator, version = line.partition("==")
            assert separator and version, f"not an exact pin: {line!r}"
            found[canonical(name)] = version
    return found


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {
        canonical(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])
        for requirement in requirements
    }


def test_every_declared_dependency_is_pinned_and_the_project_is_not():
    pinned = pins()
    assert declared() - set(pinned) == set()
    assert canonical(PROJECT) not in pinned


def test_the_test_environment_runs_the_pinned_versions():
    # What `make install` put in .venv: a pin that drifted from it means `make lock` was not
    # run after a dependency changed (or the venv was changed by hand).
    pinned = pins()
    drifted = {
        name: (distribution.version, pinned[name])
        for distribution in metadata.distributions()
        if (name := canonical(distribution.metadata["Name"])) in pinned
        and distribution.version != pinned[name]
    }
    assert drifted == {}


def test_every_install_uses_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line]
    assert "PIP_INSTALL := $(BIN)/pip install -q -c $(CONSTRAINTS)" in installs
    # The only other pip install is `make lock`'s, which resolves the pins afresh.
    assert all("$(PIP_INSTALL)" in line or '"$$tmp/venv/bin/pip"' in line for line in installs[1:])
    for stamp in (".runtime", ".dev", ".bench"):
        assert f"$(VENV)/{stamp}: pyproject.toml $(CONSTRAINTS) |" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "RUN pip wheel --wheel-dir /wheels -c constraints.txt ." in dockerfile
    assert "constraints.txt" in dockerfile.split("COPY pyproject.toml", 1)[1].split("\n", 1)[0]
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "constraints.txt" not in ignored
