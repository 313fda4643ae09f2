"""infra/needs.sh names each system package `make test` needs that is missing, and prints
the apt-get line that installs them, before the suite starts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ALL = ("redis-server", "java", "mvn", "wrk", "chromium", "chromedriver")


def needs(
    tmp_path: Path, present: tuple[str, ...], jars: bool = False
) -> subprocess.CompletedProcess[str]:
    """needs.sh on a PATH that holds only the shell's tools and stubs of `present`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "dirname"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    for command in present:
        (bin_dir / command).write_text("#!/bin/sh\n")
        (bin_dir / command).chmod(0o755)
    libs = tmp_path / "libs"
    libs.mkdir()
    if jars:
        (libs / ".complete").touch()
    return subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "infra" / "needs.sh")],
        env={"PATH": str(bin_dir), "LOCAL_KAFKA_LIBS": str(libs)},
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_all_present_is_silent(tmp_path: Path) -> None:
    result = needs(tmp_path, ALL)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("present", "packages"),
    [
        (ALL[:3], ["wrk", "chromium", "chromium-driver"]),
        (("java", "mvn", "chromium", "chromedriver"), ["redis-server", "wrk"]),
        (
            (),
            [
                "redis-server",
                "openjdk-17-jre-headless",
                "wrk",
                "chromium",
                "chromium-driver",
                "maven",
            ],
        ),
    ],
)
def test_each_missing_package_is_named_with_the_line_that_installs_them(
    tmp_path: Path, present: tuple[str, ...], packages: list[str]
) -> None:
    result = needs(tmp_path, present)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == len(packages) + 1
    for package in packages:
        assert any(f"(Debian package {package})" in line for line in lines[:-1])
    assert lines[-1].endswith(f"apt-get install -y {' '.join(packages)}")


def test_maven_is_not_needed_once_the_jars_are_resolved(tmp_path: Path) -> None:
    result = needs(tmp_path, tuple(c for c in ALL if c != "mvn"), jars=True)
    assert (result.returncode, result.stderr) == (0, "")
