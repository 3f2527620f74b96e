#!/usr/bin/env bash
# `make test-mongo`: the MongoDB tests (engine contract suite, engine, drift, mixed-fleet DAGs) against a real
# mongod instead of the nx-27017 emulator that `make test` uses -- including the `needs_real_mongod` tests the
# emulator cannot show. The server is the compose file's MongoDB service (shard-mongo-0, profile mongo, MongoDB 7,
# root user shardmigrate / $SHARD_DB_PASSWORD), started with `docker compose run` and published on loopback only;
# the tests reach it through SHARDMIGRATE_TEST_MONGO_URL and create and drop their own sm_* databases in it.
# That server is a standalone mongod: the three tests that hold a collection from another session's transaction
# need a replica set and say so (point SHARDMIGRATE_TEST_MONGO_URL at one to run them too).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker >/dev/null; then
  echo "make test-mongo needs Docker (docker compose); without it, make test runs the MongoDB tests against the" \
    "nx-27017 wire-protocol emulator" >&2
  exit 2
fi
NAME=shardmigrate-test-mongo
PORT=${SHARDMIGRATE_TEST_MONGO_PORT:-27018}
cleanup() { docker rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
docker compose -f docker-compose.airflow.yml --profile mongo run -d --no-deps --name "$NAME" \
  -p "127.0.0.1:${PORT}:27017" shard-mongo-0 >/dev/null
for _ in $(seq 1 120); do
  [ "$(docker inspect --format '{{.State.Health.Status}}' "$NAME" 2>/dev/null)" = healthy ] && break
  sleep 1
done
if [ "$(docker inspect --format '{{.State.Health.Status}}' "$NAME")" != healthy ]; then
  echo "the MongoDB service did not become healthy:" >&2
  docker logs --tail 50 "$NAME" >&2
  exit 1
fi
export SHARDMIGRATE_TEST_MONGO_URL="mongodb://shardmigrate:${SHARD_DB_PASSWORD:-shardmigrate}@127.0.0.1:${PORT}/?authSource=admin"
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
.venv/bin/python -m pytest -m mongo tests/engines tests/drift tests/dags ${PYTEST_ARGS:-}
