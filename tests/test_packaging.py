"""The distribution installs one namespace, ``mrdserve``: the wheel holds nothing else at its top level, every
package folder of the repository is in it under ``mrdserve.``, and the command line and data files come along."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("models", "service", "gadgets")


def _package_folders() -> set[str]:
    return {"mrdserve." + ".".join(init.parent.relative_to(ROOT).parts)
            for top in TOP_LEVEL for init in (ROOT / top).rglob("__init__.py")}


def test_the_package_list_names_every_package_folder():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _package_folders()
    assert setuptools["package-dir"] == {f"mrdserve.{top}": top for top in TOP_LEVEL}


def test_every_package_declares_its_public_api():
    for package in sorted(_package_folders()):
        folder = ROOT.joinpath(*package.split(".")[1:])
        source = (folder / "__init__.py").read_text()
        assert "__all__" in source, f"{package} declares no __all__"
        module = __import__(package, fromlist=["__all__"])
        public = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")} | {
            p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
        assert set(module.__all__) == public, f"{package}.__all__ does not list its public modules"
        for name in module.__all__:
            assert (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file() \
                or hasattr(module, name), f"{package}.__all__ names {name!r}, which it does not hold"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel, built from a copy of the sources (setuptools leaves a build/ folder where it builds)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for top in TOP_LEVEL:
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("mrdserve-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_adds_only_the_mrdserve_namespace(wheel):
    top = {name.split("/")[0] for name in wheel.namelist()}
    (dist_info,) = [name for name in top if name.endswith(".dist-info")]
    assert top == {"mrdserve", dist_info}
    names = set(wheel.namelist())
    assert "mrdserve/__init__.py" not in names  # a namespace package: nothing to shadow or collide with
    for module in ("models/physics/fft.py", "service/cli.py", "gadgets/reconstruct.py", "service/engine/engine.py"):
        assert f"mrdserve/{module}" in names
    assert any(name.startswith("mrdserve/service/artifacts/") and name.endswith("manifest.json") for name in names)
    assert any(name.startswith("mrdserve/models/training/configs/") for name in names)
    assert any(name.startswith("mrdserve/gadgets/config/") and name.endswith(".xml") for name in names)
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert "mrdserve = mrdserve.service.cli:main" in entry_points


def test_nothing_imports_the_repository_folders_by_their_bare_names():
    """Old-style ``import models...`` would load a second copy of a module beside ``mrdserve.models...``."""
    bare = []
    for top in (*TOP_LEVEL, "tests", "bench"):
        for path in (ROOT / top).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.lstrip()
                if stripped.startswith(tuple(f"{verb} {name}" for verb in ("from", "import") for name in TOP_LEVEL)):
                    word = stripped.split()[1]
                    if word.split(".")[0] in TOP_LEVEL:
                        bare.append(f"{path.relative_to(ROOT)}:{number}")
    assert not bare, bare
