# Apache Airflow 3.3 with airflow-provider-shardmigrate installed from this repository
# (used by docker-compose.airflow.yml; build: docker build -t airflow-provider-shardmigrate:local .).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

ARG AIRFLOW_VERSION=3.3.2
# The extras of the shard databases the compose file defines (PostgreSQL, MySQL, and SQL Server and MongoDB behind
# profiles). Add sqlite for SQLite shard files, or build with --build-arg SHARDMIGRATE_EXTRAS=all for every family.
ARG SHARDMIGRATE_EXTRAS=postgres,mysql,mssql,mongo
# Only what the wheel build needs (see .dockerignore): no tests, no virtualenv, no caches.
COPY --chown=airflow:0 pyproject.toml README.md /opt/shardmigrate/
COPY --chown=airflow:0 airflow_provider_shardmigrate /opt/shardmigrate/airflow_provider_shardmigrate

# Pinning apache-airflow to the image's version keeps pip from up- or downgrading Airflow itself (the image's
# documented way to add packages). The compose file runs the CeleryExecutor, whose provider and celery come with
# the image (the provider does not depend on them); celery 5.7 breaks the Celery provider, hence the bound.
# The FAB provider backs the compose file's auth manager (FabAuthManager, users created by airflow-init).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" apache-airflow-providers-fab \
        "celery>=5.5,<5.7" "/opt/shardmigrate[${SHARDMIGRATE_EXTRAS}]" \
    && python -c "import airflow_provider_shardmigrate, airflow.providers.postgres, airflow.providers.mysql, airflow.providers.microsoft.mssql, airflow.providers.mongo, airflow.providers.celery, airflow.providers.fab"
