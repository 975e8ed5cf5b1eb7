"""pyproject.toml, the requirements files and constraints.txt agree with each other and the code."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _names(path: Path) -> set[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {re.split(r"[<>=!~\[ ]", line)[0].lower() for line in lines if line}


def test_pyproject_lists_every_module_and_reads_the_requirement_files():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    tool = project["tool"]["setuptools"]
    assert sorted(tool["py-modules"]) == sorted(p.stem for p in REPO.glob("*.py"))
    assert tool["packages"] == ["sync_batchnorm"]
    dynamic = tool["dynamic"]
    files = [dynamic["dependencies"]["file"][0]] + [v["file"][0] for v in dynamic["optional-dependencies"].values()]
    assert set(dynamic["optional-dependencies"]) == {"tensorboard", "slurm", "dev"}
    assert all((REPO / f).is_file() for f in files)
    assert project["project"]["requires-python"] == ">=3.10"


def test_constraints_pin_every_requirement_exactly():
    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pinned[name.lower()] = version
    for req in ("requirements.txt", "requirements-dev.txt", "requirements-tensorboard.txt"):
        missing = _names(REPO / req) - set(pinned)
        assert not missing, f"{req}: {missing} not pinned in constraints.txt"
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"


def test_runtime_requirements_hold_no_test_only_package():
    runtime = _names(REPO / "requirements.txt")
    assert not runtime & {"pytest", "prdc", "torch-fidelity", "scikit-image", "scikit-learn", "tensorboard"}
    code = "\n".join(p.read_text() for p in REPO.glob("*.py"))
    for module in ("sklearn", "skimage", "prdc", "torch_fidelity", "pytest"):
        assert not re.search(rf"^\s*(import|from) {module}\b", code, re.M), f"runtime code imports {module}"
