#!/usr/bin/env bash
# A virtualenv of its own with migra (PostgreSQL schema diff), for the drift cross-check test and the drift
# benchmark. migra pins an old SQLAlchemy line; kept apart, it can never change what Airflow runs on.
# Idempotent: does nothing when .cache/migra-venv/bin/migra already works. Prints the migra path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MIGRA_VENV:-.cache/migra-venv}"
if "$VENV/bin/migra" --help >/dev/null 2>&1; then
  echo "$VENV/bin/migra"
  exit 0
fi
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "migra==3.0.1663481299" \
  "schemainspect==3.1.1663587362" \
  "sqlbag==0.1.1617247075" \
  "SQLAlchemy==1.4.54" \
  "psycopg2-binary==2.9.10" \
  "six==1.17.0" >&2
"$VENV/bin/migra" --help >/dev/null
echo "$VENV/bin/migra"
