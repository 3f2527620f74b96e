# Apache Airflow 3.3 with airflow-provider-shardmigrate installed from this repository
# (used by docker-compose.airflow.yml; build: docker build -t airflow-provider-shardmigrate:local .).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

ARG AIRFLOW_VERSION=3.3.2
# Only what the wheel build needs (see .dockerignore): no tests, no virtualenv, no caches.
COPY --chown=airflow:0 pyproject.toml README.md /opt/shardmigrate/
COPY --chown=airflow:0 airflow_provider_shardmigrate /opt/shardmigrate/airflow_provider_shardmigrate

# Pinning apache-airflow to the image's version keeps pip from up- or downgrading Airflow itself (the
# image's documented way to add packages). The project pins celery < 5.7 (5.7 breaks the Celery provider).
# The FAB provider backs the compose file's auth manager (FabAuthManager, users created by airflow-init).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" apache-airflow-providers-fab /opt/shardmigrate \
    && python -c "import airflow_provider_shardmigrate, airflow.providers.celery, airflow.providers.fab"
