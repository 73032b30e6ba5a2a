"""What a user installs: the sdist holds the package, its tests, docs and license only."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_sdist_holds_the_package_tests_docs_and_license_only(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("needs uv on the PATH to build the sdist")
    subprocess.run(
        [uv, "build", "--sdist", "--quiet", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    [sdist] = tmp_path.glob("tinybus-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    tops = {name.split("/")[1] for name in names if name.count("/") >= 1}
    assert tops <= {
        "tinybus",
        "tests",
        "docs",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "PKG-INFO",
        ".gitignore",
    }, tops
    assert {"tinybus", "tests", "docs", "LICENSE"} <= tops
    assert not [name for name in names if ".hypothesis" in name or "__pycache__" in name]
    assert any(name.endswith("tinybus/py.typed") for name in names)
