"""The Airflow plugin: HTTP endpoints for rollout progress and fleet health, served by the api-server."""
