"""The package as Airflow sees it: the provider entry point, and `airflow providers list`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_get_provider_info_matches_the_schema():
    import json
    from importlib.metadata import entry_points

    import airflow
    import jsonschema

    (entry,) = [
        e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_provider_shardmigrate")
    ]
    info = entry.load()()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-shardmigrate"


@pytest.mark.slow
def test_airflow_providers_list_shows_the_provider(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path)
    airflow = Path(sys.executable).with_name("airflow")
    result = subprocess.run([str(airflow), "providers", "list"], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "airflow-provider-shardmigrate" in result.stdout


def test_package_root_exports_builders():
    import airflow_provider_shardmigrate as pkg

    assert callable(pkg.load_migration_dags) and callable(pkg.build_migration_dag) and callable(pkg.build_rollback_dag)
