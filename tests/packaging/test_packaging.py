"""What installing nbio puts where: one import root, and children that no working
directory can shadow."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_has_one_top_level_package(tmp_path: Path) -> None:
    """The wheel installs nbio and its metadata, nothing else: no ``common`` or
    ``asyncio_impl`` of ours to overwrite, or be overwritten by, another distribution's."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("nbio-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"nbio"}
    assert "nbio/asyncio_impl/server.py" in archive.namelist()
    assert "nbio/common/sink.py" in archive.namelist()


def _shadowing_project(path: Path) -> None:
    """A project of the user's own with a ``common/cli.py`` and an ``nbio/`` package."""
    for package in ("common", "nbio"):
        (path / package).mkdir()
        (path / package / "__init__.py").write_text("raise SystemExit('imported the wrong one')\n")
    (path / "common" / "cli.py").write_text("raise SystemExit('imported the wrong cli')\n")


def test_a_working_directory_of_the_users_cannot_shadow_nbio(tmp_path: Path) -> None:
    """From a directory with its own common/cli.py and nbio/, ``nbio demo`` and ``nbio
    compare`` run nbio's own code, in their children too."""
    _shadowing_project(tmp_path)
    nbio = shutil.which("nbio", path=str(Path(sys.executable).parent))
    assert nbio is not None
    demo = subprocess.run(
        [nbio, "demo", "--impl", "asyncio-protocol", "--size", "1MiB"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    assert "sha256 matches" in demo.stdout and "wrong" not in demo.stdout + demo.stderr
    args = ["--size", "64KiB", "--repeat", "1", "--impls", "asyncio-protocol", "--loops", "default"]
    compare = subprocess.run(
        [nbio, "compare", *args, "--markdown"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compare.returncode == 0, compare.stderr
    assert "| asyncio-protocol | default |" in compare.stdout
