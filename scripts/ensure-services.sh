#!/usr/bin/env bash
# Make sure the local PostgreSQL, MariaDB and Redis servers the tests use are up; start them when they are not.
set -uo pipefail
wait_for() { # name, check command
  for _ in $(seq 1 60); do eval "$2" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "$1 did not come up" >&2; return 1
}
if command -v pg_isready >/dev/null; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_for PostgreSQL "pg_isready -h 127.0.0.1 -p 5432 -q" || exit 1
  fi
else
  echo "warning: PostgreSQL is not installed here; PostgreSQL tests will fail and say so" >&2
fi
if command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; then
  if ! mysqladmin -h 127.0.0.1 -P 3306 -uroot status >/dev/null 2>&1; then
    echo "starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    wait_for MariaDB "mysqladmin -h 127.0.0.1 -P 3306 -uroot status" || exit 1
  fi
else
  echo "warning: MariaDB is not installed here; MariaDB tests will fail and say so" >&2
fi
if command -v redis-server >/dev/null; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    wait_for Redis "redis-cli -h 127.0.0.1 -p 6379 ping" || exit 1
  fi
else
  echo "warning: Redis is not installed here; the end-to-end tests (Celery broker) will fail and say so" >&2
fi
exit 0
