"""Packaging: what a new user's install gets.

- The repository's top-level ``kernels/`` folder never shadows an installed package named
  ``kernels`` (transformers and bitsandbytes import the PyPI one). ``python -m`` and
  ``python -c`` put the working directory first on ``sys.path``, so from the repository
  root the folder is the first candidate: it has no ``__init__.py`` (the code is in
  ``kernels/src/``, installed as ``llamacpu.kernels``), which makes it at most a namespace
  portion, and a namespace portion loses to any regular package later on the path.
- A regular (non-editable) wheel install runs from any directory: the kernels are
  ``llamacpu.kernels`` and the expert programs ship inside the package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

WHICH_KERNELS = (
    "import json, kernels; "
    "print(json.dumps({'file': getattr(kernels, '__file__', None), "
    "'path': [str(p) for p in getattr(kernels, '__path__', [])]}))"
)


def _python(args: list[str], cwd: Path, pythonpath: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _inside_repo(path: str | None) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(REPO)


def test_top_level_kernels_folder_is_not_a_regular_package():
    assert (REPO / "kernels").is_dir()
    assert not (REPO / "kernels" / "__init__.py").exists()
    assert (REPO / "kernels" / "src" / "__init__.py").exists()


def test_an_installed_kernels_package_wins_over_the_repository_folder(tmp_path):
    """From the repository root, ``import kernels`` finds an installed regular package named
    ``kernels`` (a stub here, later on sys.path than the working directory), never the
    repository's folder."""
    stub = tmp_path / "site" / "kernels"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("CUDAProperties = object\n")
    out = _python(["-c", WHICH_KERNELS], cwd=REPO, pythonpath=tmp_path / "site", timeout=60)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["file"] == str(stub / "__init__.py"), found


def test_import_kernels_from_the_repository_root_is_not_this_repository():
    """The environment's own ``kernels`` (the PyPI package, which transformers depends on)
    is what ``import kernels`` gives from the repository root."""
    try:
        metadata.version("kernels")
    except metadata.PackageNotFoundError:
        pytest.skip("no package named kernels is installed in this environment")
    out = _python(["-c", WHICH_KERNELS], cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["file"] is not None and not _inside_repo(found["file"]), found


def test_transformers_and_llamacpu_kernels_import_from_the_repository_root():
    out = _python(["-c", "import transformers.activations, llamacpu.kernels.pointer_read as p; "
                   "print(p.__file__)"], cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).name == "pointer_read.py"


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory) -> Path:
    """The project built as a wheel once and installed (no dependencies: this environment
    has them) into a folder of its own, used through PYTHONPATH."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--disable-pip-version-check", "-w", str(root / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("llamacpu-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert not any(n.startswith("kernels/") for n in names), "kernels must not be top level"
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "llamacpu").rglob("*.py")}
    missing = sorted(m for m in modules if m not in names and "__pycache__" not in m)
    assert not missing, f"the wheel leaves out {missing}: list the subpackage in pyproject.toml"
    target = root / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    return target


@pytest.mark.slow
def test_wheel_ships_kernels_and_programs(wheel_install, tmp_path):
    out = _python(["-c", "import json, llamacpu, llamacpu.kernels.pointer_read as k, "
                   "llamacpu.core.golden as g; print(json.dumps([llamacpu.__file__, k.__file__, "
                   "str(g.PROGRAMS_DIR), sorted(p.stem for p in g.PROGRAMS_DIR.glob('*.lasm'))]))"],
                  cwd=tmp_path, pythonpath=wheel_install, timeout=120)
    assert out.returncode == 0, out.stderr
    package, kernel, programs, stems = json.loads(out.stdout)
    for path in (package, kernel, programs):
        assert Path(path).resolve().is_relative_to(wheel_install.resolve()), path
    assert stems == sorted(p.stem for p in (REPO / "programs").glob("*.lasm"))


@pytest.mark.slow
def test_wheel_install_runs_a_program_from_another_directory(wheel_install, tmp_path):
    out = _python(["-m", "llamacpu.run", str(REPO / "programs" / "add.lasm"), "--input", "12+35"],
                  cwd=tmp_path, pythonpath=wheel_install, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "47"


@pytest.mark.slow
def test_wheel_install_trains_from_another_directory(wheel_install, tmp_path):
    """Stage 0 for two steps (the tasks read their expert programs from the package): the
    trainer reports the stage (not passed after two steps: exit 1) and writes a checkpoint."""
    out = _python(["-m", "llamacpu.train", "--stage", "0", "--out", str(tmp_path / "ckpt"),
                   "--steps", "2", "--eval-size", "8", "--threads", "1", "--no-progress"],
                  cwd=tmp_path, pythonpath=wheel_install, timeout=600)
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.returncode in (0, 1), out.stderr[-2000:]
    assert "stage 0 (add1): " in out.stdout, out.stdout
    assert (tmp_path / "ckpt" / "stage_0").is_dir(), list((tmp_path / "ckpt").iterdir())
