#!/usr/bin/env bash
# `make test-mssql`: the SQL Server tests -- the engine contract suite's `mssql` parameter included -- against a
# real SQL Server: the compose file's `shard-mssql-0` service (profile `mssql`), in a compose project of its own
# (so its volume is not a deployment's), published on 127.0.0.1 only, removed with its volume afterwards.
# Needs Docker with Compose v2. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v docker >/dev/null 2>&1 || { echo "make test-mssql needs Docker (docker compose)" >&2; exit 2; }
PORT="${SHARDMIGRATE_TEST_MSSQL_PORT:-14330}"
PASSWORD="${MSSQL_SA_PASSWORD:-Shardmigrate-2026}"
NAME="shardmigrate-test-mssql"
COMPOSE=(docker compose -p "$NAME" -f docker-compose.airflow.yml --profile mssql)

cleanup() {
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
}
trap cleanup EXIT

MSSQL_SA_PASSWORD="$PASSWORD" "${COMPOSE[@]}" run -d --name "$NAME" --publish "127.0.0.1:${PORT}:1433" shard-mssql-0 >/dev/null
status="starting"
for _ in $(seq 1 90); do
    status="$(docker inspect -f '{{.State.Health.Status}}' "$NAME" 2>/dev/null || echo missing)"
    [ "$status" = "healthy" ] && break
    sleep 2
done
if [ "$status" != "healthy" ]; then
    echo "SQL Server did not become healthy (status: $status); its last log lines:" >&2
    docker logs "$NAME" 2>&1 | tail -40 >&2
    exit 1
fi

export SHARDMIGRATE_TEST_MSSQL_URL="mssql://sa:${PASSWORD}@127.0.0.1:${PORT}/master"
.venv/bin/python -m pytest tests/engines tests/drift tests/core/test_tsql.py -k "mssql or tsql" "$@"
