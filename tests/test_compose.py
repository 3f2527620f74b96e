"""docker-compose.airflow.yml cannot be started here (no Docker engine), so this validates it statically: the
Airflow 3.3 Celery layout, every service's command and environment, one JWT secret everywhere, and that every
connection of example_dags/shards.yaml is an AIRFLOW_CONN_* of the right type pointing at a shard service that
exists, with the credentials and database that service creates; the profiles of the engines not implemented yet,
the health conditions the worker waits for, and the Dockerfile's extras. airflow-init's script is also run, with a
stand-in for the image's /entrypoint (the image cannot run here), to show that a failed migration or user creation
fails it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.airflow.yml"
DOCKERFILE = REPO / "Dockerfile"
TOPOLOGY = REPO / "example_dags" / "shards.yaml"

AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler --skip-serve-logs",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer --skip-serve-logs",
    "airflow-worker": "celery worker --skip-serve-logs",
}
AIRFLOW_SERVICES = [*AIRFLOW_COMMANDS, "airflow-init"]
#: connection type -> (image prefixes of a server of that kind, its port)
SERVERS = {
    "postgres": (("postgres:",), 5432),
    "mysql": (("mysql:", "mariadb:"), 3306),
    "mssql": (("mcr.microsoft.com/mssql/server:",), 1433),
    "mongo": (("mongo:",), 27017),
}
#: Shard servers a plain `up` starts and example_dags/shards.yaml targets; the others sit behind profiles.
STARTED_BY_UP = {"postgres", "mysql"}
#: the compose profiles of the heavier shard servers (SQL Server, MongoDB), which the example topology does not list
PROFILES = {"mssql": {"mssql", "extra-engines"}, "mongo": {"mongo", "extra-engines"}}
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` interpolation with an empty environment (what a fresh checkout gets)."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":  # an escaped dollar
            return "$"
        return env.get(match.group(1)) or (match.group(2) or "")

    return _VAR.sub(replace, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def topology_connections() -> list[dict[str, Any]]:
    return list(yaml.safe_load(TOPOLOGY.read_text())["shards"])


def shard_connections(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    env = env_of(services["airflow-worker"])
    return {k[len("AIRFLOW_CONN_") :].lower(): json.loads(v) for k, v in env.items() if k.startswith("AIRFLOW_CONN_")}


def test_the_airflow_celery_layout_is_complete(services: dict[str, dict[str, Any]]) -> None:
    for name in ["postgres", "redis", *AIRFLOW_SERVICES]:
        assert name in services, f"service {name} missing"
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
    assert services["redis"]["image"].startswith("redis:")
    assert services["postgres"]["image"].startswith("postgres:")


@pytest.mark.parametrize("name", list(AIRFLOW_COMMANDS))
def test_airflow_service_commands(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    assert command_of(service) == AIRFLOW_COMMANDS[name]
    assert service["build"]["dockerfile"] == "Dockerfile" and service["build"]["context"] == "."
    assert service["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in service, f"{name} has no healthcheck"
    assert service.get("restart") == "always"


def shard_services(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """shard service name -> the connection type of the server it runs (from its image)."""
    kinds = {}
    for name, service in services.items():
        for conn_type, (prefixes, _) in SERVERS.items():
            if name.startswith("shard-") and str(service.get("image", "")).startswith(prefixes):
                kinds[name] = conn_type
    return kinds


def init_script(services: dict[str, dict[str, Any]], env: dict[str, str] | None = None) -> str:
    """airflow-init's bash script as the container gets it (compose interpolation applied)."""
    command = services["airflow-init"]["command"]
    assert command[0] == "-c" and len(command) == 2, command
    return interpolate(command[1], env)


def test_init_follows_the_official_file(services: dict[str, dict[str, Any]]) -> None:
    init = services["airflow-init"]
    assert init["entrypoint"] == "/bin/bash"
    assert init["user"] == "0:0", "airflow-init runs as root to fix the ownership of the logs volume"
    env = env_of(init)
    assert env["_AIRFLOW_DB_MIGRATE"] == "true" and env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert env["_AIRFLOW_WWW_USER_USERNAME"] == "airflow" and env["_AIRFLOW_WWW_USER_PASSWORD"] == "airflow"
    assert env["AIRFLOW_UID"] == "50000"
    script = init_script(services)
    assert script.startswith("set -euo pipefail\n")
    assert "/entrypoint airflow version" in script
    assert 'chown -R "${AIRFLOW_UID}:0" /opt/airflow/logs' in script
    assert "|| true" not in script, "a failure must fail airflow-init"
    for name in AIRFLOW_COMMANDS:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


