"""The wheel installs one top-level package, ``actorgrid``, with the CLI inside it.

The source keeps the command line in a top-level ``cli/`` folder, which pyproject's
``package-dir`` maps to ``actorgrid.cli``; a mistake there would install a bare ``cli`` module
into site-packages or leave the ``actorgrid`` command pointing at nothing.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 300

# Not needed to build, and large or stale (an old build/ can leak deleted files into a wheel).
_COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".nox",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "benchmarks",
    "examples",
    "tests",
)


def _build_requirements_installed() -> bool:
    """Whether this environment already satisfies pyproject's [build-system] requires."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["build-system"]
    for text in requires["requires"]:
        req = Requirement(text)
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not req.specifier.contains(installed, prereleases=True):
            return False
    return True


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean copy of the source tree; the wheel is built from it, the tree is not touched."""
    source = tmp_path_factory.mktemp("src") / "actorgrid"
    shutil.copytree(ROOT, source, ignore=_COPY_IGNORE)
    return source


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    tmp = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp / "dist")]
    # Without isolation when the build backend is already here (fast, offline); otherwise
    # pip fetches the build requirements from the configured index.
    if _build_requirements_installed():
        cmd.append("--no-build-isolation")
    cmd.append(str(source))
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    (path,) = (tmp / "dist").glob("actorgrid-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _dist_info(wheel: zipfile.ZipFile) -> str:
    (name,) = {n.split("/")[0] for n in wheel.namelist() if n.split("/")[0].endswith(".dist-info")}
    return name


@pytest.mark.slow
def test_wheel_has_one_top_level_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {n.split("/")[0] for n in names}
    top -= {n for n in top if n.endswith((".dist-info", ".data"))}
    assert top == {"actorgrid"}, f"unexpected top-level entries in the wheel: {sorted(top)}"
    assert not [n for n in names if n.startswith("cli/")]
    top_level_txt = f"{_dist_info(wheel)}/top_level.txt"  # written by setuptools, not by all
    if top_level_txt in names:
        assert wheel.read(top_level_txt).decode().split() == ["actorgrid"]


@pytest.mark.slow
def test_wheel_contains_every_source_file(wheel: zipfile.ZipFile, source: Path) -> None:
    names = set(wheel.namelist())
    assert "actorgrid/cli/main.py" in names
    assert "actorgrid/py.typed" in names
    expected = {p.relative_to(source).as_posix() for p in (source / "actorgrid").rglob("*.py")}
    expected |= {f"actorgrid/cli/{p.name}" for p in (source / "cli").glob("*.py")}
    missing = sorted(expected - names)
    assert not missing, (
        f"source files missing from the wheel (is their package listed in pyproject's "
        f"[tool.setuptools] packages?): {missing}"
    )


@pytest.mark.slow
def test_console_script_points_into_the_package(wheel: zipfile.ZipFile) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(f"{_dist_info(wheel)}/entry_points.txt").decode())
    assert dict(entry_points["console_scripts"]) == {"actorgrid": "actorgrid.cli.main:main"}


def test_tests_and_examples_import_the_cli_as_installed() -> None:
    """``cli`` is importable from a checkout's root only; installed, it is ``actorgrid.cli``
    (a test importing ``cli.x`` passes in a dev tree and fails on a fresh install)."""
    bare = []
    for path in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("examples/**/*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            words = line.split()
            if words[:2] in (["import", "cli"], ["from", "cli"]) or (
                len(words) > 1 and words[0] in ("import", "from") and words[1].startswith("cli.")
            ):
                bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bare, "import actorgrid.cli..., not cli...:\n" + "\n".join(bare)
