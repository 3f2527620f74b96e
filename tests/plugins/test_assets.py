"""The fleet page's files ship inside the package: a wheel built from this checkout holds every asset the
plugin serves, byte for byte, and none of them loads anything from another host."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.plugins.pages import ASSETS, asset

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_wheel_ships_every_asset(tmp_path: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    built = subprocess.run(
        [str(uv), "build", "--wheel", "--out-dir", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in ASSETS:
            member = f"airflow_provider_shardmigrate/plugins/static/{name}"
            assert archive.read(member) == asset(name), member


def test_no_asset_loads_from_another_host() -> None:
    for name in ASSETS:
        text = (asset(name) or b"").decode()
        # the SVG names its XML namespace; nothing is fetched from it
        found = [url for url in re.findall(r"https?://[^\s\"')]+", text) if url != "http://www.w3.org/2000/svg"]
        assert found == [], (name, found)