@pytest.fixture
def init_root() -> Iterator[Path]:
    """A stand-in for the container's /opt/airflow, traversable by UID 50000 (pytest's tmp_path is not)."""
    if os.geteuid() != 0:
        pytest.fail("the airflow-init script runs as root in its container; run this test as root")
    root = Path(tempfile.mkdtemp(prefix="shardmigrate-init-"))
    root.chmod(0o755)
    (root / "dags").mkdir(mode=0o755)
    (root / "dags" / "shardmigrate_dags.py").write_text("# the one-line DAG file\n")
    (root / "dags" / "shardmigrate_dags.py").chmod(0o644)
    yield root
    shutil.rmtree(root)


#: Stands in for the image's /entrypoint: runs the migration / user creation when their variables are set and,
#: like the real one, carries on with the command when either fails; then plays the few airflow commands used.
FAKE_ENTRYPOINT = r"""#!/usr/bin/env bash
set -eu
echo "migrate=${_AIRFLOW_DB_MIGRATE:-} create=${_AIRFLOW_WWW_USER_CREATE:-} $*" >> "$FAKE/calls"
if [[ -n "${_AIRFLOW_DB_MIGRATE:-}" && "$FAKE_MIGRATE" == ok ]]; then touch "$FAKE/migrated"; fi
if [[ -n "${_AIRFLOW_WWW_USER_CREATE:-}" && "$FAKE_CREATE_USER" == ok ]]; then
  printf '[\n    {\n        "username": "%s"\n    }\n]\n' "$_AIRFLOW_WWW_USER_USERNAME" > "$FAKE/users"
fi
case "$2 ${3:-}" in
  "version ") echo 3.3.2 ;;
  "db check-migrations") [[ -f "$FAKE/migrated" ]] || { echo "There are still unapplied migrations" >&2; exit 1; } ;;
  "users export") cp "$FAKE/users" "$4" 2>/dev/null || echo "[]" > "$4" ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


def run_init(services: dict[str, dict[str, Any]], root: Path, *, migrate: str, create_user: str, uid: int = 50000):
    fake = root / "fake"
    fake.mkdir(exist_ok=True)
    entrypoint = fake / "entrypoint"
    entrypoint.write_text(FAKE_ENTRYPOINT)
    entrypoint.chmod(0o755)
    script = init_script(services, {"AIRFLOW_UID": str(uid)})
    script = script.replace("/entrypoint", str(entrypoint)).replace("/opt/airflow", str(root))
    script = script.replace("/tmp/airflow-users.json", str(fake / "users-export.json"))
    env = {k: v for k, v in env_of(services["airflow-init"]).items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(
        AIRFLOW_UID=str(uid),
        PATH=os.environ["PATH"],
        FAKE=str(fake),
        FAKE_MIGRATE=migrate,
        FAKE_CREATE_USER=create_user,
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False)
    calls = (fake / "calls").read_text().splitlines() if (fake / "calls").exists() else []
    return done, calls


def test_init_script_migrates_creates_the_user_once_and_fixes_ownership(
    services: dict[str, dict[str, Any]], init_root: Path
) -> None:
    done, calls = run_init(services, init_root, migrate="ok", create_user="ok")
    assert done.returncode == 0, done.stderr
    assert calls[0] == "migrate=true create=true airflow version", calls
    assert all(call.startswith("migrate= create= ") for call in calls[1:]), "migration/user creation ran twice"
    assert (init_root / "logs").stat().st_uid == 50000 and (init_root / "logs").stat().st_gid == 0
    assert "admin user 'airflow' present" in done.stdout


@pytest.mark.parametrize(
    ("migrate", "create_user", "message"),
    [
        ("fails", "ok", "There are still unapplied migrations"),
        ("ok", "fails", "the admin user 'airflow' does not exist"),
    ],
)
def test_init_script_fails_when_the_entrypoint_swallowed_a_failure(
    services: dict[str, dict[str, Any]], init_root: Path, migrate: str, create_user: str, message: str
) -> None:
    done, _ = run_init(services, init_root, migrate=migrate, create_user=create_user)
    assert done.returncode != 0, done.stdout
    assert message in done.stderr


def test_init_script_fails_when_the_airflow_user_cannot_read_the_dags(
    services: dict[str, dict[str, Any]], init_root: Path
) -> None:
    (init_root / "dags" / "shardmigrate_dags.py").chmod(0o600)  # root's only
    done, _ = run_init(services, init_root, migrate="ok", create_user="ok")
    assert done.returncode != 0
    assert "UID 50000 cannot read /" in done.stderr


def test_shard_servers_have_healthchecks_and_the_worker_waits_for_them(services: dict[str, dict[str, Any]]) -> None:
    shards = shard_services(services)
    assert set(shards.values()) == set(SERVERS), shards
    depends_on = services["airflow-worker"]["depends_on"]
    for name in shards:
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert depends_on.get(name, {}).get("condition") == "service_healthy", f"the worker does not wait for {name}"
        # a dependency on a service whose profile is off must be optional, or a plain `up` refuses to start
        assert depends_on[name].get("required", True) is (not services[name].get("profiles")), name


def test_sql_server_and_mongodb_shards_are_behind_profiles(services: dict[str, dict[str, Any]]) -> None:
    for name, conn_type in shard_services(services).items():
        if conn_type in STARTED_BY_UP:
            assert not services[name].get("profiles"), f"{name} must start with a plain up"
        else:
            assert set(services[name]["profiles"]) == PROFILES[conn_type], name
    for name in ["postgres", "redis", *AIRFLOW_SERVICES]:
        assert not services[name].get("profiles"), name


def test_healthchecks_keep_passwords_out_of_the_compose_configuration(services: dict[str, dict[str, Any]]) -> None:
    for name in shard_services(services):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "${" not in test.replace("$${", ""), f"{name}: the healthcheck interpolates a value into the file"


def test_worker_shuts_down_warm_and_waits_for_the_api_server(services: dict[str, dict[str, Any]]) -> None:
    worker = services["airflow-worker"]
    assert env_of(worker)["DUMB_INIT_SETSID"] == "0"
    assert worker["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_environment(services: dict[str, dict[str, Any]], name: str) -> None:
    env = env_of(services[name])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "@postgres/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert (
        env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
        and "@postgres/" in (env["AIRFLOW__CELERY__RESULT_BACKEND"])
    )
    assert (
        env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        and "@redis:6379" in (env["AIRFLOW__CELERY__BROKER_URL"])
    )
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"].encode()) >= 64, "HMAC-SHA512 wants a 64+ byte secret"
    volumes = services[name]["volumes"]
    assert "./example_dags:/opt/airflow/dags:ro" in volumes, "example_dags/ is the dags folder"
    assert any(v.startswith("airflow-logs:/opt/airflow/logs") for v in volumes), "logs are shared"


def test_one_jwt_secret_for_every_airflow_process(services: dict[str, dict[str, Any]]) -> None:
    secrets = {name: env_of(services[name])["AIRFLOW__API_AUTH__JWT_SECRET"] for name in AIRFLOW_SERVICES}
    assert len(set(secrets.values())) == 1, secrets
    # ... also when the user sets their own.
    raw = {name: str(services[name]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]) for name in AIRFLOW_SERVICES}
    chosen = {name: interpolate(value, {"AIRFLOW_JWT_SECRET": "x" * 80}) for name, value in raw.items()}
    assert set(chosen.values()) == {"x" * 80}


def test_only_the_api_server_is_published_and_only_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert list(published) == ["airflow-apiserver"]
    assert published["airflow-apiserver"] == ["127.0.0.1:8080:8080"]


def test_every_topology_shard_has_a_matching_connection_and_server(services: dict[str, dict[str, Any]]) -> None:
    connections = shard_connections(services)
    shards = topology_connections()
    assert shards, "example_dags/shards.yaml lists no shard"
    for shard in shards:
        conn_id = shard["conn_id"]
        assert conn_id in connections, f"no AIRFLOW_CONN_{conn_id.upper()} for shard {shard['id']}"
        spec = connections[conn_id]
        conn_type = spec["conn_type"]
        if shard.get("active", True):
            assert conn_type in STARTED_BY_UP, (
                f"active shard {shard['id']} uses {conn_type}, which a plain up does not start"
            )
        host = spec["host"]
        assert host in services, f"{conn_id} points at {host}, which is not a service of the compose file"
        prefixes, port = SERVERS[conn_type]
        assert services[host]["image"].startswith(prefixes), f"{conn_id} ({conn_type}) points at {host}"
        assert spec["port"] == port


@pytest.mark.parametrize(
    "conn_id", ["shard_pg_0", "shard_pg_1", "shard_mysql_0", "shard_mysql_1", "shard_mssql_0", "shard_mongo_0"]
)
def test_connection_credentials_match_the_shard_server(services: dict[str, dict[str, Any]], conn_id: str) -> None:
    spec = shard_connections(services)[conn_id]
    server = env_of(services[spec["host"]])
    if spec["conn_type"] == "postgres":
        expected = (server["POSTGRES_USER"], server["POSTGRES_PASSWORD"], server["POSTGRES_DB"])
    elif spec["conn_type"] == "mysql":
        expected = (server["MYSQL_USER"], server["MYSQL_PASSWORD"], server["MYSQL_DATABASE"])
    elif spec["conn_type"] == "mssql":
        expected = ("sa", server["MSSQL_SA_PASSWORD"], "master")
        assert server["ACCEPT_EULA"] == "Y"
    else:
        expected = (
            server["MONGO_INITDB_ROOT_USERNAME"],
            server["MONGO_INITDB_ROOT_PASSWORD"],
            server["MONGO_INITDB_DATABASE"],
        )
        assert spec["extra"]["authSource"] == "admin"
    assert (spec["login"], spec["password"], spec["schema"]) == expected


def test_connections_are_valid_airflow_connections(services: dict[str, dict[str, Any]]) -> None:
    from airflow.models.connection import Connection

    for conn_id, spec in shard_connections(services).items():
        connection = Connection.from_json(json.dumps(spec), conn_id=conn_id)
        assert connection.conn_type == spec["conn_type"] and connection.host == spec["host"]


def test_every_airflow_service_gets_every_shard_connection(services: dict[str, dict[str, Any]]) -> None:
    expected = set(shard_connections(services))
    for name in AIRFLOW_SERVICES:
        got = {k[len("AIRFLOW_CONN_") :].lower() for k in env_of(services[name]) if k.startswith("AIRFLOW_CONN_")}
        assert got == expected, name


def test_profiled_shards_are_not_targeted_and_the_file_says_what_is_unverified(
    services: dict[str, dict[str, Any]],
) -> None:
    connections = shard_connections(services)
    targeted = {s["conn_id"] for s in topology_connections() if s.get("active", True)}
    for conn_id, spec in connections.items():
        if spec["conn_type"] not in STARTED_BY_UP:
            assert conn_id not in targeted, f"{conn_id} ({spec['conn_type']}) is behind a profile but is targeted"
    text = " ".join(COMPOSE.read_text().replace("#", " ").split())
    assert "not verified against any live server" in text and "only against a wire-protocol emulator" in text


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_dockerfile_builds_airflow_3_3_with_this_repository(services: dict[str, dict[str, Any]]) -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:3\.3\.2-python3\.11$", text, re.M)
    assert re.search(r"^FROM \$\{AIRFLOW_IMAGE\}$", text, re.M)
    assert "COPY --chown=airflow:0 airflow_provider_shardmigrate /opt/shardmigrate/" in text
    install = re.search(r"^RUN (pip install .*?)(?:&&|$)", text.replace("\\\n", " "), re.M)
    assert install, "no pip install"
    words = install.group(1).split()
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in words, "Airflow itself must stay at the image's version"
    assert '"/opt/shardmigrate[${SHARDMIGRATE_EXTRAS}]"' in words
    assert '"celery>=5.5,<5.7"' in words, "the compose file runs the CeleryExecutor; celery 5.7 breaks its provider"
    extras = re.search(r"^ARG SHARDMIGRATE_EXTRAS=(\S+)$", text, re.M)
    assert extras, "no default SHARDMIGRATE_EXTRAS"
    connections = shard_connections(services)
    targeted = {connections[s["conn_id"]]["conn_type"] for s in topology_connections() if s.get("active", True)}
    assert targeted <= set(extras.group(1).split(",")), f"the image lacks the extras of {targeted}"
    # the profiled shards too: starting their profile and listing them must not need another image
    defined = {spec["conn_type"] for spec in connections.values()}
    assert defined <= set(extras.group(1).split(",")), f"the image lacks the extras of {defined}"
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "!airflow_provider_shardmigrate/" in ignore and "!pyproject.toml" in ignore
