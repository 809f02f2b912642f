"""The built wheels: complete metadata, recipes inside, and a fresh venv where the CLI works.

The wheels are built from a copy of the checkout (nothing is written into it) and installed
into a new venv with no editable install; the commands then run in an empty directory, so
nothing can come from the checkout.
"""

import shutil
import subprocess
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "data", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


def sh(*cmd, cwd=None, timeout=300):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """The core and charlm-ssm wheels, built without network (the venv's setuptools)."""
    src = tmp_path_factory.mktemp("src") / "charlm"
    shutil.copytree(ROOT, src, ignore=SKIP)
    out = tmp_path_factory.mktemp("wheels")
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out,
       src, src / "plugins" / "charlm-ssm")
    return {p.name.split("-")[0]: p for p in out.glob("*.whl")}


def metadata(wheel: Path) -> tuple[list[str], object]:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        text = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    return names, HeaderParser().parsestr(text)


def test_core_wheel_metadata(wheels):
    names, meta = metadata(wheels["charlm_toolkit"])
    assert meta["Name"] == "charlm-toolkit"
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta["Requires-Python"] == ">=3.11"
    assert "Programming Language :: Python :: 3.11" in meta.get_all("Classifier")
    assert meta.get_all("Project-URL")
    assert {"charlm/py.typed", "charlm/recipes/micro.toml", "charlm/recipes/small-50M.toml"} <= set(names)


def test_plugin_wheel_needs_a_compatible_core_and_ships_its_recipe(wheels):
    names, meta = metadata(wheels["charlm_ssm"])
    assert meta["Name"] == "charlm-ssm" and meta["License-Expression"] == "MIT"
    assert "charlm-toolkit~=0.1.0" in meta.get_all("Requires-Dist")
    assert "charlm_ssm/recipes/hybrid-ssm.toml" in names


@pytest.mark.slow
def test_fresh_venv_from_the_wheels(wheels, tmp_path):
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    bin_ = venv / "bin"
    # torch pinned like `make setup`; our wheels come from files, not from an index
    sh(bin_ / "pip", "install", "-q", "torch==2.13.0", *wheels.values(), timeout=600)
    work = tmp_path / "empty"
    work.mkdir()
    charlm = bin_ / "charlm"

    where = sh(bin_ / "python", "-c", "import charlm; print(charlm.__file__)", cwd=work)
    assert Path(where).is_relative_to(venv)
    plugins = sh(charlm, "list-plugins", cwd=work)
    assert "ssm  (charlm-ssm 0.1.0, charlm_ssm.plugin)  [ok]" in plugins
    recipes = sh(charlm, "recipes", cwd=work).split("\n")
    assert any(r.startswith("micro ") for r in recipes) and any(r.startswith("hybrid-ssm ") for r in recipes)

    texts = work / "texts"
    texts.mkdir()
    for d in range(4):
        (texts / f"doc{d}.txt").write_bytes(b"what's in a name? that which we call a rose " * 200)
    sh(charlm, "data", "prepare", "texts", "--out", "data", "--val-fraction", "0.5", cwd=work)
    sh(charlm, "run", "micro", "--max-steps", "2", "--device", "cpu", "model.n_layer=1", "micro_batch_size=4",
       "data.train=data/train.bin", "data.val=data/val.bin", cwd=work)
    assert (work / "runs" / "micro" / "checkpoints" / "last.pt").is_file()
    assert "step          2\n" in sh(charlm, "info", "runs/micro", cwd=work)
